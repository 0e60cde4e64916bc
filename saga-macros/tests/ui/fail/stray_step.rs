use saga::prelude::*;

pub struct Transfer;

impl Transfer {
    #[step(pivot)]
    async fn capture(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
}

#[step]
async fn free_standing() {}

fn main() {
    let _ = Transfer.capture(&1);
    let _ = free_standing();
}
