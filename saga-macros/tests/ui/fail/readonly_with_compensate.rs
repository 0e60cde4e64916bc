use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(readonly, compensate = forget)]
    async fn lookup(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn forget(&self, lookup: u32) -> Result<(), StepError> {
        let _ = lookup;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, lookup: &u32) -> Result<u32, StepError> {
        Ok(*lookup)
    }
}

fn main() {}
