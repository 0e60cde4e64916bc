//! A typo in a step's output type is reported where it is written, and only
//! there: not again at the parameters that receive that output, which are
//! spelled correctly.

use saga::prelude::*;

pub struct HoldId(u32);

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<HoldID, StepError> {
        Ok(HoldId(*input))
    }
    async fn release(&self, hold: HoldId) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &HoldId) -> Result<u32, StepError> {
        Ok(hold.0)
    }
}

fn main() {}
