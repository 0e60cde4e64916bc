use saga::prelude::*;

#[derive(Debug)]
pub struct LedgerError;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<u32, LedgerError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), String> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {}
