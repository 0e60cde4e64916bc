use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = undo)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }

    #[step(compensate = undo)]
    async fn credit(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }

    async fn undo(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32, credit: &u32) -> Result<u32, StepError> {
        Ok(hold + credit)
    }
}

fn main() {}
