use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn input(&self) -> Result<u32, StepError> {
        Ok(1)
    }
    async fn release(&self, input: u32) -> Result<(), StepError> {
        let _ = input;
        Ok(())
    }

    #[step(pivot)]
    async fn cx(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
}

fn main() {}
