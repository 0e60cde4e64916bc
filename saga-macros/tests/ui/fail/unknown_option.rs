use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32, version = 2)]
impl Transfer {
    #[step(compensation = release)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot, retry(attempts = 3, delay = "1s"))]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {}
