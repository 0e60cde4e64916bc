//! Helpers shared by the behaviour tests: a call log that sagas write to, an
//! error type for steps to fail with, and a runtime with one saga registered.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use saga::{Runtime, Saga};

/// What a saga's steps and compensations did, in the order they did it.
#[derive(Debug, Default)]
pub struct Calls(Mutex<Vec<String>>);

impl Calls {
    /// Records one call.
    pub fn push(&self, call: impl Into<String>) {
        self.0.lock().unwrap().push(call.into());
    }

    /// Every call so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// How many times `call` was recorded.
    pub fn count(&self, call: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|c| *c == call).count()
    }
}

/// A step error carrying a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Boom(pub &'static str);

/// An in-memory runtime with `saga` registered.
pub async fn runtime_with<S: Saga>(saga: &Arc<S>) -> Runtime {
    let runtime = Runtime::builder()
        .build()
        .await
        .expect("an in-memory runtime");
    runtime.register(Arc::clone(saga));
    runtime
}

/// Awaits `future` (a saga's outcome), failing the test if it takes more
/// than a day: on tokio's paused clock that is instant, so a saga that
/// would retry forever fails the test instead of hanging it.
pub async fn within_a_day<F: std::future::Future>(future: F) -> F::Output {
    match tokio::time::timeout(std::time::Duration::from_secs(24 * 3600), future).await {
        Ok(output) => output,
        Err(_) => panic!("the saga did not end within a day"),
    }
}
