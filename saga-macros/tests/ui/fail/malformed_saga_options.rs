use saga::prelude::*;

pub struct Hold;

// The input type without `input =`: one error, at the type.
#[saga(u32)]
impl Hold {
    #[step(pivot)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
}

pub struct Capture;

#[saga(Vec<u8>, deadline = "30s")]
impl Capture {
    #[step(pivot)]
    async fn capture(&self, input: &Vec<u8>) -> Result<usize, StepError> {
        Ok(input.len())
    }
}

pub struct Refund;

// Types and names written as strings.
#[saga(input = "u32", outputs = "RefundOut")]
impl Refund {
    #[step(pivot)]
    async fn refund(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
}

fn main() {}
