use std::rc::Rc;

use saga::prelude::*;

pub struct Transfer;

async fn tick() {}

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        let shared = Rc::new(*input);
        tick().await;
        Ok(*shared)
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
