use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    // A fixed delay of zero is allowed: it retries at once, like `none`.
    #[step(
        compensate = release,
        retry(backoff = exponential("0ms", "10s")),
        compensate_retry(backoff = fixed("0ms"))
    )]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(compensate = reverse, compensate_retry(backoff = exponential("0s", "1s")))]
    async fn credit(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
    async fn reverse(&self, credit: u32) -> Result<(), StepError> {
        let _ = credit;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, credit: &u32) -> Result<u32, StepError> {
        Ok(*credit)
    }
}

fn main() {}
