//! Every transition of every saga, for observers: metrics, audit trails,
//! tests. The durable log is fed from the same points.

use crate::{Cause, Failure, SagaId, StepError};

/// One transition of a saga run, as a [`Listener`] receives it.
///
/// ```
/// use saga_runtime::{Event, EventKind, SagaId};
/// let event = Event { saga_id: SagaId::new(), saga: "Transfer", kind: EventKind::StepStarted { step: "hold", attempt: 1 } };
/// assert!(matches!(event.kind, EventKind::StepStarted { attempt: 1, .. }));
/// ```
#[derive(Debug)]
pub struct Event<'a> {
    /// The saga run.
    pub saga_id: SagaId,
    /// The saga's name.
    pub saga: &'static str,
    /// What happened.
    pub kind: EventKind<'a>,
}

/// What happened in an [`Event`]. See [`Listener`] for an example.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum EventKind<'a> {
    /// The saga started.
    Started,
    /// An attempt of a step started.
    StepStarted {
        /// The step.
        step: &'static str,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A step succeeded.
    StepSucceeded {
        /// The step.
        step: &'static str,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// An attempt of a step failed.
    StepFailed {
        /// The step.
        step: &'static str,
        /// The attempt that failed.
        attempt: u32,
        /// The error.
        error: &'a StepError,
        /// Whether another attempt will follow.
        will_retry: bool,
        /// Whether the step may have taken effect unseen: this attempt, or
        /// an earlier one, was cut off by its timeout or by a crash, and
        /// none has answered since. The saga does not roll back without
        /// the step's answer (it ends stuck if its attempts run out).
        outcome_unknown: bool,
    },
    /// Forward progress stopped; compensations follow.
    RollbackStarted {
        /// Why.
        cause: &'a Cause,
    },
    /// An attempt of a compensation started.
    CompensationStarted {
        /// The step being undone.
        step: &'static str,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A compensation succeeded.
    CompensationSucceeded {
        /// The step undone.
        step: &'static str,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// An attempt of a compensation failed.
    CompensationFailed {
        /// The step being undone.
        step: &'static str,
        /// The attempt that failed.
        attempt: u32,
        /// The error.
        error: &'a StepError,
        /// Whether another attempt will follow.
        will_retry: bool,
    },
    /// Every step succeeded.
    Completed,
    /// Every completed step was compensated.
    Compensated,
    /// The saga needs an operator.
    Stuck {
        /// What gave up.
        failure: &'a Failure,
    },
}

/// Receives every [`Event`] of every saga of a runtime, synchronously, on
/// the task running the saga: keep it quick.
///
/// ```
/// use saga_runtime::{Event, EventKind, Listener};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// #[derive(Default)]
/// struct CountRetries(AtomicUsize);
/// impl Listener for CountRetries {
///     fn on_event(&self, event: &Event<'_>) {
///         if let EventKind::StepFailed { will_retry: true, .. } = event.kind {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let builder = saga_runtime::Runtime::builder().listener(CountRetries::default());
/// # drop(builder);
/// ```
pub trait Listener: Send + Sync + 'static {
    /// Called for each transition, in order, for each saga.
    fn on_event(&self, event: &Event<'_>);
}
