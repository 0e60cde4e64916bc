use saga::prelude::*;

pub struct Transfer;

#[saga(input = String)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold<'a>(&'a self, input: &'a str) -> Result<u32, StepError> {
        Ok(input.len() as u32)
    }
    async fn release<'a, 'b>(&'a self, hold: &'b u32, input: &'a String) -> Result<(), StepError> {
        let _ = (hold, input);
        Ok(())
    }

    #[step(pivot)]
    async fn capture<'a>(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {}
