//! A step error that is not `Send + Sync` is reported once, at the error
//! type in the step's signature.

use std::rc::Rc;

use saga::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("ledger unavailable (attempt {attempt})")]
pub struct LedgerError {
    pub attempt: Rc<u32>,
}

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<u32, LedgerError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {}
