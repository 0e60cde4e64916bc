//! A compensation whose future is not `Send` is reported at the
//! compensation's name, with the value held across the await.
use std::rc::Rc;

use saga::prelude::*;

pub struct Transfer;

async fn tick() {}

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let shared = Rc::new(hold);
        tick().await;
        let _ = shared;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {}
