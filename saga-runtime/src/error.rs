//! Errors: the error a step fails with and how it is classified, and the
//! errors of the runtime itself.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// The error of a failed step or compensation, classified as retryable or
/// permanent.
///
/// A step may return any `std::error::Error + Send + Sync + 'static` as its
/// error; the runtime wraps it in a `StepError`, asking [`Classify`] whether it
/// is retryable (by default it is), or `Box<dyn std::error::Error + Send +
/// Sync>`, which the runtime keeps as it is (message and sources) as a
/// retryable error. A step can also return `StepError` itself and decide per
/// error with [`permanent`] and [`retryable`]; `?` converts any error into a
/// retryable `StepError`.
///
/// ```
/// use saga_runtime::{permanent, StepError};
/// #[derive(Debug, thiserror::Error)]
/// #[error("insufficient funds")]
/// struct Insufficient;
///
/// let e: StepError = permanent(Insufficient);
/// assert!(!e.is_retryable());
/// assert_eq!(e.to_string(), "insufficient funds");
/// let e: StepError = Insufficient.into();
/// assert!(e.is_retryable());
/// ```
pub struct StepError {
    inner: Box<dyn StdError + Send + Sync + 'static>,
    retryable: bool,
}

impl StepError {
    /// Wraps `error` with an explicit classification.
    pub fn new<E>(error: E, retryable: bool) -> StepError
    where
        E: StdError + Send + Sync + 'static,
    {
        StepError {
            inner: Box::new(error),
            retryable,
        }
    }

    /// Wraps an error already boxed (`Box<dyn Error + Send + Sync>`, as
    /// many crates return), with an explicit classification.
    ///
    /// A step or compensation may return the box itself, which is then
    /// wrapped as retryable; this is for a step that returns `StepError` and
    /// classifies a boxed error itself, for example as permanent.
    ///
    /// ```
    /// # use saga_runtime::StepError;
    /// let boxed: Box<dyn std::error::Error + Send + Sync> = "disk full".into();
    /// let e = StepError::from_boxed(boxed, false);
    /// assert_eq!(e.to_string(), "disk full");
    /// assert!(!e.is_retryable());
    /// ```
    pub fn from_boxed(
        error: Box<dyn StdError + Send + Sync + 'static>,
        retryable: bool,
    ) -> StepError {
        StepError {
            inner: error,
            retryable,
        }
    }

    /// A retryable error carrying only a message.
    ///
    /// ```
    /// # use saga_runtime::StepError;
    /// assert_eq!(StepError::msg("bank unavailable").to_string(), "bank unavailable");
    /// ```
    pub fn msg(message: impl Into<String>) -> StepError {
        StepError::new(Message(message.into()), true)
    }

    pub(crate) fn timed_out(after: Duration) -> StepError {
        StepError::new(TimedOut(after), true)
    }

    pub(crate) fn panicked(message: String) -> StepError {
        StepError::new(Message(format!("panicked: {message}")), false)
    }

    /// Whether this is an attempt cut off by its timeout (whose outcome is
    /// therefore unknown).
    ///
    /// ```
    /// # use saga_runtime::StepError;
    /// assert!(!StepError::msg("refused").is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.inner.is::<TimedOut>()
    }

    /// Whether the runtime may retry after this error.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The wrapped error.
    pub fn get_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.inner
    }

    /// The wrapped error, if it is an `E`.
    ///
    /// ```
    /// # use saga_runtime::StepError;
    /// let e = StepError::from(std::fmt::Error);
    /// assert!(e.downcast_ref::<std::fmt::Error>().is_some());
    /// ```
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.inner.downcast_ref::<E>()
    }

    /// The error and its sources, joined with `: `.
    pub(crate) fn chain_string(&self) -> String {
        let mut text = self.inner.to_string();
        let mut source = self.inner.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

impl<E> From<E> for StepError
where
    E: StdError + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        StepError::new(error, true)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepError")
            .field("error", &self.inner)
            .field("retryable", &self.retryable)
            .finish()
    }
}

/// Marks `error` as permanent: the step is not retried and the saga rolls
/// back (or, after the pivot, becomes stuck).
///
/// It returns a [`StepError`], so a step that decides per error returns
/// `Result<T, StepError>` (a step returning its own error type classifies
/// it with [`Classify`] instead):
///
/// ```
/// use saga_runtime::{StepError, permanent};
///
/// #[derive(Debug)]
/// struct Declined;
/// impl std::fmt::Display for Declined {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("card declined")
///     }
/// }
/// impl std::error::Error for Declined {}
///
/// fn charge(balance: u64, amount: u64) -> Result<u64, StepError> {
///     if amount > balance {
///         return Err(permanent(Declined)); // retrying will not help
///     }
///     Ok(balance - amount)
/// }
/// assert!(!charge(5, 10).unwrap_err().is_retryable());
/// ```
pub fn permanent<E>(error: E) -> StepError
where
    E: StdError + Send + Sync + 'static,
{
    StepError::new(error, false)
}

/// Marks `error` as retryable: the step's retry policy decides what happens.
///
/// ```
/// # use saga_runtime::retryable;
/// assert!(retryable(std::fmt::Error).is_retryable());
/// ```
pub fn retryable<E>(error: E) -> StepError
where
    E: StdError + Send + Sync + 'static,
{
    StepError::new(error, true)
}

/// Classifies a step's own error type as retryable or permanent.
///
/// Implement it for your error type to decide per variant; error types that
/// do not implement it are treated as retryable.
///
/// ```
/// use saga_runtime::Classify;
/// #[derive(Debug, thiserror::Error)]
/// enum LedgerError {
///     #[error("bank unavailable")]
///     Unavailable,
///     #[error("insufficient funds")]
///     Insufficient,
/// }
/// impl Classify for LedgerError {
///     fn is_retryable(&self) -> bool {
///         matches!(self, LedgerError::Unavailable)
///     }
/// }
/// assert!(LedgerError::Unavailable.is_retryable());
/// assert!(!LedgerError::Insufficient.is_retryable());
/// ```
pub trait Classify {
    /// `true` if another attempt may succeed.
    fn is_retryable(&self) -> bool;
}

impl Classify for StepError {
    fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// An error carrying only a message.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

/// An attempt that ran past its timeout.
#[derive(Debug)]
struct TimedOut(Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt timed out after {:?}", self.0)
    }
}

impl StdError for TimedOut {}

/// An error of the runtime itself (not of a step: those end up in an
/// [`Outcome`](crate::Outcome)'s report).
///
/// ```
/// use saga::prelude::*;
///
/// pub struct Unregistered;
/// #[saga(input = ())]
/// impl Unregistered {
///     #[step(readonly)]
///     async fn look(&self) -> Result<(), StepError> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let runtime = Runtime::builder().build().await.unwrap();
/// let err = runtime.run::<Unregistered>(()).await.unwrap_err();
/// assert!(matches!(err, saga::Error::NotRegistered { saga: "Unregistered" }));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `start`/`run` was called for a saga type never registered.
    #[error("saga `{saga}` is not registered: call `runtime.register(Arc::new(..))` first")]
    NotRegistered {
        /// The saga's name.
        saga: &'static str,
    },
    /// Options named a step or compensation the saga does not have.
    #[error("saga `{saga}` has no step or compensation named `{name}` (it has: {known})")]
    UnknownStep {
        /// The saga's name.
        saga: &'static str,
        /// The name given.
        name: String,
        /// The names that exist, comma separated.
        known: String,
    },
    /// Options named a compensation where a step is expected (`retry`,
    /// `Faults::fail_step`), or a step where a compensation is
    /// (`compensation_retry`, `Faults::fail_compensation`).
    ///
    /// ```text
    /// saga `PlaceOrder`: `release_stock` is a compensation: use `compensation_retry`, or name its step `reserve`
    /// saga `PlaceOrder`: `reserve` is a step: use `retry`, or name its compensation `release_stock`
    /// ```
    #[error("saga `{saga}`: {}", wrong_kind(name, *is, instead, *counterpart))]
    WrongKind {
        /// The saga's name.
        saga: &'static str,
        /// The name given.
        name: String,
        /// What `name` names: [`Phase::Forward`](crate::Phase::Forward) for
        /// a step, [`Phase::Compensation`](crate::Phase::Compensation) for a
        /// compensation.
        is: crate::Phase,
        /// The option that takes such a name (`compensation_retry`, `retry`,
        /// `fail_step`, ...).
        instead: &'static str,
        /// For a compensation, the name of its step; for a step, the name of
        /// its compensation, if it has one.
        counterpart: Option<&'static str>,
    },
    /// Options gave a retry policy that could never work: zero attempts
    /// (`RetryPolicy::attempts(0)`), or a timeout of zero. The attributes
    /// refuse the same at compile time.
    #[error("saga `{saga}`: the retry policy given for {} `{name}` is refused: {reason}", crate::outcome::noun(*is))]
    InvalidRetryPolicy {
        /// The saga's name.
        saga: &'static str,
        /// The step or compensation named.
        name: String,
        /// Whether `name` is a step or a compensation.
        is: crate::Phase,
        /// What is wrong, and what to write instead.
        reason: &'static str,
    },
    /// The saga log could not be read or written. A saga whose log failed
    /// stops where it is; recovery resumes it from the log.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A record of a saga's log could not be read; only this saga's
    /// recovery fails.
    #[error("saga {id}: record {seq} of its log is damaged: {message}")]
    DamagedRecord {
        /// The saga run.
        id: crate::SagaId,
        /// The record's position in the log.
        seq: u64,
        /// What is wrong with it.
        message: String,
    },
    /// The log names a saga no registered saga answers to. The log is left
    /// as it is, so a deploy that dropped the saga can be rolled back.
    #[error(
        "saga {id} is a `{name}`, which is not registered with this runtime; its log is left untouched"
    )]
    UnknownSaga {
        /// The saga run.
        id: crate::SagaId,
        /// The name in the log.
        name: String,
    },
    /// The saga's definition changed since the log was written (steps,
    /// their order, dependencies or output types). The log is left as it is,
    /// so a deploy can be rolled back.
    #[error(
        "saga {id}: `{name}` has changed since its log was written (fingerprint {logged:#018x}, now {current:#018x}); finish it with the previous version, or resolve it by hand; its log is left untouched"
    )]
    DefinitionChanged {
        /// The saga run.
        id: crate::SagaId,
        /// The saga's name.
        name: &'static str,
        /// The fingerprint in the log.
        logged: u64,
        /// The registered definition's fingerprint.
        current: u64,
    },
    /// Two different saga types were registered under one name. Recovery
    /// finds the code of a logged saga by its name alone, so the name must
    /// stand for one type on a runtime. (Registering the same type again is
    /// allowed: it replaces the services.)
    #[error(
        "cannot register saga type `{new}` under the name `{name}`: type `{registered}` is registered under it already, and recovery finds a saga's code by its name alone; give one of them a name of its own with `#[saga(name = \"...\")]`"
    )]
    NameTaken {
        /// The name both types have.
        name: &'static str,
        /// The type registered under it first (`std::any::type_name`).
        registered: &'static str,
        /// The type refused (`std::any::type_name`).
        new: &'static str,
    },
    /// An operation on a saga's log needs a store, and the runtime has none.
    #[error(
        "this runtime has no store: build it with `Runtime::builder().store(..)` to resume or inspect sagas"
    )]
    NoStore,
    /// No saga with this id is in the store.
    #[error("no saga {id} in the store")]
    NotFound {
        /// The id asked for.
        id: crate::SagaId,
    },
    /// A saga was started under an id (see [`SagaOptions::id`]) that a saga
    /// has already: running in this runtime, or in the store (started
    /// before, here or by another worker). Nothing was started or written.
    ///
    /// [`SagaOptions::id`]: crate::SagaOptions::id
    #[error(
        "saga {id} was started already (running here, or in the store): an id given with `SagaOptions::id` starts one saga; await or inspect that one"
    )]
    AlreadyStarted {
        /// The id.
        id: crate::SagaId,
    },
    /// An operator action that needs a stuck saga was asked of one that is
    /// not stuck.
    #[error("saga {id} is {state}, not stuck")]
    NotStuck {
        /// The saga run.
        id: crate::SagaId,
        /// Its state.
        state: &'static str,
    },
    /// `mark_compensated` named a step that cannot be marked.
    #[error("saga {id}: step `{step}` cannot be marked compensated: {reason}")]
    CannotMark {
        /// The saga run.
        id: crate::SagaId,
        /// The step named.
        step: String,
        /// Why.
        reason: String,
    },
    /// The task running the saga ended without an outcome (the runtime shut
    /// down, or the executor itself panicked).
    #[error("saga {id} ended without an outcome: {reason}")]
    Aborted {
        /// The saga run.
        id: crate::SagaId,
        /// What happened.
        reason: String,
    },
}

/// The text of [`Error::WrongKind`], after the saga's name.
fn wrong_kind(name: &str, is: crate::Phase, instead: &str, counterpart: Option<&str>) -> String {
    match (is, counterpart) {
        (crate::Phase::Compensation, Some(step)) => {
            format!("`{name}` is a compensation: use `{instead}`, or name its step `{step}`")
        }
        (crate::Phase::Compensation, None) => {
            format!("`{name}` is a compensation: use `{instead}`")
        }
        (crate::Phase::Forward, Some(compensation)) => format!(
            "`{name}` is a step: use `{instead}`, or name its compensation `{compensation}`"
        ),
        (crate::Phase::Forward, None) => {
            format!("`{name}` is a step, which has no compensation: use `{instead}`")
        }
    }
}
