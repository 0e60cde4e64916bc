use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
}

fn main() {
    let _ = Transfer.hold(&1);
}
