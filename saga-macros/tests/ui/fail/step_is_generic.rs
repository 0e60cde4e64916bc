use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(pivot)]
    async fn capture<T: Default>(&self, input: &u32) -> Result<u32, StepError> {
        let _ = T::default();
        Ok(*input)
    }
}

fn main() {}
