//! Compile-time checked compensating transactions (sagas) for async Rust.
//!
//! Write each step of a multi-service operation as an `async fn`, pair it with
//! the compensation that undoes it, and `#[saga]` turns the impl into a typed
//! executor: steps run in dependency order with retries and timeouts, and if
//! one fails for good, every completed step is undone in reverse order.
//!
//! ```
//! use saga::prelude::*;
//! use std::sync::Arc;
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("bank unavailable")]
//! pub struct BankError;
//!
//! pub struct Transfer;
//!
//! #[saga(input = u64)]
//! impl Transfer {
//!     /// Reserve the money at the payer's bank.
//!     #[step(compensate = release, retry(attempts = 3, backoff = fixed("10ms")))]
//!     async fn hold(&self, input: &u64, cx: &StepContext) -> Result<String, BankError> {
//!         Ok(format!("hold-{input}-{}", cx.idempotency_key()))
//!     }
//!     async fn release(&self, hold: &String) -> Result<(), BankError> {
//!         println!("released {hold}");
//!         Ok(())
//!     }
//!
//!     /// The point of no return.
//!     #[step(pivot)]
//!     async fn capture(&self, hold: &String) -> Result<u64, BankError> {
//!         Ok(hold.len() as u64)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), saga::Error> {
//! let runtime = Runtime::builder().build().await?;
//! let transfers = runtime.register(Arc::new(Transfer));
//! match transfers.start(100).await?.outcome().await? {
//!     Outcome::Completed(outputs) => assert!(outputs.hold.starts_with("hold-100-")),
//!     Outcome::Compensated(report) => println!("undone: {report}"),
//!     Outcome::Stuck(report) => eprintln!("needs a person: {report}"),
//! }
//! # Ok(()) }
//! ```
//!
//! See the README for the concepts: steps, compensations, the pivot, retries
//! and what "stuck" means.
#![doc(test(attr(deny(warnings))))]

pub use saga_macros::{saga, step};
pub use saga_runtime::*;

/// Everything a saga author needs: `use saga::prelude::*;`.
pub mod prelude {
    pub use saga_macros::{saga, step};
    #[cfg(feature = "postgres")]
    pub use saga_runtime::store::PostgresStore;
    pub use saga_runtime::store::{MemoryStore, SqliteStore};
    pub use saga_runtime::{
        Backoff, Classify, IdempotencyKey, Outcome, Registered, RetryPolicy, Runtime, Saga, SagaId,
        SagaOptions, StepContext, StepError, permanent, retryable,
    };
}

/// Support for generated code; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use saga_runtime::__private::*;
}
