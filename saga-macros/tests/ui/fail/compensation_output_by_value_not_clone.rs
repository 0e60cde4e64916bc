use saga::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct HoldId(u64);

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<HoldId, StepError> {
        Ok(HoldId(u64::from(*input)))
    }
    async fn release(&self, hold: HoldId) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &HoldId) -> Result<u64, StepError> {
        Ok(hold.0)
    }
}

fn main() {}
