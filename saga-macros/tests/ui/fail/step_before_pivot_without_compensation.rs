use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {}
