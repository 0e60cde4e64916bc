use saga::prelude::*;

pub struct Ledger;

pub struct Transfer<'a> {
    ledger: &'a Ledger,
}

#[saga(input = u32)]
impl Transfer<'_> {
    #[step(pivot)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        let _ = self.ledger;
        Ok(*input)
    }
}

pub struct Refund<'a> {
    ledger: &'a Ledger,
}

#[saga(input = u32)]
impl<'a> Refund<'a> {
    #[step(pivot)]
    async fn credit(&self, input: &u32) -> Result<u32, StepError> {
        let _ = self.ledger;
        Ok(*input)
    }
}

fn main() {}
