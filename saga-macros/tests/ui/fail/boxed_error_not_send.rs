//! A boxed error must be `Box<dyn Error + Send + Sync>`: one that is not
//! thread-safe is reported at the error type in the signature.

use std::error::Error;

use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<u32, Box<dyn Error>> {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), Box<dyn Error + Send>> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {}
