use saga::prelude::*;

#[saga(input = u32)]
async fn transfer(input: u32) -> Result<u32, StepError> {
    Ok(input)
}

fn main() {
    let _ = transfer(1);
}
