use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32, timeout = "30s")]
impl Transfer {
    #[step(compensate = release, attempts = 3, backoff = fixed("1s"))]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(compensate = reverse, retry(attempts = 2), jitter = 0.5)]
    async fn credit(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
    async fn reverse(&self, credit: u32) -> Result<(), StepError> {
        let _ = credit;
        Ok(())
    }

    // `timeout` is an option of `#[step]` itself (per attempt): no error.
    #[step(pivot, timeout = "2s", retry_compensate(attempts = 3))]
    async fn capture(&self, credit: &u32) -> Result<u32, StepError> {
        Ok(*credit)
    }
}

fn main() {}
