use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32, outputs = Transfer, name = "  ")]
impl Transfer {
    #[step(pivot)]
    async fn capture(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
}

fn main() {
    let _ = Transfer.capture(&1);
}
