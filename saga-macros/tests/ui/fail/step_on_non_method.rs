use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step]
    const LIMIT: u32 = 10;

    #[step(pivot)]
    async fn capture(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input + Self::LIMIT)
    }
}

fn main() {}
