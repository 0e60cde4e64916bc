//! The write-ahead rules: a step's side effects depend only on what is
//! durable. Steps and compensations here read the log while they run, over a
//! store that takes a while to make records durable, so a runtime that did
//! not wait would be caught.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga::log::{Entry, Record};
use saga::prelude::*;
use saga::store::{BoxFuture, ListFilter, MemoryStore, SagaSummary, Store, StoreError, StoredSaga};
use saga::{Faults, SagaId};

/// A store whose appends become durable only after a pause. Like every
/// store, it orders appends by call: one not waited for is made durable by
/// the next one that is.
#[derive(Clone)]
struct SlowStore(MemoryStore, Arc<Mutex<Vec<Vec<Record>>>>);

impl Store for SlowStore {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.1.lock().unwrap().push(records);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let queued: Vec<Vec<Record>> = self.1.lock().unwrap().drain(..).collect();
            for records in queued {
                self.0.append(records).await?;
            }
            Ok(())
        })
    }
    fn load(&self, id: SagaId) -> BoxFuture<'_, Result<Option<StoredSaga>, StoreError>> {
        self.0.load(id)
    }
    fn unfinished_page(
        &self,
        after: Option<SagaId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>> {
        self.0.unfinished_page(after, limit)
    }
    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        self.0.list(filter)
    }
    fn prune(&self, before_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.0.prune(before_ms)
    }
}

/// Records what each step and compensation found durable when it ran.
pub struct Observer {
    store: MemoryStore,
    seen: Mutex<Vec<(&'static str, Vec<Entry>)>>,
}

impl Observer {
    async fn look(&self, who: &'static str, id: SagaId) {
        let log = self.store.load(id).await.unwrap();
        let entries = log
            .map(|l| l.records.iter().map(|r| r.decode().unwrap()).collect())
            .unwrap_or_default();
        self.seen.lock().unwrap().push((who, entries));
    }

    fn seen_by(&self, who: &str) -> Vec<Entry> {
        let seen = self.seen.lock().unwrap();
        let found = seen.iter().find(|(w, _)| *w == who);
        found
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("`{who}` never ran"))
    }
}

#[saga(input = String)]
impl Observer {
    #[step(compensate = undo_first)]
    async fn first(&self, cx: &StepContext) -> Result<u32, StepError> {
        self.look("first", cx.saga_id()).await;
        Ok(7)
    }
    async fn undo_first(&self, first: &u32, cx: &StepContext) -> Result<(), StepError> {
        assert_eq!(*first, 7);
        self.look("undo_first", cx.saga_id()).await;
        Ok(())
    }

    #[step(pivot)]
    async fn second(&self, first: &u32, cx: &StepContext) -> Result<u32, StepError> {
        self.look("second", cx.saga_id()).await;
        Ok(first + 1)
    }
}

async fn run(faults: Faults) -> Arc<Observer> {
    let store = MemoryStore::new();
    let observer = Arc::new(Observer {
        store: store.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let runtime = Runtime::builder()
        .store(SlowStore(store, Arc::new(Mutex::new(Vec::new()))))
        .build()
        .await
        .unwrap();
    runtime.register(Arc::clone(&observer));
    let options = SagaOptions::new().faults(faults);
    let handle = runtime
        .start_with::<Observer>("in".to_string(), options)
        .await
        .unwrap();
    let _ = handle.outcome().await.unwrap();
    observer
}

#[tokio::test]
async fn the_input_is_durable_before_the_first_step_runs() {
    let observer = run(Faults::new()).await;
    match observer.seen_by("first").first() {
        Some(Entry::Created { input, saga, .. }) => {
            assert_eq!(saga, "Observer");
            assert_eq!(input, &serde_json::json!("in"));
        }
        other => panic!("the first step saw {other:?}"),
    }
}

#[tokio::test]
async fn an_output_is_durable_before_a_dependent_step_uses_it() {
    let observer = run(Faults::new()).await;
    let seen = observer.seen_by("second");
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Entry::StepSucceeded { step, output, .. } if step == "first" && *output == serde_json::json!(7)
        )),
        "`second` ran before `first`'s output was durable: {seen:?}"
    );
}

#[tokio::test]
async fn the_rollback_decision_and_the_output_are_durable_before_a_compensation_runs() {
    let observer = run(Faults::new().fail_step_permanently("second")).await;
    let seen = observer.seen_by("undo_first");
    assert!(
        seen.iter()
            .any(|e| matches!(e, Entry::StepSucceeded { step, .. } if step == "first")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, Entry::RollbackStarted { .. })),
        "the compensation ran before the decision to roll back was durable: {seen:?}"
    );
}
