//! The runtime of [`saga`](https://docs.rs/saga): the executor that runs what
//! `#[saga]` generates, retry policies, outcomes and events.
//!
//! Users depend on the `saga` facade crate, which re-exports everything here
//! together with the macros. See its documentation for the guided tour.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod context;
mod definition;
mod error;
mod event;
mod executor;
pub mod inspect;
mod live;
pub mod log;
mod options;
mod outcome;
mod recovery;
mod retry;
mod runtime;
mod saga;
pub mod store;
pub mod testing;

#[doc(hidden)]
pub mod __private;

pub use crate::context::{IdempotencyKey, Phase, SagaId, StepContext};
pub use crate::definition::{Definition, StepDef, StepKind};
pub use crate::error::{Classify, Error, StepError, permanent, retryable};
pub use crate::event::{Event, EventKind, Listener};
pub use crate::options::{Faults, InjectedFault, SagaOptions};
pub use crate::outcome::{Cause, Failure, Outcome, Report};
pub use crate::retry::{Backoff, RetryPolicy};
pub use crate::runtime::{
    Builder, Canceller, Ended, RecoveryReport, Registered, Runtime, SagaHandle,
};
pub use crate::saga::Saga;
