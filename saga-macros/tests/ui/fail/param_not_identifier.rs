use saga::prelude::*;

pub struct Transfer;

#[saga(input = (u32, u32))]
impl Transfer {
    #[step(pivot)]
    async fn hold(&self, (from, to): &(u32, u32)) -> Result<u32, StepError> {
        Ok(from + to)
    }

    #[step]
    async fn notify(&self, _: &u32) -> Result<(), StepError> {
        Ok(())
    }
}

fn main() {}
