//! A macro inside a `#[saga]` impl that has steps of its own may write
//! helpers: they are expanded after `#[saga]`, like any other item.

use saga::prelude::*;

pub struct Transfer;

macro_rules! fee {
    ($name:ident = $value:expr) => {
        const $name: u32 = $value;

        fn fee(&self) -> u32 {
            Self::$name
        }
    };
}

#[saga(input = u32)]
impl Transfer {
    fee!(FEE = 2);

    #[step(pivot)]
    async fn capture(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input + self.fee())
    }
}

fn main() {
    assert_eq!(Transfer::definition().steps().len(), 1);
    assert_eq!(Transfer.fee(), Transfer::FEE);
}
