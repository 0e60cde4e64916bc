use saga::prelude::*;

pub struct Transfer {
    count: u32,
}

#[saga(input = u32)]
impl Transfer {
    #[step(pivot)]
    async fn hold(&mut self, input: &u32) -> Result<u32, StepError> {
        self.count += 1;
        Ok(*input)
    }
}

fn main() {}
