//! The runtime: where sagas are registered, started and awaited.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::executor::{CancelSignal, Run};
use crate::{Error, Listener, Outcome, Saga, SagaId, SagaOptions};

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
    sagas: RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    listener: Option<Arc<dyn Listener>>,
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
#[derive(Default)]
#[must_use = "call `.build().await` to get a runtime"]
pub struct Builder {
    listener: Option<Arc<dyn Listener>>,
}

impl Builder {
    /// Sends every transition of every saga to `listener`.
    pub fn listener(mut self, listener: impl Listener) -> Builder {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Builds the runtime. Without a store it runs in memory.
    pub async fn build(self) -> Result<Runtime, Error> {
        Ok(Runtime {
            inner: Arc::new(Inner {
                sagas: RwLock::new(HashMap::new()),
                listener: self.listener,
            }),
        })
    }
}

impl Runtime {
    /// A builder with the defaults: in memory, no listener.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Registers the services of saga `S`. Starting a saga needs its
    /// registration, and so does recovering it after a restart. Registering
    /// again replaces the earlier value.
    pub fn register<S: Saga>(&self, saga: Arc<S>) {
        let mut sagas = self
            .inner
            .sagas
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sagas.insert(TypeId::of::<S>(), saga);
    }

    fn lookup<S: Saga>(&self) -> Result<Arc<S>, Error> {
        let sagas = self
            .inner
            .sagas
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sagas
            .get(&TypeId::of::<S>())
            .cloned()
            .and_then(|any| any.downcast::<S>().ok())
            .ok_or(Error::NotRegistered {
                saga: S::definition().name(),
            })
    }

    /// Starts a saga on its own task and returns a handle to await or cancel
    /// it.
    pub async fn start<S: Saga>(&self, input: S::Input) -> Result<SagaHandle<S>, Error> {
        self.start_with::<S>(input, SagaOptions::default()).await
    }

    /// Starts a saga with per-run options.
    pub async fn start_with<S: Saga>(
        &self,
        input: S::Input,
        options: SagaOptions,
    ) -> Result<SagaHandle<S>, Error> {
        let saga = self.lookup::<S>()?;
        let id = options.id.unwrap_or_default();
        let plan = options.plan(S::definition())?;
        let cancel = Arc::new(CancelSignal::default());
        let listener = self.inner.listener.clone();
        let signal = Arc::clone(&cancel);
        let deadline = plan.deadline.map(|d| Instant::now() + d);
        let task = tokio::spawn(async move {
            Run {
                saga: &*saga,
                input: &input,
                id,
                plan: &plan,
                listener: listener.as_deref(),
                cancel: Some(&signal),
                deadline,
            }
            .execute()
            .await
        });
        Ok(SagaHandle { id, cancel, task })
    }

    /// Runs a saga to its outcome on the calling task (no task is spawned;
    /// it cannot be cancelled except by its deadline).
    pub async fn run<S: Saga>(&self, input: S::Input) -> Result<Outcome<S::Outputs>, Error> {
        self.run_with::<S>(input, SagaOptions::default()).await
    }

    /// Runs a saga with per-run options on the calling task.
    pub async fn run_with<S: Saga>(
        &self,
        input: S::Input,
        options: SagaOptions,
    ) -> Result<Outcome<S::Outputs>, Error> {
        let saga = self.lookup::<S>()?;
        let id = options.id.unwrap_or_default();
        let plan = options.plan(S::definition())?;
        let outcome = Run {
            saga: &*saga,
            input: &input,
            id,
            plan: &plan,
            listener: self.inner.listener.as_deref(),
            cancel: None,
            deadline: plan.deadline.map(|d| Instant::now() + d),
        }
        .execute()
        .await;
        Ok(outcome)
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
    task: JoinHandle<Outcome<S::Outputs>>,
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

    /// Waits for the outcome.
    pub async fn outcome(self) -> Result<Outcome<S::Outputs>, Error> {
        self.task.await.map_err(|e| Error::Aborted {
            id: self.id,
            reason: e.to_string(),
        })
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
