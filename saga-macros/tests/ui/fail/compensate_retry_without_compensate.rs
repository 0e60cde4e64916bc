use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(readonly, compensate_retry(attempts = 3))]
    async fn lookup(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }

    #[step(pivot)]
    async fn capture(&self, lookup: &u32) -> Result<u32, StepError> {
        Ok(*lookup)
    }
}

fn main() {}
