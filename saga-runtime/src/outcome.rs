//! How a saga ended, as a type the caller can `match`.

use std::fmt;

use crate::{Phase, SagaId};

/// How a saga run ended.
///
/// ```
/// use saga_runtime::Outcome;
/// fn describe(outcome: &Outcome<u32>) -> String {
///     match outcome {
///         Outcome::Completed(total) => format!("done: {total}"),
///         Outcome::Compensated(report) => format!("undone: {report}"),
///         Outcome::Stuck(report) => format!("needs a person: {report}"),
///     }
/// }
/// assert_eq!(describe(&Outcome::Completed(3)), "done: 3");
/// ```
#[derive(Debug)]
#[must_use = "an outcome says whether the saga completed, was undone, or needs a person"]
pub enum Outcome<O> {
    /// Every step succeeded; these are their outputs.
    Completed(O),
    /// Forward progress stopped and every completed step was compensated.
    Compensated(Report),
    /// A compensation gave up, or a step after the pivot, or a step whose
    /// outcome is unknown (an attempt may have acted unseen) ran out of
    /// attempts: the saga is neither whole nor undone and needs an operator.
    Stuck(Report),
}

impl<O> Outcome<O> {
    /// `true` for [`Outcome::Completed`].
    pub fn is_completed(&self) -> bool {
        matches!(self, Outcome::Completed(_))
    }

    /// `true` for [`Outcome::Compensated`].
    pub fn is_compensated(&self) -> bool {
        matches!(self, Outcome::Compensated(_))
    }

    /// `true` for [`Outcome::Stuck`].
    pub fn is_stuck(&self) -> bool {
        matches!(self, Outcome::Stuck(_))
    }

    /// The outputs of a completed saga.
    pub fn completed(self) -> Option<O> {
        match self {
            Outcome::Completed(o) => Some(o),
            _ => None,
        }
    }

    /// The report of a saga that did not complete.
    pub fn report(&self) -> Option<&Report> {
        match self {
            Outcome::Completed(_) => None,
            Outcome::Compensated(r) | Outcome::Stuck(r) => Some(r),
        }
    }
}

/// One step or compensation that failed for good.
///
/// ```
/// use saga_runtime::{Failure, Phase};
/// let failure = Failure {
///     step: "credit",
///     compensation: Some("reverse_credit"),
///     phase: Phase::Compensation,
///     error: "bank unavailable".into(),
///     retryable: true,
///     attempts: 10,
/// };
/// assert_eq!(
///     failure.to_string(),
///     "compensation `reverse_credit` failed after 10 attempts (attempts exhausted): bank unavailable"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The step's name (for a compensation: the step it undoes).
    pub step: &'static str,
    /// The compensation's name, when `phase` is [`Phase::Compensation`].
    pub compensation: Option<&'static str>,
    /// Step or compensation.
    pub phase: Phase,
    /// The last error, with its sources.
    pub error: String,
    /// Whether the last error was retryable (if so, attempts ran out).
    pub retryable: bool,
    /// How many attempts ran.
    pub attempts: u32,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.compensation.unwrap_or(self.step);
        let what = noun(self.phase);
        let why = if self.retryable {
            "attempts exhausted"
        } else {
            "permanent error"
        };
        write!(
            f,
            "{what} `{name}` failed after {} attempt{} ({why}): {}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.error
        )
    }
}

/// What a name of `phase` names, in messages: `step` or `compensation`.
pub(crate) const fn noun(phase: Phase) -> &'static str {
    match phase {
        Phase::Forward => "step",
        Phase::Compensation => "compensation",
    }
}

/// Why a saga stopped going forward.
///
/// ```
/// use saga_runtime::Cause;
/// assert_eq!(Cause::DeadlineExceeded.to_string(), "deadline exceeded");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A step failed for good.
    StepFailed(Failure),
    /// [`SagaHandle::cancel`](crate::SagaHandle::cancel) was called.
    Cancelled,
    /// The saga-wide deadline passed.
    DeadlineExceeded,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::StepFailed(failure) => failure.fmt(f),
            Cause::Cancelled => f.write_str("cancelled"),
            Cause::DeadlineExceeded => f.write_str("deadline exceeded"),
        }
    }
}

/// What happened to a saga that did not complete: which step failed and
/// why, what was compensated, and what, if anything, is stuck.
///
/// ```
/// use saga_runtime::{Cause, Report, SagaId};
/// let report = Report {
///     saga_id: SagaId::new(),
///     saga: "Transfer",
///     cause: Cause::Cancelled,
///     compensated: vec!["credit", "hold"],
///     stuck: None,
/// };
/// assert_eq!(report.failed_step(), None);
/// assert!(report.to_string().ends_with("cancelled; compensated credit, hold"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The saga run.
    pub saga_id: SagaId,
    /// The saga's name.
    pub saga: &'static str,
    /// Why forward progress stopped.
    pub cause: Cause,
    /// The steps whose compensations succeeded, in the order they ran.
    pub compensated: Vec<&'static str>,
    /// For a stuck saga: the compensation (or post-pivot step) that gave up.
    pub stuck: Option<Failure>,
}

impl Report {
    /// The step that failed, if a step failure stopped the saga.
    pub fn failed_step(&self) -> Option<&'static str> {
        match &self.cause {
            Cause::StepFailed(f) => Some(f.step),
            _ => None,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "saga `{}` {}: {}", self.saga, self.saga_id, self.cause)?;
        if !self.compensated.is_empty() {
            write!(f, "; compensated {}", self.compensated.join(", "))?;
        }
        if let Some(stuck) = &self.stuck {
            write!(f, "; stuck: {stuck}")?;
        }
        Ok(())
    }
}
