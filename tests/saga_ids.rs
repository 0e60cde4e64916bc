//! A caller's own saga id (`SagaOptions::id`, e.g. derived from a request)
//! starts one saga: a second start under it, while the first runs or after
//! it ended, is refused as `Error::AlreadyStarted`, and nothing is written.

mod support;

use std::sync::Arc;

use saga::prelude::*;
use saga::store::Store;
use saga::{Error, SagaId};
use tokio::sync::Notify;

/// A saga whose one step waits until it is let go.
pub struct Gated {
    gate: Notify,
}

#[saga(input = u32)]
impl Gated {
    #[step(pivot)]
    async fn pass(&self, input: &u32) -> Result<u32, StepError> {
        self.gate.notified().await;
        Ok(*input)
    }
}

#[tokio::test]
async fn a_second_start_under_one_id_is_refused_while_it_runs_and_after() {
    let store = MemoryStore::new();
    let runtime = support::logging_to(store.clone()).await;
    let saga = Arc::new(Gated {
        gate: Notify::new(),
    });
    let gated = runtime.register(Arc::clone(&saga));
    let id = SagaId::new();
    let first = gated
        .start_with(1, SagaOptions::new().id(id))
        .await
        .unwrap();

    // While the first runs here.
    match gated.start_with(2, SagaOptions::new().id(id)).await {
        Err(Error::AlreadyStarted { id: refused }) => assert_eq!(refused, id),
        other => panic!("expected AlreadyStarted, got {:?}", other.map(|h| h.id())),
    }

    saga.gate.notify_one();
    assert!(first.outcome().await.unwrap().is_completed());

    // After it ended: its log is there.
    let again = gated.run_with(3, SagaOptions::new().id(id)).await;
    let message = match again {
        Err(Error::AlreadyStarted { id: refused }) => {
            assert_eq!(refused, id);
            Error::AlreadyStarted { id }.to_string()
        }
        other => panic!("expected AlreadyStarted, got {other:?}"),
    };
    assert!(message.contains("SagaOptions::id"), "{message}");

    // Neither refused start wrote anything: the log is the first run's.
    let log = store.load(id).await.unwrap().expect("the first run's log");
    let input = log
        .records
        .first()
        .map(|r| r.body.clone())
        .unwrap_or_default();
    assert!(input.contains("\"input\":1"), "{input}");
}
