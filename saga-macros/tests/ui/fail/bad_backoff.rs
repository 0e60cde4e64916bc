use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release, retry(backoff = exponential("10s", "1s")))]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(compensate = reverse, retry(backoff = linear("1s"), jitter = 2.0))]
    async fn credit(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
    async fn reverse(&self, credit: u32) -> Result<(), StepError> {
        let _ = credit;
        Ok(())
    }

    #[step(pivot, retry(backoff = fixed("1s", "2s")), timeout = "0s")]
    async fn capture(&self, credit: &u32) -> Result<u32, StepError> {
        Ok(*credit)
    }
}

fn main() {}
