use saga::prelude::*;

pub struct Transfer;

macro_rules! pivot_step {
    ($name:ident) => {
        #[step(pivot)]
        async fn $name(&self, input: &u32) -> Result<u32, StepError> {
            Ok(*input)
        }
    };
}

// `#[saga]` reads the impl before `pivot_step!` is expanded.
#[saga(input = u32)]
impl Transfer {
    pivot_step!(capture);
}

fn main() {}
