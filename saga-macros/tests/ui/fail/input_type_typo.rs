//! A typo in the saga's input type is reported where it is written, and
//! only there: not again at the `input` parameters, which are spelled
//! correctly.

use saga::prelude::*;

pub struct Request(u32);

pub struct Transfer;

#[saga(input = Requset)]
impl Transfer {
    #[step(pivot)]
    async fn capture(&self, input: &Request) -> Result<u32, StepError> {
        Ok(input.0)
    }
}

fn main() {}
