use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32, deadline = "1.5s")]
impl Transfer {
    #[step(compensate = release, timeout = "fast")]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot, retry(backoff = exponential("1s", "10"), timeout = 5))]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {}
