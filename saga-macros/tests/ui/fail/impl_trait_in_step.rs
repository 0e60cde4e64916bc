use std::fmt::Debug;

use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    // Parameters must name the type they receive.
    #[step(compensate = release)]
    async fn hold(&self, input: &impl Debug) -> Result<u32, StepError> {
        let _ = input;
        Ok(1)
    }
    async fn release(&self, hold: impl Debug) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    // An output is stored in the log and is a field of `TransferOutputs`.
    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Result<Vec<impl serde::Serialize>, StepError> {
        Ok(vec![*hold])
    }
}

fn main() {
    // The saga still exists beside the errors.
    let _ = Transfer::definition();
}
