//! The runtime: where sagas are registered, started, awaited, and, with a
//! store, recovered after a crash.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::executor::{CancelSignal, Journal, Position, Run, panic_message};
use crate::live::{Claim, LiveSet};
use crate::log::{DefinitionSnapshot, Entry, Record, SagaState, now_ms};
use crate::options::Plan;
use crate::recovery::{self, Replayed};
use crate::store::{BoxFuture, Store, StoreError, StoredSaga};
use crate::{Error, Listener, Outcome, Report, Saga, SagaId, SagaOptions, StepKind};

/// Runs sagas. Cheap to clone: clones share the same registry and settings.
///
/// ```
/// use saga::prelude::*;
/// use std::sync::Arc;
///
/// pub struct Hello;
///
/// #[saga(input = u32)]
/// impl Hello {
///     #[step(readonly)]
///     async fn double(&self, input: &u32) -> Result<u32, std::fmt::Error> {
///         Ok(input * 2)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga::Error> {
/// let runtime = Runtime::builder().build().await?;
/// runtime.register(Arc::new(Hello));
/// let handle = runtime.start::<Hello>(21).await?;
/// match handle.outcome().await? {
///     Outcome::Completed(outputs) => assert_eq!(outputs.double, 42),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    registry: RwLock<Registry>,
    listener: Option<Arc<dyn Listener>>,
    store: Option<Arc<dyn Store>>,
    recovery_concurrency: usize,
    live: LiveSet,
}

#[derive(Default)]
struct Registry {
    /// Looked up on every run, so keyed without SipHash (see [`TypeIdHasher`]).
    by_type: HashMap<TypeId, Arc<dyn Any + Send + Sync>, BuildHasherDefault<TypeIdHasher>>,
    by_name: HashMap<&'static str, Arc<dyn Resumable>>,
}

/// Hashes a [`TypeId`], which is a hash already, by passing it through: a
/// tenth of an in-memory saga's cost went to SipHash-ing it.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(32) ^ n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Configures a [`Runtime`].
///
/// ```
/// use saga_runtime::{Event, Listener, Runtime};
///
/// struct Print;
/// impl Listener for Print {
///     fn on_event(&self, event: &Event<'_>) {
///         println!("{} {}: {:?}", event.saga, event.saga_id, event.kind);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga_runtime::Error> {
/// let runtime = Runtime::builder().listener(Print).build().await?;
/// # drop(runtime);
/// # Ok(()) }
/// ```
#[must_use = "call `.build().await` to get a runtime"]
pub struct Builder {
    listener: Option<Arc<dyn Listener>>,
    store: Option<Arc<dyn Store>>,
    recovery_concurrency: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            listener: None,
            store: None,
            recovery_concurrency: 64,
        }
    }
}

impl Builder {
    /// Sends every transition of every saga to `listener`.
    pub fn listener(mut self, listener: impl Listener) -> Builder {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Logs every transition durably to `store` before acting on it, so that
    /// [`Runtime::recover`] can finish every saga after a crash.
    pub fn store(mut self, store: impl Store) -> Builder {
        self.store = Some(Arc::new(store));
        self
    }

    /// How many sagas [`Runtime::recover`] resumes at once (default 64).
    pub fn recovery_concurrency(mut self, limit: usize) -> Builder {
        self.recovery_concurrency = limit.max(1);
        self
    }

    /// Builds the runtime. Without a store it runs in memory.
    pub async fn build(self) -> Result<Runtime, Error> {
        Ok(Runtime {
            inner: Arc::new(Inner {
                registry: RwLock::new(Registry::default()),
                listener: self.listener,
                store: self.store,
                recovery_concurrency: self.recovery_concurrency,
                live: LiveSet::default(),
            }),
        })
    }
}

impl Runtime {
    /// A builder with the defaults: in memory, no listener.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The store, if the runtime has one.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.inner.store.as_ref()
    }

    /// Registers the services of saga `S`. Starting a saga needs its
    /// registration, and so does recovering it after a restart: recovery
    /// finds the code of a logged saga by its name alone (the type's name
    /// without its module, unless `#[saga(name = "...")]` gives another).
    /// Registering `S` again replaces the earlier value for what starts
    /// and recovers later.
    ///
    /// Returns a [`Registered`] handle that starts and runs `S` with these
    /// services without looking them up (which [`Runtime::run`] and
    /// [`Runtime::start`] do, under a read lock, on every call); keep it
    /// where sagas are started often, or ignore it.
    ///
    /// # Panics
    ///
    /// If another saga type is registered under the same name already
    /// (`a::Order` and `b::Order`, say, both named `Order` by default):
    /// recovery could not tell their logs apart. The message names both
    /// types; give one of them a name of its own with
    /// `#[saga(name = "...")]`. [`try_register`](Self::try_register)
    /// returns that as an error ([`Error::NameTaken`]) instead.
    ///
    /// ```should_panic
    /// use saga::prelude::*;
    /// use std::sync::Arc;
    ///
    /// mod a {
    ///     use saga::prelude::*;
    ///     pub struct Order;
    ///     #[saga(input = ())]
    ///     impl Order {
    ///         #[step(readonly)]
    ///         async fn look(&self) -> Result<(), StepError> { Ok(()) }
    ///     }
    /// }
    /// mod b {
    ///     use saga::prelude::*;
    ///     pub struct Order; // also named "Order": write #[saga(input = (), name = "b::Order")]
    ///     #[saga(input = ())]
    ///     impl Order {
    ///         #[step(readonly)]
    ///         async fn look(&self) -> Result<(), StepError> { Ok(()) }
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga::Error> {
    /// let runtime = Runtime::builder().build().await?;
    /// runtime.register(Arc::new(a::Order));
    /// runtime.register(Arc::new(b::Order)); // panics: the name `Order` is taken
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn register<S: Saga>(&self, saga: Arc<S>) -> Registered<S> {
        match self.try_register(saga) {
            Ok(registered) => registered,
            Err(e) => panic!("{e}"),
        }
    }

    /// Registers the services of saga `S`, as [`register`](Self::register)
    /// does, unless another saga type is registered under the same name
    /// already: then nothing changes, and this returns
    /// [`Error::NameTaken`], naming both types.
    pub fn try_register<S: Saga>(&self, saga: Arc<S>) -> Result<Registered<S>, Error> {
        let name = S::definition().name();
        let mut registry = self
            .inner
            .registry
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(other) = registry.by_name.get(name)
            && other.type_id_of_saga() != TypeId::of::<S>()
        {
            return Err(Error::NameTaken {
                name,
                registered: other.type_name_of_saga(),
                new: std::any::type_name::<S>(),
            });
        }
        registry.by_type.insert(
            TypeId::of::<S>(),
            Arc::clone(&saga) as Arc<dyn Any + Send + Sync>,
        );
        registry.by_name.insert(
            name,
            Arc::new(ByName(Arc::clone(&saga))) as Arc<dyn Resumable>,
        );
        drop(registry);
        Ok(Registered {
            runtime: self.clone(),
            saga,
        })
    }

    /// A handle on saga `S` as registered now (see [`Registered`]).
    pub fn saga<S: Saga>(&self) -> Result<Registered<S>, Error> {
        Ok(Registered {
            runtime: self.clone(),
            saga: self.lookup::<S>()?,
        })
    }

    /// Inlined, with the error made here, so that the lookup's own result
    /// is a pointer wide: this runs on every saga.
    #[inline]
    fn lookup<S: Saga>(&self) -> Result<Arc<S>, Error> {
        self.registered::<S>().ok_or(Error::NotRegistered {
            saga: S::definition().name(),
        })
    }

    fn registered<S: Saga>(&self) -> Option<Arc<S>> {
        let registry = self
            .inner
            .registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let saga = registry.by_type.get(&TypeId::of::<S>())?;
        Arc::clone(saga).downcast::<S>().ok()
    }

    fn lookup_name(&self, name: &str) -> Option<Arc<dyn Resumable>> {
        let registry = self
            .inner
            .registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        registry.by_name.get(name).cloned()
    }

    /// Starts a saga on its own task and returns a handle to await or cancel
    /// it. With a store, the saga and its input are durable once this
    /// returns.
    pub async fn start<S: Saga>(&self, input: S::Input) -> Result<SagaHandle<S>, Error> {
        self.start_with::<S>(input, SagaOptions::default()).await
    }

    /// Starts a saga with per-run options.
    pub async fn start_with<S: Saga>(
        &self,
        input: S::Input,
        options: SagaOptions,
    ) -> Result<SagaHandle<S>, Error> {
        self.start_saga(self.lookup::<S>()?, input, options).await
    }

    /// Runs a saga to its outcome on the calling task (no task is spawned;
    /// it cannot be cancelled except by its deadline).
    ///
    /// (Not an `async fn`, here and in [`run_with`](Self::run_with), only
    /// so that the future holds its arguments once.)
    pub fn run<S: Saga>(
        &self,
        input: S::Input,
    ) -> impl Future<Output = Result<Outcome<S::Outputs>, Error>> + '_ {
        self.run_with::<S>(input, SagaOptions::default())
    }

    /// Runs a saga with per-run options on the calling task.
    pub fn run_with<S: Saga>(
        &self,
        input: S::Input,
        options: SagaOptions,
    ) -> impl Future<Output = Result<Outcome<S::Outputs>, Error>> + '_ {
        self.run_saga(|| self.lookup::<S>(), input, options)
    }

    /// Starts a new saga of `saga`'s services on a task of its own.
    async fn start_saga<S: Saga>(
        &self,
        saga: Arc<S>,
        input: S::Input,
        options: SagaOptions,
    ) -> Result<SagaHandle<S>, Error> {
        let (id, plan, claim) = self.prepare::<S>(options)?;
        // Checked before the future is made: in memory, even awaiting one
        // that is at once ready costs every saga.
        if self.inner.store.is_some() {
            self.log_created::<S>(id, &input, &plan).await?;
        }
        let cancel = Arc::new(CancelSignal::default());
        let task = self.spawn_run(saga, id, input, plan, Some(Arc::clone(&cancel)), claim);
        Ok(SagaHandle { id, cancel, task })
    }

    /// Runs a new saga on the calling task. `saga` gives the services
    /// (looked up, or a handle's): called inside, so that a run is one
    /// future whichever way it was asked for. Written as a function
    /// returning an `async move` block, as an `async fn` would hold its
    /// arguments twice.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` would hold its arguments twice"
    )]
    fn run_saga<'a, S: Saga, P: std::ops::Deref<Target = S> + 'a>(
        &'a self,
        saga: impl FnOnce() -> Result<P, Error> + 'a,
        input: S::Input,
        options: SagaOptions,
    ) -> impl Future<Output = Result<Outcome<S::Outputs>, Error>> + 'a {
        async move {
            let saga = saga()?;
            let (id, plan, _claim) = self.prepare::<S>(options)?;
            // Checked before the future is made: in memory, even awaiting one
            // that is at once ready costs every saga.
            if self.inner.store.is_some() {
                self.log_created::<S>(id, &input, &plan).await?;
            }
            let run = self.new_run(&*saga, id, &input, &plan, 1, None);
            // Nothing of the result is held across the cold path's await.
            let stopped_by = match run.run_from(S::State::default(), Position::FRESH).await {
                Err(e) if self.inner.store.is_some() => e,
                ended => return ended,
            };
            Err(Box::pin(self.let_go(id, stopped_by)).await)
        }
    }

    /// What a new saga needs before it is logged: its id, its plan, and
    /// with a store, its claim.
    fn prepare<S: Saga>(
        &self,
        options: SagaOptions,
    ) -> Result<(SagaId, Plan, Option<Claim>), Error> {
        let id = options.id.unwrap_or_else(|| self.new_id());
        let plan = options.plan(S::definition())?;
        let claim = self.claim_new(id)?;
        Ok((id, plan, claim))
    }

    /// Lets go of durable saga `id`, whose run here stopped short of an end
    /// (a store error, say): a store shared by workers then lets another
    /// take it, and this one no longer renews its lease. Without that, a
    /// worker that lives on would hold the saga, unfinished, for good. A
    /// run fenced off has nothing to let go: the saga is another's, or
    /// this worker's again under a newer token.
    /// Returns `stopped_by`, and is awaited boxed: the cold path takes no
    /// room in a saga's future.
    async fn let_go(&self, id: SagaId, stopped_by: Error) -> Error {
        if let Error::Store(StoreError::LeaseLost { .. }) = stopped_by {
            return stopped_by;
        }
        if let Some(store) = &self.inner.store
            && let Err(e) = store.release(id).await
        {
            tracing::warn!(saga = %id, error = %e, "cannot release a saga whose run stopped");
        }
        stopped_by
    }

    /// The id of a new saga. A log wants ids that grow with time (its
    /// index then takes new sagas at its end): UUIDv7. In memory nothing
    /// orders them, and a random UUIDv4 spares the clock read, a sixth of
    /// an in-memory saga's cost.
    fn new_id(&self) -> SagaId {
        match self.inner.store {
            Some(_) => SagaId::new(),
            None => SagaId::random(),
        }
    }

    /// Claims the id of a new durable saga (see [`crate::live`]); nothing
    /// to claim without a store. An id this runtime is running already (a
    /// caller's [`SagaOptions::id`] reused) is refused:
    /// [`Error::AlreadyStarted`].
    fn claim_new(&self, id: SagaId) -> Result<Option<Claim>, Error> {
        if self.inner.store.is_none() {
            return Ok(None);
        }
        match self.inner.live.claim(id) {
            Some(claim) => Ok(Some(claim)),
            None => Err(Error::AlreadyStarted { id }),
        }
    }

    /// A run of saga `id` whose first record is number `next_seq`. Callers
    /// await `run_from` on it in their own future (no extra layer of
    /// future, which would hold copies of its arguments).
    fn new_run<'a, S: Saga>(
        &'a self,
        saga: &'a S,
        id: SagaId,
        input: &'a S::Input,
        plan: &'a Plan,
        next_seq: u64,
        cancel: Option<&'a CancelSignal>,
    ) -> Run<'a, S> {
        Run {
            saga,
            input,
            id,
            plan,
            listener: self.inner.listener.as_deref(),
            cancel,
            // A deadline too far to be an instant is none.
            deadline: plan.deadline.and_then(|d| Instant::now().checked_add(d)),
            span: tracing::info_span!("saga", saga = S::definition().name(), id = %id),
            journal: self
                .inner
                .store
                .as_deref()
                .map(|s| Journal::new(s, next_seq)),
        }
    }

    /// Writes the `created` record (input and definition) of a new saga.
    async fn log_created<S: Saga>(
        &self,
        id: SagaId,
        input: &S::Input,
        plan: &Plan,
    ) -> Result<(), Error> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let def = S::definition();
        let input = serde_json::to_value(input).map_err(|e| StoreError::Encode {
            saga: id,
            message: format!("the input: {e}"),
        })?;
        let created = Entry::Created {
            saga: def.name().to_string(),
            fingerprint: def.fingerprint(),
            input,
            definition: DefinitionSnapshot::of(def),
            retry: plan.overrides(def),
            deadline_ms: plan.deadline.map(|d| {
                let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                now_ms().saturating_add(millis)
            }),
        };
        match store.append(vec![Record::new(id, 0, created)]).await {
            // Its first record is there: a saga with this id was started
            // before (a caller's `SagaOptions::id` reused), here or by
            // another worker.
            Err(StoreError::Conflict { seq: 0, .. }) => Err(Error::AlreadyStarted { id }),
            written => Ok(written?),
        }
    }

    /// Runs a new saga on a task of its own.
    fn spawn_run<S: Saga>(
        &self,
        saga: Arc<S>,
        id: SagaId,
        input: S::Input,
        plan: Plan,
        cancel: Option<Arc<CancelSignal>>,
        claim: Option<Claim>,
    ) -> JoinHandle<Result<Outcome<S::Outputs>, Error>> {
        let runtime = self.clone();
        tokio::spawn(async move {
            let _claim = claim;
            let run = runtime.new_run(&*saga, id, &input, &plan, 1, cancel.as_deref());
            let stopped_by = match run.run_from(S::State::default(), Position::FRESH).await {
                Err(e) if runtime.inner.store.is_some() => e,
                ended => return ended,
            };
            Err(Box::pin(runtime.let_go(id, stopped_by)).await)
        })
    }

    /// Resumes every unfinished saga in the store, each from where its log
    /// left off, and **waits until they have all ended**. A step that was
    /// running at the crash runs again with the same idempotency key; a
    /// rollback in progress continues. Stuck sagas stay stuck (see
    /// [`resume`](Self::resume)).
    ///
    /// Before a saga's resumed run acts, its log gets a
    /// [`Recovered`](crate::log::Entry::Recovered) record (durable before
    /// any record of the run that follows it): where it goes on, and what
    /// may have been running at the crash (and so may act twice under one
    /// idempotency key). Replay reads past it.
    ///
    /// # It waits for every saga it resumed
    ///
    /// This returns once the last resumed saga has completed, been
    /// compensated or become stuck, which may be never: a step after the
    /// pivot is retried until it succeeds (by default), so one saga whose
    /// service is down keeps this waiting for as long as the service is.
    /// Do not await it before serving requests; use
    /// [`spawn_recovery`](Self::spawn_recovery), which runs it on a task of
    /// its own. Awaiting it is for when the report is wanted before going on
    /// (a batch job, a test). Dropping the future stops the sagas it resumed
    /// where they are, as a crash would (a later recovery resumes them).
    ///
    /// # Failures
    ///
    /// A saga whose log is damaged, whose name is not registered, or whose
    /// definition changed is not touched: it is listed in the report's
    /// [`failed`](RecoveryReport::failed) (and logged with
    /// `tracing::error!`), every other saga still recovers, and this still
    /// returns `Ok`: look at `failed`. A saga whose resumed run stopped
    /// short of an end (a store error, say) is listed there too.
    ///
    /// The log is read a page at a time, the next page while the sagas of
    /// this one run, at most [`Builder::recovery_concurrency`] at once. A
    /// saga this runtime is running itself (started before or during
    /// recovery, or resumed by a recovery still going on) is left to that
    /// run. If the log cannot be read further, the sagas already resumed run
    /// to their ends, and then the error is returned.
    ///
    /// A runtime without a store has nothing to recover: the report is
    /// empty.
    ///
    /// ```
    /// # use saga_runtime::{Runtime, store::MemoryStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga_runtime::Error> {
    /// let runtime = Runtime::builder().store(MemoryStore::new()).build().await?;
    /// // runtime.register(..) every saga first: recovery finds them by name.
    /// let report = runtime.recover().await?;
    /// for (id, error) in &report.failed {
    ///     eprintln!("saga {id} was not recovered: {error}");
    /// }
    /// println!("{} sagas resumed to an end", report.resumed());
    /// # Ok(()) }
    /// ```
    pub async fn recover(&self) -> Result<RecoveryReport, Error> {
        let Some(store) = self.inner.store.clone() else {
            return Ok(RecoveryReport::default());
        };
        let limit = self.inner.recovery_concurrency;
        // A page a little over the limit keeps every slot busy.
        let page_size = (limit + limit / 2).clamp(64, 4096);
        let mut report = RecoveryReport::default();
        let mut tasks = tokio::task::JoinSet::new();
        // The first error ends the reading, not the sagas already resumed:
        // they run to their ends (a dropped task would stop one mid-step),
        // and the sagas read but not resumed are let go, so that a store
        // shared by workers does not keep them this worker's.
        let mut stopped: Option<Error> = None;
        let mut not_resumed = Vec::new();
        let mut reading = Some(read_page(&store, None, page_size));
        while let Some(page) = reading.take() {
            let page = match page.await {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    stopped.get_or_insert(e.into());
                    break;
                }
                Err(e) => {
                    stopped.get_or_insert(aborted(&e));
                    break;
                }
            };
            if page.len() == page_size && stopped.is_none() {
                let after = page.last().map(|s| s.summary.id);
                reading = Some(read_page(&store, after, page_size));
            }
            for stored in page {
                let id = stored.summary.id;
                if stopped.is_some() {
                    not_resumed.push(id);
                    continue;
                }
                let Some(saga) = self.lookup_name(&stored.summary.name) else {
                    let name = stored.summary.name;
                    report.fail(id, Error::UnknownSaga { id, name });
                    continue;
                };
                let Some(claim) = self.inner.live.claim(id) else {
                    continue;
                };
                store.resuming(id);
                while tasks.len() >= limit {
                    if let Some(joined) = tasks.join_next().await
                        && let Err(e) = report.take(joined)
                    {
                        stopped.get_or_insert(e);
                    }
                }
                let resumed = saga.resume(self.clone(), stored, claim, false);
                tasks.spawn(async move { (id, isolated(id, resumed).await) });
            }
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = report.take(joined) {
                stopped.get_or_insert(e);
            }
        }
        // What this runtime cannot run, or did not, another may (a store
        // shared by workers lets go of it).
        for id in not_resumed
            .iter()
            .chain(report.failed.iter().map(|(id, _)| id))
        {
            if let Err(e) = store.release(*id).await {
                tracing::warn!(saga = %id, error = %e, "cannot release a saga recovery left");
            }
        }
        match stopped {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Runs [`recover`](Self::recover) on a task of its own and returns at
    /// once: what a service calls at start, before serving, since `recover`
    /// waits for every saga it resumed to end (and one retrying a service
    /// that is down after its pivot may not end for a long time).
    ///
    /// Await the handle for the [`RecoveryReport`], or drop it: the recovery
    /// goes on, every saga it could not recover is logged with
    /// `tracing::error!`, and so is an error that stops it. Sagas started
    /// meanwhile are this runtime's own, and recovery leaves them alone.
    ///
    /// Calling it again while an earlier recovery is still running is safe:
    /// the sagas that one resumed are left to it, and the new one resumes
    /// only what is unfinished and unclaimed (with a store shared by
    /// workers, a dead worker's sagas), so a service can call it every lease
    /// or so. Aborting the handle stops the sagas it resumed where they are,
    /// as a crash would.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    ///
    /// ```
    /// # use saga_runtime::{Runtime, store::MemoryStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga_runtime::Error> {
    /// let runtime = Runtime::builder().store(MemoryStore::new()).build().await?;
    /// // runtime.register(..) every saga first: recovery finds them by name.
    /// let recovery = runtime.spawn_recovery(); // returns at once
    /// // ... serve requests; later, if the report is wanted:
    /// let report = recovery.await.expect("the recovery task panicked")?;
    /// assert!(report.failed.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn spawn_recovery(&self) -> JoinHandle<Result<RecoveryReport, Error>> {
        let runtime = self.clone();
        tokio::spawn(async move {
            let recovered = runtime.recover().await;
            if let Err(e) = &recovered {
                tracing::error!(error = %e, "recovery stopped");
            }
            recovered
        })
    }

    /// Resumes a stuck saga (after an operator fixed what made it stuck):
    /// the compensation (or post-pivot step) that gave up is tried again
    /// with a fresh retry policy, and the saga goes on from there.
    pub async fn resume(&self, id: SagaId) -> Result<Ended, Error> {
        let stored = self.stuck_saga(id).await?;
        let saga = self
            .lookup_name(&stored.summary.name)
            .ok_or_else(|| Error::UnknownSaga {
                id,
                name: stored.summary.name.clone(),
            })?;
        let store = self.inner.store.as_ref().ok_or(Error::NoStore)?;
        let claim = self.inner.live.claim(id).ok_or(Error::NotStuck {
            id,
            state: SagaState::Running.as_str(),
        })?;
        // Refused before anything is written: a changed definition or a
        // damaged log leaves the saga stuck, its log as it was.
        saga.check_resumable(&stored)?;
        store.resuming(id);
        let seq = stored.records.last().map_or(0, |r| r.seq + 1);
        store
            .append(vec![Record::new(id, seq, Entry::Resumed)])
            .await?;
        let stored = store.load(id).await?.ok_or(Error::NotFound { id })?;
        saga.resume(self.clone(), stored, claim, true).await
    }

    /// Records that an operator undid step `step` of a stuck saga by hand, so
    /// that [`resume`](Self::resume) skips its compensation. For a saga stuck
    /// on a step whose outcome is unknown (its attempts ran out unanswered),
    /// marking that step says it had no effect, or was undone by hand: the
    /// resume then rolls the saga back, instead of trying the step again.
    pub async fn mark_compensated(&self, id: SagaId, step: &str) -> Result<(), Error> {
        let stored = self.stuck_saga(id).await?;
        let saga = self
            .lookup_name(&stored.summary.name)
            .ok_or_else(|| Error::UnknownSaga {
                id,
                name: stored.summary.name.clone(),
            })?;
        saga.check_markable(&stored, step)?;
        let store = self.inner.store.as_ref().ok_or(Error::NoStore)?;
        store.resuming(id);
        let seq = stored.records.last().map_or(0, |r| r.seq + 1);
        let entry = Entry::MarkedCompensated {
            step: step.to_string(),
        };
        store.append(vec![Record::new(id, seq, entry)]).await?;
        Ok(())
    }

    async fn stuck_saga(&self, id: SagaId) -> Result<StoredSaga, Error> {
        let store = self.inner.store.as_ref().ok_or(Error::NoStore)?;
        let stored = store.load(id).await?.ok_or(Error::NotFound { id })?;
        // Being resumed by this runtime, it is running, whatever was read.
        if stored.summary.state != SagaState::Stuck || self.inner.live.contains(id) {
            return Err(Error::NotStuck {
                id,
                state: stored.summary.state.as_str(),
            });
        }
        Ok(stored)
    }
}

/// Reads a page of unfinished sagas on a task of its own, so that it goes
/// on while the previous page's sagas run.
fn read_page(
    store: &Arc<dyn Store>,
    after: Option<SagaId>,
    limit: usize,
) -> JoinHandle<Result<Vec<StoredSaga>, StoreError>> {
    let store = Arc::clone(store);
    tokio::spawn(async move { store.unfinished_page(after, limit).await })
}

/// Awaits one resumed saga, turning a panic that escaped it (in a listener,
/// say; steps' panics are failures already) into that saga's failure, so
/// that every other saga still recovers.
async fn isolated(
    id: SagaId,
    mut resumed: BoxFuture<'static, Result<Ended, Error>>,
) -> Result<Ended, Error> {
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| resumed.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => std::task::Poll::Ready(Err(Error::Aborted {
                id,
                reason: format!("it panicked: {}", panic_message(payload.as_ref())),
            })),
        }
    })
    .await
}

/// A recovery task that panicked or was cancelled.
fn aborted(e: &tokio::task::JoinError) -> Error {
    Error::Aborted {
        id: SagaId::from(uuid::Uuid::nil()),
        reason: format!("a recovery task failed: {e}"),
    }
}

/// How a saga ended, without its typed outputs: what [`Runtime::recover`]
/// and [`Runtime::resume`] report, since they run sagas of any type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Every step succeeded.
    Completed,
    /// Rolled back.
    Compensated(Report),
    /// Needs an operator.
    Stuck(Report),
}

impl<O> From<Outcome<O>> for Ended {
    fn from(outcome: Outcome<O>) -> Ended {
        match outcome {
            Outcome::Completed(_) => Ended::Completed,
            Outcome::Compensated(r) => Ended::Compensated(r),
            Outcome::Stuck(r) => Ended::Stuck(r),
        }
    }
}

/// What [`Runtime::recover`] (or [`Runtime::spawn_recovery`]) did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Sagas that completed.
    pub completed: usize,
    /// Sagas that were compensated.
    pub compensated: usize,
    /// Sagas that ended stuck.
    pub stuck: usize,
    /// Sagas that could not be recovered, and why: an unknown name, a
    /// changed definition or a damaged log (those logs are untouched), or
    /// a resumed run that stopped short of an end. Each is also logged
    /// with `tracing::error!`. [`Runtime::recover`] returns `Ok` with
    /// these listed: look here.
    pub failed: Vec<(SagaId, Error)>,
}

impl RecoveryReport {
    /// Counts how one resumed saga ended.
    fn take(
        &mut self,
        joined: Result<(SagaId, Result<Ended, Error>), tokio::task::JoinError>,
    ) -> Result<(), Error> {
        match joined.map_err(|e| aborted(&e))? {
            (_, Ok(Ended::Completed)) => self.completed += 1,
            (_, Ok(Ended::Compensated(_))) => self.compensated += 1,
            (_, Ok(Ended::Stuck(_))) => self.stuck += 1,
            (id, Err(e)) => self.fail(id, e),
        }
        Ok(())
    }

    /// Lists saga `id` as not recovered, and logs it: a caller's `?` on
    /// the report, or a recovery no one awaits, would hide it.
    fn fail(&mut self, id: SagaId, error: Error) {
        if let Error::Store(StoreError::LeaseLost { .. }) = error {
            // Another worker took it over: it is not lost.
            tracing::warn!(saga = %id, error = %error, "saga not recovered here: another worker has it");
        } else {
            tracing::error!(saga = %id, error = %error, "saga not recovered");
        }
        self.failed.push((id, error));
    }

    /// How many sagas were resumed to an end.
    pub fn resumed(&self) -> usize {
        self.completed + self.compensated + self.stuck
    }
}

/// A registered saga, as recovery sees it: by name, type erased.
trait Resumable: Send + Sync {
    /// Runs the saga of `stored` from where its log left off, on the
    /// calling task, holding `claim` until it ends. `just_resumed`: an
    /// operator's resume wrote the log's last record a moment ago.
    fn resume(
        &self,
        runtime: Runtime,
        stored: StoredSaga,
        claim: Claim,
        just_resumed: bool,
    ) -> BoxFuture<'static, Result<Ended, Error>>;
    /// Whether the saga of `stored` can be resumed: its log replays
    /// under the registered definition.
    fn check_resumable(&self, stored: &StoredSaga) -> Result<(), Error>;
    fn check_markable(&self, stored: &StoredSaga, step: &str) -> Result<(), Error>;
    fn type_id_of_saga(&self) -> TypeId;
    /// The saga's type, for an error.
    fn type_name_of_saga(&self) -> &'static str;
}

struct ByName<S: Saga>(Arc<S>);

impl<S: Saga> Resumable for ByName<S> {
    fn resume(
        &self,
        runtime: Runtime,
        stored: StoredSaga,
        claim: Claim,
        just_resumed: bool,
    ) -> BoxFuture<'static, Result<Ended, Error>> {
        let saga = Arc::clone(&self.0);
        Box::pin(async move {
            let replayed = recovery::replay_as::<S>(&stored, just_resumed)?;
            if replayed.stuck || replayed.finished {
                return Err(Error::NotStuck {
                    id: replayed.id,
                    state: stored.summary.state.as_str(),
                });
            }
            drop(stored);
            // After a crash (not an operator's resume, which wrote its own
            // record a moment ago), the log says so first, and what may
            // have been running then, before the recovered run acts.
            let recovered = (!just_resumed).then(|| replayed.recovered());
            let Replayed {
                id,
                input,
                state,
                position,
                mut next_seq,
                deadline_ms,
                retry,
                ..
            } = replayed;
            // Not waited for: stores order appends, so it is durable before
            // any record of the run after it is (and a run whose records
            // never become durable leaves the next recovery to say the same).
            // Waiting would cost every recovered saga a commit: 100,000 took
            // a fifth longer.
            if let (Some(entry), Some(store)) = (recovered, runtime.inner.store.as_deref()) {
                drop(store.append(vec![Record::new(id, next_seq, entry)]));
                next_seq += 1;
            }
            let mut plan = Plan::recovered(S::definition(), retry);
            // The deadline is where it was set when the saga was created:
            // the time spent down counts. (Logs from before deadlines were
            // logged give the definition's, from now.)
            if let Some(at) = deadline_ms {
                plan.deadline = Some(Duration::from_millis(at.saturating_sub(now_ms())));
            }
            let run = runtime.new_run(&*saga, id, &input, &plan, next_seq, None);
            let ended = match run.run_from(state, position).await {
                Err(e) => Err(runtime.let_go(id, e).await),
                ended => ended,
            };
            drop(claim);
            Ok(Ended::from(ended?))
        })
    }

    fn check_resumable(&self, stored: &StoredSaga) -> Result<(), Error> {
        recovery::replay::<S>(stored).map(drop)
    }

    fn check_markable(&self, stored: &StoredSaga, step: &str) -> Result<(), Error> {
        let def = S::definition();
        let id = stored.summary.id;
        let cannot = |reason: &str| Error::CannotMark {
            id,
            step: step.to_string(),
            reason: reason.to_string(),
        };
        let i = def.step_index(step).ok_or_else(|| {
            // Steps are marked, not their compensations: a compensation's
            // name points at its step; other names list the steps alone.
            if let Some(of) = def.compensation_index(step) {
                let of = def.steps()[of].name();
                return cannot(&format!(
                    "`{step}` is the compensation of step `{of}`: mark the step: \
                     mark_compensated(id, \"{of}\")"
                ));
            }
            let steps: Vec<&str> = def.steps().iter().map(|s| s.name()).collect();
            cannot(&format!(
                "the saga has no such step (it has: {})",
                steps.join(", ")
            ))
        })?;
        let replayed = recovery::replay::<S>(stored)?;
        // Stuck on this step, which never answered: marking it says it had
        // no effect (or that it was undone by hand), and the saga rolls back.
        if let Position::Failed(gave_up) = &replayed.position
            && gave_up.step == i
            && gave_up.unresolved
        {
            return Ok(());
        }
        if def.steps()[i].kind() != StepKind::Compensatable {
            return Err(cannot("it has no compensation"));
        }
        match replayed.position {
            Position::Rollback(at) if S::__has_output(&replayed.state, i) && !at.compensated[i] => {
                Ok(())
            }
            Position::Rollback(_) => Err(cannot("it did not complete, or is already compensated")),
            _ => Err(cannot("the saga is not rolling back")),
        }
    }

    fn type_id_of_saga(&self) -> TypeId {
        TypeId::of::<S>()
    }

    fn type_name_of_saga(&self) -> &'static str {
        std::any::type_name::<S>()
    }
}

/// Saga `S` as registered with a runtime: starts and runs it with the
/// services it was registered with, without looking them up on each call
/// as [`Runtime::run`] and [`Runtime::start`] do. Returned by
/// [`Runtime::register`] and [`Runtime::saga`]; cheap to clone.
///
/// Registering `S` again later does not change a handle made before:
/// its sagas run with the earlier services (recovery after a crash uses
/// the services registered then, by name).
///
/// ```
/// use saga::prelude::*;
/// use std::sync::Arc;
///
/// pub struct Greet;
///
/// #[saga(input = String)]
/// impl Greet {
///     #[step(readonly)]
///     async fn hello(&self, input: &str) -> Result<String, std::fmt::Error> {
///         Ok(format!("hello, {input}"))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga::Error> {
/// let runtime = Runtime::builder().build().await?;
/// let greet = runtime.register(Arc::new(Greet));
/// for name in ["ada", "grace"] {
///     let outcome = greet.run(name.to_string()).await?;
///     assert!(outcome.is_completed());
/// }
/// let handle = greet.start("linus".to_string()).await?;
/// assert!(handle.outcome().await?.is_completed());
/// # Ok(()) }
/// ```
pub struct Registered<S: Saga> {
    runtime: Runtime,
    saga: Arc<S>,
}

impl<S: Saga> Clone for Registered<S> {
    fn clone(&self) -> Self {
        Registered {
            runtime: self.runtime.clone(),
            saga: Arc::clone(&self.saga),
        }
    }
}

impl<S: Saga> Registered<S> {
    /// Runs a saga to its outcome on the calling task; see [`Runtime::run`].
    pub fn run(
        &self,
        input: S::Input,
    ) -> impl Future<Output = Result<Outcome<S::Outputs>, Error>> + '_ {
        self.run_with(input, SagaOptions::default())
    }

    /// Runs a saga with per-run options on the calling task.
    pub fn run_with(
        &self,
        input: S::Input,
        options: SagaOptions,
    ) -> impl Future<Output = Result<Outcome<S::Outputs>, Error>> + '_ {
        let saga = || Ok(&*self.saga);
        self.runtime.run_saga(saga, input, options)
    }

    /// Starts a saga on its own task; see [`Runtime::start`].
    pub async fn start(&self, input: S::Input) -> Result<SagaHandle<S>, Error> {
        self.start_with(input, SagaOptions::default()).await
    }

    /// Starts a saga with per-run options.
    pub async fn start_with(
        &self,
        input: S::Input,
        options: SagaOptions,
    ) -> Result<SagaHandle<S>, Error> {
        let saga = Arc::clone(&self.saga);
        self.runtime.start_saga(saga, input, options).await
    }

    /// The runtime it runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}

/// A running saga: await its outcome or cancel it.
///
/// ```
/// use saga::prelude::*;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// pub struct Slow;
/// #[saga(input = ())]
/// impl Slow {
///     #[step(compensate = undo)]
///     async fn wait(&self) -> Result<(), StepError> {
///         tokio::time::sleep(Duration::from_millis(10)).await;
///         Ok(())
///     }
///     async fn undo(&self) -> Result<(), StepError> { Ok(()) }
///     #[step(pivot)]
///     async fn commit(&self) -> Result<(), StepError> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga::Error> {
/// let runtime = Runtime::builder().build().await?;
/// runtime.register(Arc::new(Slow));
/// let handle = runtime.start::<Slow>(()).await?;
/// tokio::time::sleep(Duration::from_millis(1)).await; // `wait` is running now
/// handle.cancel(); // `wait` finishes, then is undone; `commit` never runs
/// match handle.outcome().await? {
///     Outcome::Compensated(report) => assert_eq!(report.compensated, ["wait"]),
///     other => panic!("{other:?}"),
/// }
/// # Ok(()) }
/// ```
#[must_use = "a saga handle does nothing unless its outcome is awaited"]
pub struct SagaHandle<S: Saga> {
    id: SagaId,
    cancel: Arc<CancelSignal>,
    task: JoinHandle<Result<Outcome<S::Outputs>, Error>>,
}

impl<S: Saga> SagaHandle<S> {
    /// The saga run's id.
    pub fn id(&self) -> SagaId {
        self.id
    }

    /// Stops forward work and rolls back. An attempt already running is
    /// allowed to finish (so an effect it makes is never orphaned: it is
    /// compensated like any completed step); compensations are never cut
    /// short. After the pivot, cancellation has no effect: the saga can only
    /// go forward.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A cancel switch that can be moved elsewhere while the handle awaits.
    pub fn canceller(&self) -> Canceller {
        Canceller(Arc::clone(&self.cancel))
    }

    /// Waits for the outcome, unless `crash` resolves first: then the run's
    /// task is stopped where it is, as by a crash (no rollback, no record
    /// more), and this returns `None` once it has stopped. For the crash
    /// explorer: a "crashed" run left going would act on the services while
    /// (or after) recovery runs the saga, which no real crash does.
    pub(crate) async fn outcome_unless_crash(
        mut self,
        crash: impl Future<Output = ()>,
    ) -> Option<Result<Outcome<S::Outputs>, Error>> {
        tokio::select! {
            biased;
            () = crash => {
                self.task.abort();
                // Resolves once the task is dropped (or had ended): nothing
                // of the run is left to act afterwards.
                let _ = (&mut self.task).await;
                None
            }
            ended = &mut self.task => Some(ended.map_err(|e| Error::Aborted {
                id: self.id,
                reason: e.to_string(),
            }).and_then(|r| r)),
        }
    }

    /// Waits for the outcome.
    pub async fn outcome(self) -> Result<Outcome<S::Outputs>, Error> {
        self.task.await.map_err(|e| Error::Aborted {
            id: self.id,
            reason: e.to_string(),
        })?
    }
}

/// Cancels a saga from elsewhere; see [`SagaHandle::cancel`].
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn f<S: saga_runtime::Saga>(handle: saga_runtime::SagaHandle<S>) {
/// let canceller = handle.canceller();
/// tokio::spawn(async move {
///     tokio::time::sleep(std::time::Duration::from_secs(5)).await;
///     canceller.cancel();
/// });
/// let outcome = handle.outcome().await;
/// # drop(outcome); }
/// ```
#[derive(Clone)]
pub struct Canceller(Arc<CancelSignal>);

impl Canceller {
    /// Stops forward work and rolls back.
    pub fn cancel(&self) {
        self.0.cancel();
    }
}
