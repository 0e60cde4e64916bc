//! Several mistakes in one impl: each is reported, nothing else is, and the
//! impl's methods still exist for the rest of the crate.

use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release, timeout = "soon")]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step]
    async fn credit(&self, hold: &u32, amount: &u32) -> Result<u32, StepError> {
        Ok(hold + amount)
    }

    #[step(pivot, retries = 3)]
    fn capture(&mut self, credit: &u32) -> Result<u32, StepError> {
        Ok(*credit)
    }
}

fn main() {
    let transfer = Transfer;
    let _ = transfer.hold(&1);
    let _ = transfer.release(1);
    let _ = transfer.credit(&1, &2);
    let _ = Transfer::definition().name();
}
