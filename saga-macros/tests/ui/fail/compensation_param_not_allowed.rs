use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(compensate = reverse)]
    async fn credit(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    /// `credit` does not depend on `hold`, and `capture` runs later.
    async fn reverse(&self, credit: u32, hold: &u32, capture: &u32) -> Result<(), StepError> {
        let _ = (credit, hold, capture);
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32, credit: &u32) -> Result<u32, StepError> {
        Ok(hold + credit)
    }
}

fn main() {}
