use saga::prelude::*;

pub struct Request {
    pub amount: u32,
}

pub struct Transfer;

#[saga(input = Request)]
impl Transfer {
    #[step(pivot)]
    async fn capture(&self, input: &Request) -> Result<u32, StepError> {
        Ok(input.amount)
    }
}

fn main() {}
