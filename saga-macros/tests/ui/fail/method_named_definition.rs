use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(pivot)]
    async fn capture(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }

    pub fn definition(&self) -> &'static str {
        "a transfer"
    }
}

fn main() {
    let _ = Transfer.definition();
}
