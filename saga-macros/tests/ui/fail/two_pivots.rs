use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(pivot)]
    async fn capture(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }

    #[step(pivot)]
    async fn settle(&self, capture: &u32) -> Result<u32, StepError> {
        Ok(*capture)
    }
}

fn main() {}
