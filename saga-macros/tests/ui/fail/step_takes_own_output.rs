use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(pivot)]
    async fn capture(&self, capture: &u32) -> Result<u32, StepError> {
        Ok(*capture)
    }
}

fn main() {}
