use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(pivot, compensate = refund)]
    async fn capture(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn refund(&self, capture: u32) -> Result<(), StepError> {
        let _ = capture;
        Ok(())
    }
}

fn main() {}
