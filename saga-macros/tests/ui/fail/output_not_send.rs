//! An output that is not `Send + Sync` is reported at its type (the last two
//! errors). Known limitation: rustc also reports it where the generated
//! `Saga` impl requires its state and outputs to be `Send + Sync`, at the
//! attribute, because those bounds are on the `Saga` trait itself.

use std::marker::PhantomData;

use saga::prelude::*;
use serde::{Deserialize, Serialize};

/// Serializable, but tied to the thread that made it.
#[derive(Serialize, Deserialize)]
pub struct Session {
    pub id: u64,
    #[serde(skip)]
    pub thread: PhantomData<*const ()>,
}

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(pivot)]
    async fn open(&self, input: &u32) -> Result<Session, StepError> {
        Ok(Session {
            id: u64::from(*input),
            thread: PhantomData,
        })
    }
}

fn main() {}
