//! Helpers shared by the behaviour tests: a call log that sagas write to, an
//! error type for steps to fail with, runtimes in memory and on a log, and
//! a first process that crashes.
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

/// The first process: runs saga `saga` with `input` and `options` on a
/// store that crashes before record `point` is durable, until it does.
/// Returns the log as the crash left it, and the saga's id.
pub async fn crashed_before<S: Saga>(
    saga: Arc<S>,
    input: S::Input,
    options: saga::SagaOptions,
    point: u64,
) -> (saga::store::MemoryStore, saga::SagaId) {
    use saga::testing::{CrashPoint, CrashingStore};
    let durable = saga::store::MemoryStore::new();
    let crashing = CrashingStore::new(durable.clone(), CrashPoint::BeforeDurable(point));
    let handle = logging_to(crashing.clone())
        .await
        .register(saga)
        .start_with(input, options)
        .await
        .expect("started");
    let id = handle.id();
    tokio::select! {
        () = crashing.wait_for_crash() => {}
        _ = handle.outcome() => panic!("the run should have crashed"),
    }
    (durable, id)
}

/// The next process: a runtime on `log` with `saga` registered.
pub async fn restarted<S: Saga>(log: &saga::store::MemoryStore, saga: Arc<S>) -> Runtime {
    let runtime = logging_to(log.clone()).await;
    runtime.register(saga);
    runtime
}

/// A runtime that logs to `store`, with no saga registered yet.
pub async fn logging_to(store: impl saga::store::Store) -> Runtime {
    Runtime::builder()
        .store(store)
        .build()
        .await
        .expect("a runtime")
}
