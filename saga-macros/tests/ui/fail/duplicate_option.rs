use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32, input = u64)]
impl Transfer {
    #[step(compensate = release, timeout = "1s", timeout = "2s")]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot, pivot, retry(attempts = 2, attempts = 3))]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }

    #[step(timeout = "1s", retry(timeout = "2s"))]
    async fn notify(&self, capture: &u32) -> Result<u32, StepError> {
        Ok(*capture)
    }

    #[step]
    #[step(readonly)]
    async fn audit(&self, notify: &u32) -> Result<u32, StepError> {
        Ok(*notify)
    }
}

fn main() {}
