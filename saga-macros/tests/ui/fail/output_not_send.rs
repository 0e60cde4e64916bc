//! An output that is not `Send + Sync` is reported once, at its type, and
//! not again where the generated `Saga` impl holds it (its state, its
//! outputs, its futures), though the `Saga` trait requires those to be
//! `Send + Sync`.

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
