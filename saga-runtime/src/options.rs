//! Per-run options: a deadline, retry overrides, and the test aids (fault
//! injection and the idempotency check).

use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::time::Duration;

use crate::log::RetryOverride;
use crate::{Definition, Error, Phase, RetryPolicy, SagaId, StepError};

/// Options for one saga run.
///
/// ```
/// use saga_runtime::{Faults, RetryPolicy, SagaOptions};
/// use std::time::Duration;
///
/// let options = SagaOptions::new()
///     .deadline(Duration::from_secs(30))
///     .retry("hold", RetryPolicy::attempts(10))
///     .faults(Faults::new().fail_step("credit", 1..=2))
///     .check_idempotency(true);
/// # drop(options);
/// ```
#[derive(Clone, Debug, Default)]
pub struct SagaOptions {
    pub(crate) id: Option<SagaId>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) retry: Vec<(String, Phase, RetryPolicy)>,
    pub(crate) faults: Faults,
    pub(crate) repeat: bool,
}

impl SagaOptions {
    /// The defaults: the policies from the attributes, no deadline unless the
    /// saga declares one, no faults.
    pub fn new() -> SagaOptions {
        SagaOptions::default()
    }

    /// Runs the saga under this id instead of a fresh one (for example an id
    /// derived from a request, so a retried request finds the same saga).
    /// With a store, an id starts one saga: starting another under it, while
    /// the first runs or after it ended, is refused with
    /// [`Error::AlreadyStarted`] (the retried request then awaits or
    /// inspects the first). In memory, ids are not checked.
    pub fn id(mut self, id: SagaId) -> SagaOptions {
        self.id = Some(id);
        self
    }

    /// After `deadline`, forward work stops and the saga rolls back (unless it
    /// is past its pivot). Overrides `#[saga(deadline = "..")]`. With a
    /// store, the moment it passes is logged with the saga: a saga recovered
    /// after a crash keeps it, and the time spent down counts.
    pub fn deadline(mut self, deadline: Duration) -> SagaOptions {
        self.deadline = Some(deadline);
        self
    }

    /// Overrides the retry policy of step `step`. With a store, the override
    /// is logged with the saga, and a saga recovered after a crash keeps it.
    /// (Faults and the idempotency check are for tests, and are not kept.)
    ///
    /// Starting the run fails if `step` names no step of the saga
    /// ([`Error::UnknownStep`], or [`Error::WrongKind`] for a compensation's
    /// name: use [`compensation_retry`](Self::compensation_retry)), or if
    /// the policy could never work ([`Error::InvalidRetryPolicy`]: zero
    /// attempts, or a timeout of zero).
    pub fn retry(mut self, step: impl Into<String>, policy: RetryPolicy) -> SagaOptions {
        self.retry.push((step.into(), Phase::Forward, policy));
        self
    }

    /// Overrides the retry policy of the compensation named `compensation`.
    ///
    /// Starting the run fails as for [`retry`](Self::retry); a step's name
    /// here is refused with [`Error::WrongKind`], which names the step's
    /// compensation.
    pub fn compensation_retry(
        mut self,
        compensation: impl Into<String>,
        policy: RetryPolicy,
    ) -> SagaOptions {
        self.retry
            .push((compensation.into(), Phase::Compensation, policy));
        self
    }

    /// Injects failures (for tests).
    pub fn faults(mut self, faults: Faults) -> SagaOptions {
        self.faults = faults;
        self
    }

    /// Runs every step and every compensation twice in a row with the same
    /// idempotency key (for tests): a saga whose services are idempotent
    /// under the key behaves exactly as if each ran once.
    ///
    /// What it detects: a step whose two calls both succeed with different
    /// outputs (compared as the log stores them, in JSON) fails permanently
    /// with an error saying so, for example ``step `bump` is not idempotent
    /// under its key: the first call returned 1, the second 2``. Like any
    /// permanent failure, this rolls the saga back before its pivot, and
    /// leaves it stuck past it; the report carries the message. If only one
    /// of the two calls succeeds, the second answer is kept, as on any retry
    /// (a first call that fails is not repeated).
    ///
    /// What it cannot detect: side effects. A step that answers the same
    /// twice but acts twice (charges a card twice, say), and any
    /// compensation (they return nothing to compare), pass. Check those
    /// effects in your test, with your own invariant after the run (your
    /// fake service counts its calls by key), or with
    /// [`explore_crash_points`](crate::testing::explore_crash_points), which
    /// also covers a step repeated after a crash.
    ///
    /// ```
    /// use saga::prelude::*;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// #[derive(Default)]
    /// pub struct Bump { n: AtomicU64 }
    ///
    /// #[saga(input = ())]
    /// impl Bump {
    ///     #[step(compensate = unbump)]
    ///     async fn bump(&self) -> Result<u64, StepError> {
    ///         Ok(self.n.fetch_add(1, Ordering::SeqCst) + 1) // a new answer each call
    ///     }
    ///     async fn unbump(&self) -> Result<(), StepError> { Ok(()) }
    ///     #[step(pivot)]
    ///     async fn commit(&self) -> Result<(), StepError> { Ok(()) }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga::Error> {
    /// let runtime = Runtime::builder().build().await?;
    /// runtime.register(Arc::new(Bump::default()));
    /// let options = SagaOptions::new().check_idempotency(true);
    /// let outcome = runtime.run_with::<Bump>((), options).await?;
    /// let report = outcome.report().expect("the check failed the step");
    /// assert!(report.to_string().contains(
    ///     "step `bump` is not idempotent under its key: the first call returned 1, the second 2"
    /// ));
    /// # Ok(()) }
    /// ```
    pub fn check_idempotency(mut self, on: bool) -> SagaOptions {
        self.repeat = on;
        self
    }

    /// Resolves names against the saga's definition.
    #[inline]
    pub(crate) fn plan(self, def: &'static Definition) -> Result<Plan, Error> {
        // Most runs override nothing: no name to look up, nothing to fail.
        if self.retry.is_empty() && self.faults.rules.is_empty() {
            return Ok(Plan {
                deadline: self.deadline.or(def.deadline()),
                repeat: self.repeat,
                ..Plan::default()
            });
        }
        self.plan_by_name(def)
    }

    fn plan_by_name(self, def: &'static Definition) -> Result<Plan, Error> {
        let mut retry = Vec::with_capacity(self.retry.len());
        for (name, phase, policy) in &self.retry {
            let instead = match phase {
                Phase::Forward => "compensation_retry",
                Phase::Compensation => "retry",
            };
            let index = lookup(def, name, *phase, instead)?;
            if let Some(reason) = policy.refusal() {
                return Err(Error::InvalidRetryPolicy {
                    saga: def.name(),
                    name: name.clone(),
                    is: *phase,
                    reason,
                });
            }
            retry.push((index, *phase, *policy));
        }
        let mut faults = Vec::with_capacity(self.faults.rules.len());
        for rule in &self.faults.rules {
            let instead = match (rule.phase, rule.retryable) {
                (Phase::Forward, true) => "fail_compensation",
                (Phase::Forward, false) => "fail_compensation_permanently",
                (Phase::Compensation, true) => "fail_step",
                (Phase::Compensation, false) => "fail_step_permanently",
            };
            let index = lookup(def, &rule.name, rule.phase, instead)?;
            faults.push((index, rule.clone()));
        }
        Ok(Plan {
            deadline: self.deadline.or(def.deadline()),
            retry,
            faults,
            repeat: self.repeat,
        })
    }
}

/// The step named `name` (for `phase` forward) or whose compensation is
/// named `name`. A name of the other kind is refused saying which option
/// takes it (`instead`), and what to name here.
fn lookup(
    def: &'static Definition,
    name: &str,
    phase: Phase,
    instead: &'static str,
) -> Result<usize, Error> {
    let (found, other) = match phase {
        Phase::Forward => (def.step_index(name), def.compensation_index(name)),
        Phase::Compensation => (def.compensation_index(name), def.step_index(name)),
    };
    if let Some(index) = found {
        return Ok(index);
    }
    Err(match other {
        Some(index) => {
            let step = &def.steps()[index];
            let (is, counterpart) = match phase {
                Phase::Forward => (Phase::Compensation, Some(step.name())),
                Phase::Compensation => (Phase::Forward, step.compensation()),
            };
            Error::WrongKind {
                saga: def.name(),
                name: name.to_string(),
                is,
                instead,
                counterpart,
            }
        }
        None => Error::UnknownStep {
            saga: def.name(),
            name: name.to_string(),
            known: def.known_names(),
        },
    })
}

/// Options resolved against a definition: names became step indices.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) deadline: Option<Duration>,
    retry: Vec<(usize, Phase, RetryPolicy)>,
    faults: Vec<(usize, FaultRule)>,
    pub(crate) repeat: bool,
}

impl Plan {
    /// The plan of a recovered run: the definition's, with the retry
    /// overrides its log kept. (Its deadline is kept as a moment, see
    /// `Runtime`.) An override of a step the saga no longer has is left
    /// out: the fingerprint matched, so this is a log damaged by hand.
    pub(crate) fn recovered(def: &'static Definition, retry: Vec<RetryOverride>) -> Plan {
        let mut plan = Plan {
            deadline: def.deadline(),
            ..Plan::default()
        };
        for o in retry {
            match def.step_index(&o.step) {
                Some(i) => plan.retry.push((i, o.phase, o.policy)),
                None => tracing::warn!(
                    saga = def.name(),
                    step = %o.step,
                    "the log overrides the retry policy of a step the saga does not have"
                ),
            }
        }
        plan
    }

    /// The run's retry overrides, by step, as the saga's log keeps them.
    pub(crate) fn overrides(&self, def: &Definition) -> Vec<RetryOverride> {
        self.retry
            .iter()
            .filter_map(|&(i, phase, policy)| {
                Some(RetryOverride {
                    step: def.steps().get(i)?.name().to_string(),
                    phase,
                    policy,
                })
            })
            .collect()
    }

    /// The retry policy of a step or compensation: the run's override, or
    /// the one its attribute gave. Inlined: asked once per step.
    #[inline]
    pub(crate) fn policy<'a>(
        &'a self,
        def: &'a Definition,
        step: usize,
        phase: Phase,
    ) -> &'a RetryPolicy {
        let overridden = match self.retry.as_slice() {
            [] => None,
            retry => retry
                .iter()
                .rev()
                .find(|(i, p, _)| *i == step && *p == phase),
        };
        match (overridden, phase) {
            (Some((_, _, policy)), _) => policy,
            (None, Phase::Forward) => def.steps()[step].retry_ref(),
            (None, Phase::Compensation) => def.steps()[step].compensation_retry_ref(),
        }
    }

    /// Inlined, and at once done for a run with no faults (every run but a
    /// test's): it is asked at every attempt.
    #[inline]
    pub(crate) fn fault(&self, step: usize, phase: Phase, attempt: u32) -> Option<StepError> {
        if self.faults.is_empty() {
            return None;
        }
        self.injected(step, phase, attempt)
    }

    fn injected(&self, step: usize, phase: Phase, attempt: u32) -> Option<StepError> {
        self.faults
            .iter()
            .find(|(i, rule)| *i == step && rule.phase == phase && rule.covers(attempt))
            .map(|(_, rule)| {
                StepError::new(
                    InjectedFault {
                        name: rule.name.clone(),
                        attempt,
                    },
                    rule.retryable,
                )
            })
    }
}

/// Failures to inject into a run, by step or compensation name and attempt
/// number, for tests. An injected failure replaces the call: the step or
/// compensation is not invoked for that attempt. A name the saga does not
/// have, or a compensation's name given to a `fail_step*` method (or a
/// step's to a `fail_compensation*` one), makes starting the run fail
/// ([`Error::UnknownStep`], [`Error::WrongKind`]).
///
/// ```
/// use saga_runtime::Faults;
/// let faults = Faults::new()
///     .fail_step("hold", 1..=2)            // first two attempts fail, retryably
///     .fail_step_permanently("capture")    // every attempt fails, permanently
///     .fail_compensation("release_hold", 1..); // the compensation never succeeds
/// assert!(!faults.is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
}

#[derive(Clone, Debug)]
struct FaultRule {
    name: String,
    phase: Phase,
    first: u32,
    last: u32,
    retryable: bool,
}

impl FaultRule {
    fn covers(&self, attempt: u32) -> bool {
        self.first <= attempt && attempt <= self.last
    }
}

impl Faults {
    /// No faults.
    pub fn new() -> Faults {
        Faults::default()
    }

    /// Whether no fault is planned.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Step `step` fails with a retryable error on the given attempts
    /// (counting from 1).
    pub fn fail_step(self, step: &str, attempts: impl RangeBounds<u32>) -> Faults {
        self.rule(step, Phase::Forward, attempts, true)
    }

    /// Step `step` fails with a permanent error on every attempt.
    pub fn fail_step_permanently(self, step: &str) -> Faults {
        self.rule(step, Phase::Forward, 1.., false)
    }

    /// The compensation named `compensation` fails with a retryable error on
    /// the given attempts.
    pub fn fail_compensation(self, compensation: &str, attempts: impl RangeBounds<u32>) -> Faults {
        self.rule(compensation, Phase::Compensation, attempts, true)
    }

    /// The compensation named `compensation` fails with a permanent error on
    /// every attempt.
    pub fn fail_compensation_permanently(self, compensation: &str) -> Faults {
        self.rule(compensation, Phase::Compensation, 1.., false)
    }

    fn rule(
        mut self,
        name: &str,
        phase: Phase,
        attempts: impl RangeBounds<u32>,
        retryable: bool,
    ) -> Faults {
        let first = match attempts.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.saturating_add(1),
            Bound::Unbounded => 1,
        };
        let last = match attempts.end_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.saturating_sub(1),
            Bound::Unbounded => u32::MAX,
        };
        self.rules.push(FaultRule {
            name: name.to_string(),
            phase,
            first,
            last,
            retryable,
        });
        self
    }
}

/// The error of an injected failure; find it in a report's error text.
///
/// ```
/// use saga::prelude::*;
/// use saga::Faults;
/// use std::sync::Arc;
///
/// pub struct Once;
/// #[saga(input = ())]
/// impl Once {
///     #[step(pivot)]
///     async fn only(&self) -> Result<(), StepError> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga::Error> {
/// let runtime = Runtime::builder().build().await?;
/// runtime.register(Arc::new(Once));
/// let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("only"));
/// let outcome = runtime.run_with::<Once>((), options).await?;
/// let report = outcome.report().expect("the step failed");
/// assert_eq!(report.failed_step(), Some("only"));
/// assert!(report.to_string().contains("injected fault in `only` (attempt 1)"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault {
    name: String,
    attempt: u32,
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "injected fault in `{}` (attempt {})",
            self.name, self.attempt
        )
    }
}

impl std::error::Error for InjectedFault {}
