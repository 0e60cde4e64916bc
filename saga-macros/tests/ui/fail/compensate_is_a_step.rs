use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = capture)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }
}

fn main() {}
