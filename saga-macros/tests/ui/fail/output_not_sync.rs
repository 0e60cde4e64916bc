//! A step output that is `Send` but not `Sync` (`Cell`) is reported once, at
//! the output type: outputs are shared by reference between steps that may
//! run on other threads.

use std::cell::Cell;

use saga::prelude::*;

pub struct Counter;

#[saga(input = u64)]
impl Counter {
    #[step(compensate = uncount)]
    async fn count(&self, input: &u64) -> Result<Cell<u64>, StepError> {
        Ok(Cell::new(*input))
    }
    async fn uncount(&self, count: &Cell<u64>) -> Result<(), StepError> {
        count.set(0);
        Ok(())
    }

    #[step(pivot)]
    async fn report(&self, count: &Cell<u64>) -> Result<u64, StepError> {
        Ok(count.get())
    }
}

fn main() {}
