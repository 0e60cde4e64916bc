//! A saga input that is not `Send + Sync` is reported once, at the input
//! type in `#[saga(input = ..)]`.

use std::marker::PhantomData;

use saga::prelude::*;
use serde::{Deserialize, Serialize};

/// Serializable, but tied to the thread that made it.
#[derive(Serialize, Deserialize)]
pub struct Request {
    pub amount: u64,
    #[serde(skip)]
    pub thread: PhantomData<*const ()>,
}

pub struct Transfer;

#[saga(input = Request)]
impl Transfer {
    #[step(pivot)]
    async fn capture(&self, input: &Request) -> Result<u64, StepError> {
        Ok(input.amount)
    }
}

fn main() {}
