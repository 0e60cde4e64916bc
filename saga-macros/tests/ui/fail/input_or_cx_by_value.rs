use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(pivot)]
    async fn capture(&self, input: u32, cx: StepContext) -> Result<u32, StepError> {
        let _ = cx;
        Ok(input)
    }
}

fn main() {}
