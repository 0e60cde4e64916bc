//! Recovery from a saga log: interrupted steps run again under the same
//! idempotency key, damaged or foreign logs fail alone and stay untouched,
//! stuck sagas wait for an operator.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga::log::Record;
use saga::log::{CauseSnapshot, Entry, SagaState};
use saga::prelude::*;
use saga::store::{
    BoxFuture, ListFilter, MemoryStore, SagaSummary, SqliteStore, Store, StoreError, StoredSaga,
};
use saga::testing::{CrashPoint, CrashingStore};
use saga::{Ended, Error, Faults, RecoveryReport, SagaId};
use tokio::sync::Semaphore;

/// A two-step saga whose second step waits at a gate: closed, the step
/// never finishes (the process "dies" there); open, it goes through.
pub struct Gated {
    gate: Arc<Semaphore>,
    keys: Mutex<Vec<String>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    undone: Mutex<Vec<&'static str>>,
}

impl Gated {
    fn new(open: bool) -> Arc<Gated> {
        let gate = Semaphore::new(0);
        if open {
            gate.close();
        }
        Arc::new(Gated {
            gate: Arc::new(gate),
            keys: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            most_running: AtomicUsize::new(0),
            undone: Mutex::new(Vec::new()),
        })
    }
}

#[saga(input = u32, name = "Gated")]
impl Gated {
    #[step(compensate = unreserve)]
    async fn reserve(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn unreserve(&self) -> Result<(), StepError> {
        self.undone.lock().unwrap().push("reserve");
        Ok(())
    }

    #[step(compensate = uncharge, compensate_retry(attempts = 2))]
    async fn charge(&self, reserve: &u32, cx: &StepContext) -> Result<u32, StepError> {
        self.keys
            .lock()
            .unwrap()
            .push(cx.idempotency_key().to_string());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        // A closed semaphore errors at once: the gate is open.
        let _ = self.gate.acquire().await;
        tokio::task::yield_now().await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(reserve * 2)
    }
    async fn uncharge(&self) -> Result<(), StepError> {
        self.undone.lock().unwrap().push("charge");
        Ok(())
    }

    #[step(pivot)]
    async fn confirm(&self, charge: &u32) -> Result<u32, StepError> {
        Ok(*charge)
    }
}

/// Starts `n` sagas on a runtime whose gate is closed, and waits until each
/// is inside `charge`: the state of a process killed at that moment.
async fn crashed_mid_step(store: impl Store + Clone, n: usize) -> Vec<SagaId> {
    let runtime = Runtime::builder().store(store).build().await.unwrap();
    let saga = Gated::new(false);
    runtime.register(Arc::clone(&saga));
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(runtime.start::<Gated>(i as u32).await.unwrap().id());
    }
    while saga.running.load(Ordering::SeqCst) < n {
        tokio::task::yield_now().await;
    }
    ids
}

/// [`crashed_mid_step`] on a SQLite log, in a process that then dies: on a
/// tokio runtime of its own, shut down once the sagas are inside `charge`.
/// That drops every task of the first runtime, and with them its store,
/// which releases the log (a log belongs to one store at a time), as a
/// killed process's would.
async fn crashed_mid_step_on_sqlite(file: &std::path::Path, n: usize) -> Vec<SagaId> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let process = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = SqliteStore::open(&file).unwrap();
        let ids = process.block_on(crashed_mid_step(store, n));
        drop(process);
        ids
    })
    .await
    .unwrap()
}

/// Whether the log of saga `id` records a rollback for its deadline.
async fn rolled_back_for_its_deadline(store: &MemoryStore, id: SagaId) -> bool {
    let log = store.load(id).await.unwrap().unwrap();
    log.records.iter().any(|r| {
        matches!(
            r.decode(),
            Ok(Entry::RollbackStarted {
                cause: CauseSnapshot::DeadlineExceeded
            })
        )
    })
}

async fn recovering_runtime(store: impl Store, saga: &Arc<Gated>) -> Runtime {
    let runtime = Runtime::builder()
        .store(store)
        .recovery_concurrency(8)
        .build()
        .await
        .unwrap();
    runtime.register(Arc::clone(saga));
    runtime
}

/// The first process: runs a `Gated` saga (gate open) with `options` on a
/// store that crashes at `point`, until it does. Returns the saga's id, that
/// process's services, and the log as the crash left it.
async fn crashed_at(point: CrashPoint, options: SagaOptions) -> (SagaId, Arc<Gated>, MemoryStore) {
    let durable = MemoryStore::new();
    let crashing = CrashingStore::new(durable.clone(), point);
    let runtime = Runtime::builder()
        .store(crashing.clone())
        .build()
        .await
        .unwrap();
    let first = Gated::new(true);
    runtime.register(Arc::clone(&first));
    let handle = runtime.start_with::<Gated>(1, options).await.unwrap();
    let id = handle.id();
    crashing.wait_for_crash().await;
    drop(handle);
    (id, first, durable)
}

/// The next process: recovers `store` with fresh services (gate open).
async fn recover_afresh(store: impl Store) -> (RecoveryReport, Arc<Gated>) {
    let saga = Gated::new(true);
    let report = recovering_runtime(store, &saga)
        .await
        .recover()
        .await
        .unwrap();
    (report, saga)
}

#[tokio::test]
async fn an_interrupted_step_runs_again_with_the_same_key() {
    let store = MemoryStore::new();
    let ids = crashed_mid_step(store.clone(), 1).await;
    let saga = Gated::new(true);
    let runtime = recovering_runtime(store.clone(), &saga).await;
    let report = runtime.recover().await.unwrap();
    assert_eq!((report.completed, report.failed.len()), (1, 0));
    assert_eq!(*saga.keys.lock().unwrap(), [format!("{}/charge", ids[0])]);
    let log = store.load(ids[0]).await.unwrap().unwrap();
    assert_eq!(log.summary.state, SagaState::Completed);
    // The interrupted attempt 1 is run again as attempt 1: it never ended.
    let starts: Vec<Entry> = log
        .records
        .iter()
        .map(|r| r.decode().unwrap())
        .filter(|e| matches!(e, Entry::StepStarted { step, .. } if step == "charge"))
        .collect();
    assert_eq!(starts.len(), 2);
}

#[tokio::test]
async fn recovery_runs_sagas_concurrently_within_the_limit() {
    let store = MemoryStore::new();
    crashed_mid_step(store.clone(), 40).await;
    let saga = Gated::new(true);
    let runtime = recovering_runtime(store.clone(), &saga).await;
    let report = runtime.recover().await.unwrap();
    assert_eq!(report.completed, 40);
    let most = saga.most_running.load(Ordering::SeqCst);
    assert!(
        (2..=8).contains(&most),
        "{most} ran at once with a limit of 8"
    );
    assert!(store.unfinished().await.unwrap().is_empty());
}

#[tokio::test]
async fn recovery_reads_a_large_log_page_by_page() {
    let store = MemoryStore::new();
    // A limit of 8 reads pages of 64 sagas: this log takes three.
    crashed_mid_step(store.clone(), 150).await;
    let saga = Gated::new(true);
    let runtime = recovering_runtime(store.clone(), &saga).await;
    let report = runtime.recover().await.unwrap();
    assert_eq!((report.completed, report.failed.len()), (150, 0));
    assert_eq!(saga.keys.lock().unwrap().len(), 150);
    assert!(store.unfinished().await.unwrap().is_empty());
}

/// Panics on every event of one saga.
struct PanicsOn(SagaId);

impl saga::Listener for PanicsOn {
    fn on_event(&self, event: &saga::Event<'_>) {
        assert_ne!(event.saga_id, self.0, "the listener broke");
    }
}

/// A store whose log cannot be read past its first page (the disk fails,
/// the connection drops), and which counts the sagas let go.
#[derive(Clone)]
struct FirstPageOnly {
    log: MemoryStore,
    pages: Arc<AtomicUsize>,
    released: Arc<Mutex<Vec<SagaId>>>,
}

impl Store for FirstPageOnly {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.log.append(records)
    }
    fn load(&self, id: SagaId) -> BoxFuture<'_, Result<Option<StoredSaga>, StoreError>> {
        self.log.load(id)
    }
    fn unfinished_page(
        &self,
        after: Option<SagaId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>> {
        if self.pages.fetch_add(1, Ordering::SeqCst) == 0 {
            self.log.unfinished_page(after, limit)
        } else {
            Box::pin(async { Err(StoreError::Backend("the disk failed".into())) })
        }
    }
    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        self.log.list(filter)
    }
    fn prune(&self, before_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.log.prune(before_ms)
    }
    fn release(&self, id: SagaId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.released.lock().unwrap().push(id);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_log_that_cannot_be_read_further_fails_recovery_after_the_sagas_resumed_end() {
    let log = MemoryStore::new();
    // A limit of 8 reads pages of 64 sagas: this log takes two.
    crashed_mid_step(log.clone(), 100).await;
    let store = FirstPageOnly {
        log: log.clone(),
        pages: Arc::new(AtomicUsize::new(0)),
        released: Arc::new(Mutex::new(Vec::new())),
    };
    let saga = Gated::new(true);
    let runtime = recovering_runtime(store.clone(), &saga).await;
    let failed = runtime.recover().await.unwrap_err();
    assert!(failed.to_string().contains("the disk failed"), "{failed}");
    // Every saga of the first page was resumed and ran to its end: none
    // was dropped mid-step when reading the next page failed.
    let done = log
        .list(ListFilter::in_state(SagaState::Completed))
        .await
        .unwrap();
    assert_eq!(done.len(), 64);
    assert_eq!(log.unfinished().await.unwrap().len(), 36);
    assert!(store.released.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_panic_while_resuming_one_saga_fails_that_saga_alone() {
    let store = MemoryStore::new();
    let ids = crashed_mid_step(store.clone(), 3).await;
    let saga = Gated::new(true);
    let runtime = Runtime::builder()
        .store(store.clone())
        .listener(PanicsOn(ids[1]))
        .build()
        .await
        .unwrap();
    runtime.register(Arc::clone(&saga));
    let report = runtime.recover().await.unwrap();
    assert_eq!(report.completed, 2, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let (id, error) = &report.failed[0];
    assert_eq!(*id, ids[1]);
    assert!(
        matches!(error, Error::Aborted { reason, .. } if reason.contains("the listener broke")),
        "{error}"
    );
    // Its log is left as it was, for the next recovery.
    let log = store.load(ids[1]).await.unwrap().unwrap();
    assert_eq!(log.summary.state, SagaState::Running);
}

#[tokio::test]
async fn recovery_leaves_alone_the_sagas_this_runtime_is_running() {
    let store = MemoryStore::new();
    let saga = Gated::new(false);
    let runtime = recovering_runtime(store.clone(), &saga).await;
    let handle = runtime.start::<Gated>(7).await.unwrap();
    while saga.running.load(Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    // Its log says `running`, like a crashed saga's; recovery must not
    // start its step a second time (that run would wait at the gate too).
    let recovered = tokio::time::timeout(std::time::Duration::from_secs(5), runtime.recover())
        .await
        .expect("recovery waited for a saga it should have left alone")
        .unwrap();
    assert_eq!((recovered.resumed(), recovered.failed.len()), (0, 0));
    // Nor may an operator resume or mark it.
    let resumed = runtime.resume(handle.id()).await;
    assert!(
        matches!(resumed, Err(Error::NotStuck { .. })),
        "{resumed:?}"
    );
    saga.gate.close();
    assert!(handle.outcome().await.unwrap().is_completed());
    assert_eq!(saga.keys.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_damaged_record_fails_only_its_saga_and_names_it() {
    let store = MemoryStore::new();
    let ids = crashed_mid_step(store.clone(), 3).await;
    assert!(store.overwrite_record(ids[1], 2, "{\"event\":\"step_succ"));
    let (report, _) = recover_afresh(store.clone()).await;
    assert_eq!(report.completed, 2);
    assert_eq!(report.failed.len(), 1);
    let (id, error) = &report.failed[0];
    assert_eq!(*id, ids[1]);
    assert!(
        matches!(error, Error::DamagedRecord { seq: 2, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("saga {}: record 2", ids[1])),
        "{error}"
    );
    let damaged = store.load(ids[1]).await.unwrap().unwrap();
    assert_eq!(damaged.summary.state, SagaState::Running);
}

#[tokio::test]
async fn an_unregistered_saga_is_refused_and_its_log_left_alone() {
    let store = MemoryStore::new();
    let ids = crashed_mid_step(store.clone(), 1).await;
    let before = store.record_count();
    let runtime = Runtime::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let report = runtime.recover().await.unwrap();
    assert_eq!(report.resumed(), 0);
    match &report.failed[..] {
        [(id, Error::UnknownSaga { name, .. })] => {
            assert_eq!((*id, name.as_str()), (ids[0], "Gated"));
        }
        other => panic!("expected an unknown saga, got {other:?}"),
    }
    assert_eq!(store.record_count(), before);
}

/// The same name as `Gated`, with a step less.
pub struct GatedV2;
#[saga(input = u32, name = "Gated")]
impl GatedV2 {
    #[step(pivot)]
    async fn reserve(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
}

#[tokio::test]
async fn a_changed_definition_is_refused_and_its_log_left_alone() {
    let store = MemoryStore::new();
    crashed_mid_step(store.clone(), 1).await;
    let before = store.record_count();
    let runtime = Runtime::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    runtime.register(Arc::new(GatedV2));
    let report = runtime.recover().await.unwrap();
    match &report.failed[..] {
        [(_, e @ Error::DefinitionChanged { name: "Gated", .. })] => {
            assert!(
                e.to_string()
                    .contains("has changed since its log was written"),
                "{e}"
            );
        }
        other => panic!("expected a changed definition, got {other:?}"),
    }
    assert_eq!(store.record_count(), before);
    assert_eq!(store.unfinished().await.unwrap().len(), 1);
}

/// Runs a saga whose `confirm` fails and whose `uncharge` gives up: stuck.
async fn stuck_saga(store: MemoryStore) -> SagaId {
    let runtime = Runtime::builder().store(store).build().await.unwrap();
    runtime.register(Gated::new(true));
    let options = SagaOptions::new().faults(
        Faults::new()
            .fail_step_permanently("confirm")
            .fail_compensation("uncharge", 1..),
    );
    let outcome = runtime.run_with::<Gated>(1, options).await.unwrap();
    assert!(outcome.is_stuck(), "{outcome:?}");
    outcome.report().unwrap().saga_id
}

#[tokio::test]
async fn a_stuck_saga_stays_stuck_through_recovery_until_resumed() {
    let store = MemoryStore::new();
    let id = stuck_saga(store.clone()).await;
    let saga = Gated::new(true);
    let runtime = recovering_runtime(store.clone(), &saga).await;
    let report = runtime.recover().await.unwrap();
    assert_eq!((report.resumed(), report.failed.len()), (0, 0));
    assert_eq!(
        store.load(id).await.unwrap().unwrap().summary.state,
        SagaState::Stuck
    );
    assert!(saga.undone.lock().unwrap().is_empty());

    match runtime.resume(id).await.unwrap() {
        Ended::Compensated(report) => assert_eq!(report.compensated, ["charge", "reserve"]),
        other => panic!("expected compensated, got {other:?}"),
    }
    assert_eq!(*saga.undone.lock().unwrap(), ["charge", "reserve"]);
    assert!(matches!(
        runtime.resume(id).await,
        Err(Error::NotStuck {
            state: "compensated",
            ..
        })
    ));
}

#[tokio::test]
async fn resuming_a_stuck_saga_whose_definition_changed_leaves_it_stuck_and_its_log_alone() {
    let store = MemoryStore::new();
    let id = stuck_saga(store.clone()).await;
    let before = store.record_count();
    let runtime = Runtime::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    runtime.register(Arc::new(GatedV2));
    let refused = runtime.resume(id).await.unwrap_err();
    assert!(
        matches!(refused, Error::DefinitionChanged { name: "Gated", .. }),
        "{refused}"
    );
    assert_eq!(store.record_count(), before);
    let stored = store.load(id).await.unwrap().unwrap();
    assert_eq!(stored.summary.state, SagaState::Stuck);
    // Still stuck, so still the operator's: the right definition resumes it.
    let saga = Gated::new(true);
    let runtime = recovering_runtime(store.clone(), &saga).await;
    let ended = runtime.resume(id).await.unwrap();
    assert!(matches!(ended, Ended::Compensated(_)), "{ended:?}");
}

/// The inspector draws a step whose compensation gave up as `undo_failed`
/// (not `completed`), until a resume compensates it.
#[tokio::test]
async fn the_inspector_shows_a_step_whose_compensation_gave_up_until_resumed() {
    use saga::inspect::{Inspection, StepStatus};
    let store = MemoryStore::new();
    let id = stuck_saga(store.clone()).await;
    let view = Inspection::of(&store.load(id).await.unwrap().unwrap());
    let status = |view: &Inspection, step: &str| {
        view.steps
            .iter()
            .find(|(name, _)| name == step)
            .map(|(_, status)| *status)
    };
    assert_eq!(status(&view, "charge"), Some(StepStatus::UndoFailed));
    assert_eq!(status(&view, "reserve"), Some(StepStatus::Completed));
    assert!(
        view.mermaid().contains("class s1 undo_failed"),
        "{}",
        view.mermaid()
    );

    let saga = Gated::new(true);
    let runtime = recovering_runtime(store.clone(), &saga).await;
    let ended = runtime.resume(id).await.unwrap();
    assert!(matches!(ended, Ended::Compensated(_)), "{ended:?}");
    let view = Inspection::of(&store.load(id).await.unwrap().unwrap());
    assert_eq!(status(&view, "charge"), Some(StepStatus::Compensated));
    assert!(
        !view.mermaid().contains("class s1 undo_failed"),
        "{}",
        view.mermaid()
    );
}

#[tokio::test]
async fn a_step_marked_compensated_by_an_operator_is_skipped_on_resume() {
    let store = MemoryStore::new();
    let id = stuck_saga(store.clone()).await;
    let saga = Gated::new(true);
    let runtime = recovering_runtime(store.clone(), &saga).await;
    let refused = runtime.mark_compensated(id, "confirm").await.unwrap_err();
    assert!(
        refused.to_string().contains("has no compensation"),
        "{refused}"
    );
    let refused = runtime.mark_compensated(id, "nope").await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("no such step (it has: reserve, charge, confirm)"),
        "{refused}"
    );
    // A compensation's name points at its step.
    let refused = runtime
        .mark_compensated(id, "uncharge")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains(
            "`uncharge` is the compensation of step `charge`: mark the step: \
             mark_compensated(id, \"charge\")"
        ),
        "{refused}"
    );
    assert!(!refused.contains("no such step"), "{refused}");

    runtime.mark_compensated(id, "charge").await.unwrap();
    let ended = runtime.resume(id).await.unwrap();
    assert!(matches!(ended, Ended::Compensated(_)), "{ended:?}");
    assert_eq!(*saga.undone.lock().unwrap(), ["reserve"]);
}

#[tokio::test]
async fn operator_actions_need_a_store_and_a_stuck_saga() {
    let runtime = Runtime::builder().build().await.unwrap();
    // Recovery has nothing to do without a store (tests/recovery_startup.rs);
    // resuming a saga needs its log.
    let report = runtime.recover().await.unwrap();
    assert_eq!((report.resumed(), report.failed.len()), (0, 0));
    assert!(matches!(
        runtime.resume(SagaId::new()).await,
        Err(Error::NoStore)
    ));
    let store = MemoryStore::new();
    let runtime = Runtime::builder().store(store).build().await.unwrap();
    let missing = SagaId::new();
    assert!(matches!(
        runtime.resume(missing).await,
        Err(Error::NotFound { id }) if id == missing
    ));
}

#[tokio::test]
async fn a_crash_after_the_rollback_decision_continues_the_rollback() {
    // created, reserve x2, charge x2, confirm started/failed, rollback: 7
    // records (0..=7), then uncharge starts; crash right after record 8.
    let (id, _, durable) = crashed_at(
        CrashPoint::AfterDurable(8),
        SagaOptions::new().faults(Faults::new().fail_step_permanently("confirm")),
    )
    .await;

    let (report, saga) = recover_afresh(durable.clone()).await;
    assert_eq!(report.compensated, 1);
    assert_eq!(*saga.undone.lock().unwrap(), ["charge", "reserve"]);
    let log = durable.load(id).await.unwrap().unwrap();
    let rollbacks = log
        .records
        .iter()
        .filter(|r| matches!(r.decode(), Ok(Entry::RollbackStarted { .. })))
        .count();
    assert_eq!(rollbacks, 1, "the decision is not taken twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_logs_survive_the_runtime_and_recover() {
    let dir = std::env::temp_dir().join(format!("saga-recovery-{}", SagaId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sagas.db");
    let ids = crashed_mid_step_on_sqlite(&file, 5).await;

    let store = SqliteStore::open(&file).unwrap();
    let (report, _) = recover_afresh(store.clone()).await;
    assert_eq!((report.completed, report.failed.len()), (5, 0));
    let done = store
        .list(ListFilter::in_state(SagaState::Completed))
        .await
        .unwrap();
    let mut done: Vec<SagaId> = done.into_iter().map(|s| s.id).collect();
    let mut expected = ids;
    done.sort();
    expected.sort();
    assert_eq!(done, expected);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The deadline is fixed when the saga is created: one that passed while
/// the process was down rolls the saga back when it is recovered, instead
/// of giving it its whole deadline again (or, set for the run, none).
/// `charge`, the step after the crash, runs once more first: recovery
/// cannot tell that it never started (runs do not wait for start records).
#[tokio::test]
async fn a_deadline_that_passed_while_down_rolls_the_recovered_saga_back() {
    // created, reserve started and succeeded (0..=2): the process dies
    // once `reserve`'s output is durable, before `charge` starts.
    let (id, first, durable) = crashed_at(
        CrashPoint::AfterDurable(2),
        SagaOptions::new().deadline(Duration::from_millis(200)),
    )
    .await;
    assert!(
        first.keys.lock().unwrap().is_empty(),
        "the crash came first"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (report, saga) = recover_afresh(durable.clone()).await;
    assert_eq!((report.completed, report.compensated), (0, 1), "{report:?}");
    assert_eq!(*saga.undone.lock().unwrap(), ["charge", "reserve"]);
    assert!(rolled_back_for_its_deadline(&durable, id).await);
}

/// A step the crash cut off may have taken effect: past the deadline, it is
/// still run again until it answers (within its attempts), so that its
/// compensation can undo it, and only then does the saga roll back.
#[tokio::test]
async fn past_the_deadline_a_step_cut_off_by_the_crash_is_resolved_before_rolling_back() {
    let durable = MemoryStore::new();
    let runtime = Runtime::builder()
        .store(durable.clone())
        .build()
        .await
        .unwrap();
    let stuck_at_the_gate = Gated::new(false);
    runtime.register(Arc::clone(&stuck_at_the_gate));
    let options = SagaOptions::new().deadline(Duration::from_millis(200));
    let id = runtime.start_with::<Gated>(1, options).await.unwrap().id();
    // The process "dies" inside `charge`.
    while stuck_at_the_gate.running.load(Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (report, saga) = recover_afresh(durable.clone()).await;
    assert_eq!((report.completed, report.compensated), (0, 1), "{report:?}");
    assert_eq!(saga.keys.lock().unwrap().len(), 1, "`charge` ran again");
    assert_eq!(*saga.undone.lock().unwrap(), ["charge", "reserve"]);
    assert!(rolled_back_for_its_deadline(&durable, id).await);
}

/// Nothing whose success is in the log runs again: a crash right after
/// `charge`'s output is durable recovers without calling `charge` again.
#[tokio::test]
async fn a_step_whose_success_is_logged_does_not_run_again_after_a_crash() {
    // created, reserve x2, charge started, charge succeeded (record 4).
    let (_, first, durable) = crashed_at(CrashPoint::AfterDurable(4), SagaOptions::new()).await;
    assert_eq!(
        first.keys.lock().unwrap().len(),
        1,
        "`charge` ran before the crash"
    );

    let (report, saga) = recover_afresh(durable.clone()).await;
    assert_eq!(report.completed, 1, "{report:?}");
    assert!(saga.keys.lock().unwrap().is_empty(), "`charge` ran again");
}

/// Nor does a compensation whose success is logged: a crash right after
/// `uncharge` succeeded goes on with `unreserve` alone.
#[tokio::test]
async fn a_compensation_whose_success_is_logged_does_not_run_again_after_a_crash() {
    // created, reserve x2, charge x2, confirm started/failed, rollback,
    // uncharge started (8) and succeeded (9).
    let (_, first, durable) = crashed_at(
        CrashPoint::AfterDurable(9),
        SagaOptions::new().faults(Faults::new().fail_step_permanently("confirm")),
    )
    .await;
    assert_eq!(*first.undone.lock().unwrap(), ["charge"]);

    let (report, saga) = recover_afresh(durable.clone()).await;
    assert_eq!(report.compensated, 1, "{report:?}");
    assert_eq!(*saga.undone.lock().unwrap(), ["reserve"]);
}

/// Bytes that are not UTF-8 text (a flipped bit in a multi-byte character)
/// are a damaged record like any other: they fail their saga alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_utf8_fails_only_its_saga_and_is_named() {
    let dir = std::env::temp_dir().join(format!("saga-recovery-{}", SagaId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sagas.db");
    let ids = crashed_mid_step_on_sqlite(&file, 3).await;
    // Record 1 (`reserve` started) is durable: `charge`, which needs
    // `reserve`'s output, is running. `{"` and half of a two-byte character.
    let conn = rusqlite::Connection::open(&file).unwrap();
    let damaged = conn
        .execute(
            "UPDATE records SET body = CAST(x'7b22c3' AS TEXT) WHERE saga_id = ?1 AND seq = 1",
            [ids[1].as_uuid().as_bytes()],
        )
        .unwrap();
    assert_eq!(damaged, 1);
    drop(conn);

    let store = SqliteStore::open(&file).unwrap();
    let (report, _) = recover_afresh(store.clone()).await;
    assert_eq!(report.completed, 2, "{report:?}");
    match &report.failed[..] {
        [(id, e @ Error::DamagedRecord { seq: 1, .. })] if *id == ids[1] => {
            assert!(e.to_string().contains("not UTF-8"), "{e}");
        }
        other => panic!("expected record 1 of one saga damaged, got {other:?}"),
    }
    // The inspector reads it too, damage and all.
    let log = store.load(ids[1]).await.unwrap().unwrap();
    assert!(log.records[1].decode().is_err());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
