//! A step output that is not `Send` (`Rc`) is reported once, at the output
//! type, saying to use `Arc`.

use std::rc::Rc;

use saga::prelude::*;

pub struct Counter;

#[saga(input = u64)]
impl Counter {
    #[step(pivot)]
    async fn count(&self, input: &u64) -> Result<Rc<u64>, StepError> {
        Ok(Rc::new(*input))
    }
}

fn main() {}
