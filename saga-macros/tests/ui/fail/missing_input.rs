use saga::prelude::*;

pub struct Transfer;

#[saga(name = "transfer")]
impl Transfer {
    #[step(pivot)]
    async fn hold(&self) -> Result<u32, StepError> {
        Ok(1)
    }
}

fn main() {}
