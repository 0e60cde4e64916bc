use saga::prelude::*;

pub struct Transfer<L> {
    ledger: L,
}

#[saga(input = u32)]
impl<L: Send + Sync + 'static> Transfer<L> {
    #[step(pivot)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        let _ = &self.ledger;
        Ok(*input)
    }
}

fn main() {}
