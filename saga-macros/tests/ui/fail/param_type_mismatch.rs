use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: i64) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, input: &u64, hold: &String) -> Result<usize, StepError> {
        Ok(hold.len() + *input as usize)
    }
}

fn main() {}
