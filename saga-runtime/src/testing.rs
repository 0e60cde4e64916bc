//! Tools for testing sagas against crashes: a store that "crashes" at a
//! chosen record, and an explorer that runs a saga once per crash point,
//! recovers it, and checks an invariant of yours after each.
//!
//! Fault injection and the idempotency check live in
//! [`SagaOptions`] and [`Faults`](crate::Faults).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::log::{Record, SagaState};
use crate::store::{
    BoxFuture, ListFilter, MemoryStore, SagaSummary, Store, StoreError, StoredSaga,
};
use crate::{Ended, Error, Runtime, Saga, SagaId, SagaOptions};

/// Where a [`CrashingStore`] stops the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// Record number `n` (counting appends from 0) is made durable, and
    /// then the process "dies" before the runtime hears back.
    AfterDurable(u64),
    /// The process "dies" while writing record `n`: it is lost, and so is
    /// everything after it; effects made before it stand.
    BeforeDurable(u64),
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashPoint::AfterDurable(n) => write!(f, "crash right after record {n} is durable"),
            CrashPoint::BeforeDurable(n) => write!(f, "crash right before record {n} is durable"),
        }
    }
}

/// A [`Store`] over a [`MemoryStore`] that freezes at a [`CrashPoint`]:
/// from then on every append hangs forever, as if the process had died.
/// Drop the runtime, keep the inner store, and recover from it.
///
/// ```
/// use saga_runtime::testing::{CrashPoint, CrashingStore};
/// use saga_runtime::store::MemoryStore;
/// let durable = MemoryStore::new();
/// let store = CrashingStore::new(durable.clone(), CrashPoint::AfterDurable(3));
/// assert!(!store.crashed());
/// ```
#[derive(Clone)]
pub struct CrashingStore {
    inner: MemoryStore,
    point: CrashPoint,
    appended: Arc<AtomicU64>,
    crashed: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl CrashingStore {
    /// Wraps `inner`, crashing at `point`.
    pub fn new(inner: MemoryStore, point: CrashPoint) -> CrashingStore {
        CrashingStore {
            inner,
            point,
            appended: Arc::new(AtomicU64::new(0)),
            crashed: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(Notify::new()),
        }
    }

    /// Whether the crash point was reached.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::Acquire)
    }

    /// Resolves once the crash point is reached.
    pub async fn wait_for_crash(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.crashed() {
                return;
            }
            notified.await;
        }
    }

    fn crash(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.crashed.store(true, Ordering::Release);
        self.notify.notify_waiters();
        Box::pin(std::future::pending())
    }
}

impl Store for CrashingStore {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>> {
        if self.crashed() {
            return self.crash();
        }
        let n = self.appended.fetch_add(1, Ordering::AcqRel);
        match self.point {
            CrashPoint::BeforeDurable(k) if n >= k => self.crash(),
            CrashPoint::AfterDurable(k) if n >= k => {
                // The memory store applies an append when called: the record
                // is durable now, and the world stops before anyone hears.
                drop(self.inner.append(records));
                self.crash()
            }
            _ => self.inner.append(records),
        }
    }

    fn load(&self, id: SagaId) -> BoxFuture<'_, Result<Option<StoredSaga>, StoreError>> {
        self.inner.load(id)
    }

    fn unfinished_page(
        &self,
        after: Option<SagaId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>> {
        self.inner.unfinished_page(after, limit)
    }

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        self.inner.list(filter)
    }

    fn prune(&self, before_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.prune(before_ms)
    }
}

/// What one explored case ended as, given to your invariant.
#[derive(Debug)]
pub struct CrashCase {
    /// Where the first run crashed (`None`: the run that found the end of
    /// the log, which did not crash).
    pub point: Option<CrashPoint>,
    /// The saga's state in the log after recovery (and, if it was stuck, an
    /// operator's resume); `None` if the crash came before the saga was
    /// created, so it never existed.
    pub state: Option<SagaState>,
    /// How the recovered run ended, if recovery ran it.
    pub ended: Option<Ended>,
}

/// The first case that broke the invariant, or that left a saga unfinished.
#[derive(Debug)]
pub struct CrashFailure {
    /// The case.
    pub case: CrashCase,
    /// What the invariant (or the explorer) said.
    pub message: String,
    /// The saga's log after recovery, one record a line.
    pub log: Vec<String>,
}

impl fmt::Display for CrashFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.case.point {
            Some(point) => writeln!(f, "{point}, then recovery:")?,
            None => writeln!(f, "the run without a crash:")?,
        }
        writeln!(f, "  {}", self.message)?;
        writeln!(f, "  state after recovery: {:?}", self.case.state)?;
        writeln!(f, "  log:")?;
        for line in &self.log {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CrashFailure {}

/// What [`explore_crash_points`] covered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exploration {
    /// Crash points tried (each a full run, crash, recovery and check).
    pub cases: usize,
    /// Records the saga wrote when it did not crash.
    pub records: u64,
}

/// Runs saga `S` once per crash point, before and after each record its
/// log would get, and once without crashing. At the crash the run stops
/// where it is, as a killed process would (a step it was awaiting is
/// dropped, and acts no more). Then it starts a fresh runtime on the
/// surviving log, recovers, resumes the saga if it ended stuck, and asks
/// `invariant` whether the world is whole. Returns at the first broken case
/// with a readable report.
///
/// `setup` builds the saga's services afresh for each case (your fake banks,
/// say); `invariant` gets them and the case after recovery. A saga still
/// unfinished after recovery is reported without asking `invariant`.
///
/// ```
/// use saga::prelude::*;
/// use saga::testing::explore_crash_points;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicI64, Ordering};
///
/// #[derive(Default)]
/// pub struct Counter { value: AtomicI64 }
///
/// #[saga(input = ())]
/// impl Counter {
///     #[step(compensate = decrement)]
///     async fn increment(&self) -> Result<(), StepError> {
///         self.value.fetch_add(1, Ordering::SeqCst); // not idempotent: the explorer finds it
///         Ok(())
///     }
///     async fn decrement(&self) -> Result<(), StepError> {
///         self.value.fetch_sub(1, Ordering::SeqCst);
///         Ok(())
///     }
///     #[step(pivot)]
///     async fn commit(&self) -> Result<(), StepError> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let result = explore_crash_points::<Counter, _, _>(
///     || async { Arc::new(Counter::default()) },
///     (),
///     SagaOptions::new(),
///     |counter, _case| match counter.value.load(Ordering::SeqCst) {
///         0 | 1 => Ok(()),
///         n => Err(format!("counter is {n}")),
///     },
/// )
/// .await;
/// let failure = result.unwrap_err();
/// assert!(failure.message.contains("counter is 2"));
/// # }
/// ```
pub async fn explore_crash_points<S, F, Fut>(
    setup: F,
    input: S::Input,
    options: SagaOptions,
    invariant: impl Fn(&Arc<S>, &CrashCase) -> Result<(), String>,
) -> Result<Exploration, CrashFailure>
where
    S: Saga,
    S::Input: Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<S>>,
{
    let mut exploration = Exploration::default();
    let mut k = 0;
    loop {
        for point in [CrashPoint::BeforeDurable(k), CrashPoint::AfterDurable(k)] {
            let saga = setup().await;
            let durable = MemoryStore::new();
            let crashing = CrashingStore::new(durable.clone(), point);
            let first = run_until_crash(&saga, &crashing, input.clone(), options.clone()).await;
            exploration.cases += 1;
            let crashed = crashing.crashed();
            let case = match first {
                Err(message) => {
                    return Err(failure(
                        &durable,
                        CrashCase {
                            point: Some(point),
                            state: None,
                            ended: None,
                        },
                        message,
                    )
                    .await);
                }
                Ok(_) if !crashed => {
                    // The saga ended before reaching record k: every crash
                    // point has been explored; check the uncrashed end.
                    exploration.records = k;
                    let case = settle(&saga, &durable, None).await;
                    return match case {
                        Ok(case) => check(&saga, &durable, case, &invariant)
                            .await
                            .map(|()| exploration),
                        Err((case, message)) => Err(failure(&durable, case, message).await),
                    };
                }
                Ok(_) => settle(&saga, &durable, Some(point)).await,
            };
            match case {
                Ok(case) => check(&saga, &durable, case, &invariant).await?,
                Err((case, message)) => return Err(failure(&durable, case, message).await),
            }
        }
        k += 1;
    }
}

/// Starts the saga on a runtime over `store` and waits until it ends or the
/// store crashes; then the run is stopped where it is, as the process would
/// be, and the runtime is dropped.
async fn run_until_crash<S: Saga>(
    saga: &Arc<S>,
    store: &CrashingStore,
    input: S::Input,
    options: SagaOptions,
) -> Result<(), String> {
    let runtime = Runtime::builder()
        .store(store.clone())
        .build()
        .await
        .map_err(|e| e.to_string())?;
    runtime.register(Arc::clone(saga));
    let failed = |e: Error| format!("the first run failed: {e}");
    let handle = tokio::select! {
        biased;
        // Before the saga's task exists: nothing more runs.
        () = store.wait_for_crash() => return Ok(()),
        started = runtime.start_with::<S>(input, options) => started.map_err(failed)?,
    };
    match handle.outcome_unless_crash(store.wait_for_crash()).await {
        None => Ok(()),
        Some(ended) => ended.map(drop).map_err(failed),
    }
}

type Unsettled = (CrashCase, String);

/// Recovers on a fresh runtime over the surviving log, resumes a stuck saga
/// once, and reports where the saga ended.
async fn settle<S: Saga>(
    saga: &Arc<S>,
    durable: &MemoryStore,
    point: Option<CrashPoint>,
) -> Result<CrashCase, Unsettled> {
    let mut case = CrashCase {
        point,
        state: None,
        ended: None,
    };
    let runtime = match Runtime::builder().store(durable.clone()).build().await {
        Ok(runtime) => runtime,
        Err(e) => return Err((case, e.to_string())),
    };
    runtime.register(Arc::clone(saga));
    if point.is_some() {
        match runtime.recover().await {
            Ok(report) if report.failed.is_empty() => {}
            Ok(report) => {
                let errors: Vec<String> = report
                    .failed
                    .iter()
                    .map(|(id, e)| format!("{id}: {e}"))
                    .collect();
                return Err((case, format!("recovery failed: {}", errors.join("; "))));
            }
            Err(e) => return Err((case, format!("recovery failed: {e}"))),
        }
    }
    let Some(summary) = only_saga(durable).await else {
        return Ok(case);
    };
    if summary.state == SagaState::Stuck {
        match runtime.resume(summary.id).await {
            Ok(ended) => case.ended = Some(ended),
            Err(e) => return Err((case, format!("resuming the stuck saga failed: {e}"))),
        }
    }
    case.state = only_saga(durable).await.map(|s| s.state);
    match case.state {
        Some(SagaState::Running) => Err((case, "the saga is still running after recovery".into())),
        _ => Ok(case),
    }
}

async fn check<S: Saga>(
    saga: &Arc<S>,
    durable: &MemoryStore,
    case: CrashCase,
    invariant: &impl Fn(&Arc<S>, &CrashCase) -> Result<(), String>,
) -> Result<(), CrashFailure> {
    match invariant(saga, &case) {
        Ok(()) => Ok(()),
        Err(message) => Err(failure(durable, case, message).await),
    }
}

async fn only_saga(durable: &MemoryStore) -> Option<SagaSummary> {
    durable
        .list(ListFilter::default())
        .await
        .ok()
        .and_then(|mut list| list.pop())
}

async fn failure(durable: &MemoryStore, case: CrashCase, message: String) -> CrashFailure {
    let mut log = Vec::new();
    if let Some(summary) = only_saga(durable).await
        && let Ok(Some(stored)) = durable.load(summary.id).await
    {
        log = stored
            .records
            .iter()
            .map(|r| format!("{:>3} {}", r.seq, r.body))
            .collect();
    }
    CrashFailure { case, message, log }
}
