use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release, retry = 3)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot = true)]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }

    #[step(compensate = "undo")]
    async fn notify(&self, capture: &u32) -> Result<u32, StepError> {
        Ok(*capture)
    }

    #[step = "readonly"]
    async fn audit(&self, notify: &u32) -> Result<u32, StepError> {
        Ok(*notify)
    }
}

fn main() {}
