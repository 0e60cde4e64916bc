//! Runs one saga to its outcome: steps forward in dependency order with
//! retries and timeouts, then either completion, or rollback of every
//! completed step in reverse order, or, when something cannot be undone or
//! finished, a stuck report.
//!
//! The in-memory path allocates nothing per step: the outputs live in the
//! generated state struct inside this future, steps are awaited in place (no
//! task per step), and events go to the listener only if there is one.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::log::{CauseSnapshot, Entry, FailureSnapshot, Record};
use crate::options::Plan;
use crate::store::{BoxFuture, Store, StoreError};
use crate::{
    Cause, Error, Event, EventKind, Failure, Listener, Outcome, Phase, Report, RetryPolicy, Saga,
    SagaId, StepContext, StepError, StepKind,
};

/// Records a transition (see [`Run::record`]) and, if the log must have it
/// before the run goes on, waits until it is durable. A macro rather than an
/// `async fn` so that the in-memory path adds no state to the saga's future.
macro_rules! note {
    ($run:expr, $kind:expr) => {
        note!($run, $kind, None)
    };
    ($run:expr, $kind:expr, $output:expr) => {
        // Bound first: a temporary of the scrutinee would live across the
        // await, and take room in the saga's future.
        let durable = $run.record($kind, $output)?;
        if let Some(durable) = durable {
            durable.await.map_err(Error::Store)?;
        }
    };
}

/// Asks a running saga to stop going forward. Shared by the handle and the
/// task; cheap to check.
#[derive(Debug, Default)]
pub(crate) struct CancelSignal {
    flag: AtomicBool,
    notify: Notify,
}

impl CancelSignal {
    pub(crate) fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Everything one run needs, borrowed from the task that owns it.
pub(crate) struct Run<'r, S: Saga> {
    pub(crate) saga: &'r S,
    pub(crate) input: &'r S::Input,
    pub(crate) id: SagaId,
    pub(crate) plan: &'r Plan,
    pub(crate) listener: Option<&'r dyn Listener>,
    pub(crate) cancel: Option<&'r CancelSignal>,
    pub(crate) deadline: Option<Instant>,
    /// The durable log, if the runtime has a store.
    pub(crate) journal: Option<Journal<'r>>,
    /// The saga's span: the parent of every attempt's span and of the
    /// run's own events, and entered around an attempt whose own span no
    /// subscriber wants. It is named as their parent rather than entered
    /// around the whole run (`Instrument`), which would move the saga's
    /// future into a wrapper and enter the span on every poll: a tenth of
    /// an in-memory saga's cost.
    pub(crate) span: tracing::Span,
}

/// Appends a run's records to the store, numbering them.
pub(crate) struct Journal<'r> {
    store: &'r dyn Store,
    next_seq: AtomicU64,
}

impl<'r> Journal<'r> {
    /// A journal whose next record is number `next_seq`.
    pub(crate) fn new(store: &'r dyn Store, next_seq: u64) -> Journal<'r> {
        Journal {
            store,
            next_seq: AtomicU64::new(next_seq),
        }
    }

    /// Appends `entry` (stores order appends by call); returns the future
    /// that resolves once it is durable, if the caller must wait for that.
    fn append(
        &self,
        id: SagaId,
        entry: Entry,
        wait: bool,
    ) -> Option<BoxFuture<'r, Result<(), StoreError>>> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let durable = self.store.append(vec![Record::new(id, seq, entry)]);
        wait.then_some(durable)
    }
}

/// Where a run starts: from nothing, or where a recovered log left off.
/// The rare variants are boxed: a position is part of every saga's future.
pub(crate) enum Position {
    /// Steps `0..next` completed; step `next` runs next, from `attempt`.
    Forward { next: usize, attempt: u32 },
    /// A recovered run goes on forward: each unfinished step from the
    /// attempt after its last failed one. A step an attempt of which may
    /// have taken effect unseen (cut off by a timeout or a crash) is not
    /// stopped by cancellation or the deadline before it answers (see
    /// `forward`).
    Resume(Box<ResumeAt>),
    /// A step gave up but what follows was not recorded yet: roll back,
    /// or, past the pivot or if the step's outcome is unknown, become stuck.
    Failed(Box<GaveUp>),
    /// Rollback was decided and is under way.
    Rollback(Box<RollbackAt>),
}

/// A step that gave up, as its log tells.
pub(crate) struct GaveUp {
    /// The step.
    pub(crate) step: usize,
    /// How it failed.
    pub(crate) failure: Failure,
    /// Its outcome is unknown and it may not be rolled back without it
    /// (see [`unresolved_if_unknown`]): the saga is stuck.
    pub(crate) unresolved: bool,
}

/// Where a recovered run goes on forward.
pub(crate) struct ResumeAt {
    /// The first step not completed.
    pub(crate) next: usize,
    /// Per step, the attempt to start from.
    pub(crate) attempts: Vec<u32>,
    /// Per step, whether an earlier attempt's outcome is unknown.
    pub(crate) unknown: Vec<bool>,
    /// A member of the group at `next` that gave up before the crash, while
    /// siblings' attempts may have acted unseen: those (`rerun`, by step)
    /// are run again until they answer, and then the group stops as the
    /// member that gave up says.
    pub(crate) gave_up: Option<GaveUp>,
    /// See `gave_up`; empty without one.
    pub(crate) rerun: Vec<bool>,
}

/// Where a recovered rollback stands.
pub(crate) struct RollbackAt {
    /// Per step, whether it is already undone.
    pub(crate) compensated: Vec<bool>,
    /// Why the saga rolls back.
    pub(crate) cause: Cause,
    /// Per step, the attempt its compensation starts from.
    pub(crate) attempts: Vec<u32>,
    /// Per step, whether its compensation already exhausted its policy.
    pub(crate) exhausted: Vec<bool>,
    /// The exhausted compensation the saga ends stuck with (by step), once
    /// the rest of its group has finished.
    pub(crate) gave_up: Option<(usize, Failure)>,
}

impl Position {
    pub(crate) const FRESH: Position = Position::Forward {
        next: 0,
        attempt: 1,
    };
}

/// How a retry loop ended without success.
///
/// Returned boxed, as is [`Halt`]: they are the cold path, and a failure
/// carries a [`Failure`] or an [`Error`] (tens of bytes) that would widen every
/// step's result, written and read through memory at each await, and the
/// slot the saga's future keeps for it. Boxed, the happy path moves a
/// pointer's width (see BENCHMARKS.md).
enum Stop {
    /// The step or compensation failed for good.
    Failed(Failure),
    /// The step exhausted its policy while its outcome was unknown (an
    /// attempt timed out, or was running at a crash, and none answered
    /// since): rolling back could orphan an effect only its output could
    /// undo, so the saga is stuck, for a person to resolve.
    Unresolved(Failure),
    /// Cancellation or the deadline interrupted a wait between attempts.
    Interrupted(Cause),
    /// The log could not be written: the run halts where it is, and
    /// recovery resumes it from the log.
    Journal(Error),
    /// A member of a concurrent group stopped retrying because another
    /// stopped for good: the group's outcome is the other's.
    Withdrawn,
}

impl Stop {
    /// A step gave up: unresolved if its outcome is unknown and it may not
    /// be rolled back without it (see [`unresolved_if_unknown`]).
    fn gave_up(failure: Failure, unresolved: bool) -> Stop {
        if unresolved {
            Stop::Unresolved(failure)
        } else {
            Stop::Failed(failure)
        }
    }
}

impl From<Error> for Box<Stop> {
    fn from(e: Error) -> Box<Stop> {
        Box::new(Stop::Journal(e))
    }
}

/// Why forward work stopped short of completing the saga.
enum Halt {
    /// The log could not be written: the run halts where it is, and
    /// recovery resumes it from the log.
    Journal(Error),
    /// Roll back every completed step, recording the decision first.
    RollBack(Cause),
    /// A step past the pivot failed for good, or one whose outcome is
    /// unknown ran out of attempts: the saga is stuck.
    Stuck(Failure),
    /// A rollback the log had already decided goes on.
    Resume(Box<RollbackAt>),
}

impl Halt {
    /// Where forward work goes after `stop`. A step that failed for good
    /// before the pivot rolls the saga back; after it, the saga is stuck
    /// (what is done cannot be undone), as it is on an unresolved step.
    fn of(stop: Stop, past_pivot: bool) -> Halt {
        match stop {
            Stop::Journal(e) => Halt::Journal(e),
            Stop::Failed(failure) if past_pivot => Halt::Stuck(failure),
            Stop::Failed(failure) => Halt::RollBack(Cause::StepFailed(failure)),
            Stop::Unresolved(failure) => Halt::Stuck(failure),
            Stop::Interrupted(cause) => Halt::RollBack(cause),
            Stop::Withdrawn => unreachable!("a group returns a member's own stop"),
        }
    }
}

impl From<Error> for Box<Halt> {
    fn from(e: Error) -> Box<Halt> {
        Box::new(Halt::Journal(e))
    }
}

impl<S: Saga> Run<'_, S> {
    /// Runs the saga from `position` to its outcome.
    ///
    /// Written as a function returning an `async move` block rather than an
    /// `async fn`: an `async fn` copies its arguments into locals, and the
    /// state struct would then take room twice in every saga's future.
    /// Whatever does not complete ends in one boxed cold future
    /// ([`end`](Self::end)), so that rollback's and stuck's locals take no
    /// room in the happy path's state machine.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` would hold its arguments twice"
    )]
    pub(crate) fn run_from(
        &self,
        mut state: S::State,
        position: Position,
    ) -> impl Future<Output = Result<Outcome<S::Outputs>, Error>> + '_ {
        async move {
            // Each arm awaits on its own, so that nothing of the match
            // outlives it in the state machine.
            let halt = match position {
                Position::Forward { next, attempt } => {
                    self.forward_from(&mut state, next, attempt, None).await
                }
                Position::Resume(at) => {
                    let (next, attempt) = (at.next, at.attempts.get(at.next).copied());
                    let attempt = attempt.unwrap_or(1);
                    self.forward_from(&mut state, next, attempt, Some(at)).await
                }
                Position::Failed(failed) => {
                    let GaveUp {
                        step,
                        failure,
                        unresolved,
                    } = *failed;
                    let past_pivot = S::definition().steps()[..step]
                        .iter()
                        .any(|s| s.kind() == StepKind::Pivot);
                    let stop = Stop::gave_up(failure, unresolved);
                    Err(Box::new(Halt::of(stop, past_pivot)))
                }
                Position::Rollback(at) => Err(Box::new(Halt::Resume(at))),
            };
            let halt = match halt {
                Ok(()) => return Ok(Outcome::Completed(S::__outputs(state))),
                Err(halt) => *halt,
            };
            if let Halt::Journal(e) = halt {
                return Err(e);
            }
            Box::pin(self.end(&state, halt)).await
        }
    }

    /// Runs the steps from `first` (at `attempt`) to the last, storing
    /// their outputs in `state`; stops at the first that does not succeed,
    /// or at cancellation or the deadline before the pivot.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` would hold its arguments twice"
    )]
    fn forward_from(
        &self,
        state: &mut S::State,
        first: usize,
        mut attempt: u32,
        mut resume: Option<Box<ResumeAt>>,
    ) -> impl Future<Output = Result<(), Box<Halt>>> {
        async move {
            if first == 0 {
                note!(self, EventKind::Started);
            }
            let steps = S::definition().steps();
            let mut past_pivot = steps[..first].iter().any(|s| s.kind() == StepKind::Pivot);
            // Start at the beginning of the group holding `first`: its members
            // that completed before a crash are skipped below.
            let mut i = first;
            while i > 0 && i < steps.len() && steps[i - 1].group() == steps[first].group() {
                i -= 1;
            }
            while i < steps.len() {
                let end = steps[i..]
                    .iter()
                    .position(|s| s.group() != steps[i].group())
                    .map_or(steps.len(), |n| i + n);
                let at = resume.as_deref();
                // Asked only once a stop is requested: rarely. Cancellation
                // and the deadline stop forward work here, but wait for a
                // recovered step whose last attempt may have taken effect
                // unseen: rolling back without its output would orphan that
                // effect (see `forward`).
                if let Some(cause) = self.stop_requested()
                    && !past_pivot
                    && !(i..end).any(|j| {
                        unknown_of(at, j)
                            && unresolved_if_unknown(S::definition(), j, past_pivot)
                            && !S::__has_output(state, j)
                    })
                {
                    return Err(Box::new(Halt::RollBack(cause)));
                }
                // A member that gave up before a crash (recovered) implies a
                // sibling to rerun, so its group has several members.
                let stop = if end - i == 1 && at.is_none_or(|at| at.gave_up.is_none()) {
                    // One step: awaited in place, no allocation.
                    match self
                        .forward(
                            i,
                            state,
                            past_pivot,
                            attempt_of(at, i, first, attempt),
                            unknown_of(at, i),
                            None,
                        )
                        .await
                    {
                        Ok(output) => {
                            S::__store(state, output);
                            None
                        }
                        Err(stop) => Some(stop),
                    }
                } else {
                    let attempt_of = |j| attempt_of(at, j, first, attempt);
                    let unknown_of = |j| unknown_of(at, j);
                    let gave_up = || at.and_then(|at| at.gave_up.as_ref());
                    let rerun = gave_up().and(at).map(|at| &at.rerun[..]);
                    let group = self.forward_group(
                        i..end,
                        state,
                        past_pivot,
                        attempt_of,
                        unknown_of,
                        rerun,
                    );
                    let stop = Box::pin(group).await;
                    match gave_up() {
                        // One the rerun left unresolved decides, and a log
                        // that cannot be written halts the run; otherwise
                        // the member that gave up decides.
                        Some(gave_up)
                            if !stop.as_deref().is_some_and(|stop| {
                                matches!(stop, Stop::Unresolved(_) | Stop::Journal(_))
                            }) =>
                        {
                            let failure = gave_up.failure.clone();
                            Some(Box::new(Stop::gave_up(failure, gave_up.unresolved)))
                        }
                        _ => stop,
                    }
                };
                if let Some(stop) = stop {
                    return Err(Box::new(Halt::of(*stop, past_pivot)));
                }
                past_pivot |= steps[i..end].iter().any(|s| s.kind() == StepKind::Pivot);
                attempt = 1;
                resume = None;
                i = end;
            }
            note!(self, EventKind::Completed);
            Ok(())
        }
    }

    /// Ends a run that will not complete: rolls back, or reports it stuck.
    async fn end(&self, state: &S::State, halt: Halt) -> Result<Outcome<S::Outputs>, Error> {
        match halt {
            Halt::Journal(e) => Err(e),
            Halt::RollBack(cause) => self.roll_back(state, cause, None, true).await,
            Halt::Stuck(failure) => {
                let cause = Cause::StepFailed(failure.clone());
                self.stuck(cause, Vec::new(), failure).await
            }
            Halt::Resume(at) => {
                let cause = at.cause.clone();
                self.roll_back(state, cause, Some(&at), false).await
            }
        }
    }

    /// Runs the steps of one group at the same time, on this task, and
    /// stores the outputs of those that succeed. Once one member stops for
    /// good, the others make no new attempt where they could be stopped
    /// (see [`forward`](Self::forward)), as the saga will roll back; an
    /// attempt running finishes, so that nothing is left half-way. A member
    /// left unresolved decides the group's stop (rolling back could orphan
    /// its effect); otherwise the first stop, in step order, of those not
    /// withdrawn. `rerun`, when recovering a group one member of which gave
    /// up before the crash, names the members to run: those whose attempt
    /// may have acted unseen; they start withdrawn, so they run until they
    /// answer and no further.
    async fn forward_group(
        &self,
        steps: std::ops::Range<usize>,
        state: &mut S::State,
        past_pivot: bool,
        attempt_of: impl Fn(usize) -> u32,
        unknown_of: impl Fn(usize) -> bool,
        rerun: Option<&[bool]>,
    ) -> Option<Box<Stop>> {
        let stopped = CancelSignal::default();
        if rerun.is_some() {
            stopped.cancel();
        }
        let runs_again =
            |j: usize| rerun.is_none_or(|rerun| rerun.get(j).copied().unwrap_or(false));
        let results = {
            let (shared, stopped): (&S::State, _) = (state, &stopped);
            let runs = steps
                .filter(|&j| !S::__has_output(shared, j) && runs_again(j))
                .map(|j| {
                    let (attempt, unknown) = (attempt_of(j), unknown_of(j));
                    Box::pin(async move {
                        let group = Some(stopped);
                        let result = self
                            .forward(j, shared, past_pivot, attempt, unknown, group)
                            .await;
                        if result
                            .as_ref()
                            .is_err_and(|s| !matches!(**s, Stop::Withdrawn))
                        {
                            stopped.cancel();
                        }
                        result
                    })
                })
                .collect();
            JoinAll::new(runs).await
        };
        let (mut first_stop, mut unresolved) = (None, None);
        for result in results {
            match result {
                Ok(output) => S::__store(state, output),
                Err(stop) => match *stop {
                    Stop::Withdrawn => {}
                    Stop::Unresolved(_) => {
                        unresolved.get_or_insert(stop);
                    }
                    _ => {
                        first_stop.get_or_insert(stop);
                    }
                },
            }
        }
        unresolved.or(first_stop)
    }

    /// Runs step `i` with its retry policy, from attempt `attempt`;
    /// `unknown` says an earlier attempt may have taken effect unseen. A
    /// member of a concurrent group gets the group's signal that another
    /// member stopped for good.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` would hold its arguments twice"
    )]
    fn forward(
        &self,
        i: usize,
        state: &S::State,
        past_pivot: bool,
        mut attempt: u32,
        mut unknown: bool,
        group: Option<&CancelSignal>,
    ) -> impl Future<Output = Result<S::StepOutput, Box<Stop>>> {
        async move {
            let def = S::definition();
            // Looked up where used, not kept: a name held across the awaits
            // is stored in the saga's future and read back at each use, which
            // measured slower than the lookup.
            let name = || S::definition().steps()[i].name();
            let policy = self.plan.policy(def, i, Phase::Forward);
            loop {
                let started = EventKind::StepStarted {
                    step: name(),
                    attempt,
                };
                note!(self, started);
                let span = tracing::debug_span!(parent: &self.span, "step", step = name(), attempt);
                // `if let`, not `match`: its scrutinee is gone before the
                // `else` awaits, and takes no room in the future.
                let result = if let Some(injected) = self.plan.fault(i, Phase::Forward, attempt) {
                    Err(injected)
                } else {
                    let cx = StepContext::new(self.id, def.name(), name(), Phase::Forward, attempt);
                    let call = S::__run_step(self.saga, i, self.input, state, &cx);
                    let result = guarded(policy, self.innermost(&span), call).await;
                    match result {
                        // The idempotency check (a test mode): boxed, so that
                        // its second call and comparison take no room in the
                        // saga's future.
                        Ok(first) if self.plan.repeat => {
                            Box::pin(self.call_again(i, state, &cx, policy, &span, first)).await
                        }
                        result => result,
                    }
                };
                let error = match result {
                    Ok(output) => {
                        let succeeded = EventKind::StepSucceeded {
                            step: name(),
                            attempt,
                        };
                        let durable = self.record(succeeded, Some(&output))?;
                        // After the saga's last step, the `Completed` record
                        // (or, if a concurrent member failed, the rollback
                        // decision) is appended and waited for before anything
                        // acts on this output; stores order appends, so that
                        // wait makes the output durable too, one commit sooner.
                        let last = i + 1 == def.steps().len();
                        if let Some(durable) = durable.filter(|_| !last) {
                            durable.await.map_err(Error::Store)?;
                        }
                        return Ok(output);
                    }
                    Err(error) => error,
                };
                // An attempt cut off by its timeout (or by a crash) may have
                // taken effect: its outcome is unknown, and rolling back could
                // orphan that effect (its compensation needs the output). A later
                // retryable error (the service was unavailable, say) says nothing
                // about it. So cancellation and the deadline do not stop such a
                // step that changes things: it is retried, under the same
                // idempotency key, until it succeeds or refuses for good, within
                // its attempts; if they run out first, the saga is stuck, for a
                // person to find out whether the effect happened.
                unknown |= error.is_timeout();
                let unresolved =
                    error.is_retryable() && unresolved_if_unknown(def, i, past_pivot) && unknown;
                let exhausted = !policy.allows_attempt(attempt + 1);
                let will_retry = error.is_retryable() && !exhausted;
                tracing::warn!(parent: self.innermost(&span), error = %error, will_retry, "step failed");
                let failed = EventKind::StepFailed {
                    step: name(),
                    attempt,
                    error: &error,
                    will_retry,
                    outcome_unknown: unknown,
                };
                note!(self, failed);
                if !will_retry {
                    let failure = failure(name(), None, Phase::Forward, &error, attempt);
                    return Err(Box::new(Stop::gave_up(failure, unresolved)));
                }
                let delay = policy.backoff_policy().delay(attempt, self.id.entropy());
                // Boxed: retries are the cold path, and timers are large; the
                // happy path's future stays small.
                let interruptible = !(past_pivot || unresolved);
                if let Some(stop) = Box::pin(self.wait(delay, interruptible, group)).await {
                    return Err(Box::new(stop));
                }
                attempt += 1;
            }
        }
    }

    /// Compensates every completed step, group by group, last first: the
    /// members of a concurrent group at the same time (they are
    /// independent), each alone otherwise; then reports. A compensation that
    /// fails for good makes the saga stuck once the rest of its group has
    /// finished, so that nothing is left half-way. `resumed` is where a
    /// recovered rollback stood (none: from the start). `decide` records the
    /// decision to roll back first (false when resuming one already logged).
    async fn roll_back(
        &self,
        state: &S::State,
        cause: Cause,
        resumed: Option<&RollbackAt>,
        decide: bool,
    ) -> Result<Outcome<S::Outputs>, Error> {
        let def = S::definition();
        let steps = def.steps();
        let (done, attempts, exhausted): (&[bool], &[u32], &[bool]) = match resumed {
            Some(at) => (&at.compensated, &at.attempts, &at.exhausted),
            None => (&[], &[], &[]),
        };
        // Borrowed, and what fails here is only bound once its group is
        // done: neither lives across an await, in the rollback's future.
        let recovered_gave_up = resumed.and_then(|at| at.gave_up.as_ref());
        if decide {
            tracing::info!(parent: &self.span, %cause, "rolling back");
            note!(self, EventKind::RollbackStarted { cause: &cause });
        }
        let pending = |i: usize| {
            steps[i].kind() == StepKind::Compensatable
                && !done.get(i).copied().unwrap_or(false)
                && !exhausted.get(i).copied().unwrap_or(false)
                && S::__has_output(state, i)
        };
        let attempt_of = |i: usize| attempts.get(i).copied().unwrap_or(1);
        // Room for every step at once: one allocation, however many steps.
        let mut compensated = Vec::with_capacity(steps.len());
        compensated.extend(names_of(def, done));
        let mut end = steps.len();
        while end > 0 {
            let mut start = end - 1;
            while start > 0 && steps[start - 1].group() == steps[end - 1].group() {
                start -= 1;
            }
            let (first, second) = {
                let mut members = (start..end).rev().filter(|&i| pending(i));
                (members.next(), members.next())
            };
            let results: Vec<(usize, Result<(), Box<Stop>>)> = match (first, second) {
                (None, _) => Vec::new(),
                (Some(i), None) => {
                    // One compensation: awaited in place, no allocation.
                    match self.compensate(i, state, attempt_of(i)).await {
                        Ok(()) => {
                            compensated.push(steps[i].name());
                            Vec::new()
                        }
                        Err(stop) => vec![(i, Err(stop))],
                    }
                }
                (Some(_), Some(_)) => {
                    let members: Vec<usize> = (start..end).rev().filter(|&i| pending(i)).collect();
                    let runs = members
                        .iter()
                        .map(|&i| Box::pin(self.compensate(i, state, attempt_of(i))))
                        .collect();
                    let results = JoinAll::new(runs).await;
                    members.into_iter().zip(results).collect()
                }
            };
            let mut gave_up = recovered_gave_up.filter(|(k, _)| *k >= start).cloned();
            for (i, result) in results {
                let Err(stop) = result else {
                    compensated.push(steps[i].name());
                    continue;
                };
                match *stop {
                    Stop::Failed(failure) => {
                        gave_up.get_or_insert((i, failure));
                    }
                    Stop::Journal(e) => return Err(e),
                    Stop::Interrupted(_) | Stop::Withdrawn | Stop::Unresolved(_) => {
                        unreachable!("compensations are never interrupted, nor unresolved")
                    }
                }
            }
            if let Some((_, failure)) = gave_up {
                last_first(def, &mut compensated, resumed.is_some());
                return self.stuck(cause, compensated, failure).await;
            }
            end = start;
        }
        last_first(def, &mut compensated, resumed.is_some());
        note!(self, EventKind::Compensated);
        Ok(Outcome::Compensated(Report {
            saga_id: self.id,
            saga: def.name(),
            cause,
            compensated,
            stuck: None,
        }))
    }

    /// Runs the compensation of step `i` with its retry policy. Never
    /// interrupted: cancellation and the deadline do not apply to undoing.
    async fn compensate(
        &self,
        i: usize,
        state: &S::State,
        mut attempt: u32,
    ) -> Result<(), Box<Stop>> {
        let def = S::definition();
        let step = &def.steps()[i];
        let (name, compensation) = (step.name(), step.compensation());
        let policy = self.plan.policy(def, i, Phase::Compensation);
        loop {
            let started = EventKind::CompensationStarted {
                step: name,
                attempt,
            };
            note!(self, started);
            let span =
                tracing::debug_span!(parent: &self.span, "compensation", step = name, attempt);
            let result = match self.plan.fault(i, Phase::Compensation, attempt) {
                Some(injected) => Err(injected),
                None => {
                    let cx =
                        StepContext::new(self.id, def.name(), name, Phase::Compensation, attempt);
                    let mut result = Ok(());
                    for _ in 0..self.repetitions() {
                        let call = S::__compensate(self.saga, i, self.input, state, &cx);
                        result = guarded(policy, self.innermost(&span), call).await;
                        if result.is_err() {
                            break;
                        }
                    }
                    result
                }
            };
            let error = match result {
                Ok(()) => {
                    let succeeded = EventKind::CompensationSucceeded {
                        step: name,
                        attempt,
                    };
                    note!(self, succeeded);
                    return Ok(());
                }
                Err(error) => error,
            };
            let will_retry = error.is_retryable() && policy.allows_attempt(attempt + 1);
            tracing::warn!(parent: self.innermost(&span), error = %error, will_retry, "compensation failed");
            let failed = EventKind::CompensationFailed {
                step: name,
                attempt,
                error: &error,
                will_retry,
            };
            note!(self, failed);
            if !will_retry {
                return Err(Box::new(Stop::Failed(failure(
                    name,
                    compensation,
                    Phase::Compensation,
                    &error,
                    attempt,
                ))));
            }
            let delay = policy.backoff_policy().delay(attempt, self.id.entropy());
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn stuck(
        &self,
        cause: Cause,
        compensated: Vec<&'static str>,
        failure: Failure,
    ) -> Result<Outcome<S::Outputs>, Error> {
        tracing::error!(parent: &self.span, %failure, "saga stuck");
        note!(self, EventKind::Stuck { failure: &failure });
        Ok(Outcome::Stuck(Report {
            saga_id: self.id,
            saga: S::definition().name(),
            cause,
            compensated,
            stuck: Some(failure),
        }))
    }

    /// The span an attempt runs in: its own, or, when no subscriber wants
    /// attempt spans (they are DEBUG; an INFO filter is usual), the saga's,
    /// so that what the step logs still says which saga it belongs to.
    fn innermost<'a>(&'a self, attempt: &'a tracing::Span) -> &'a tracing::Span {
        if attempt.is_disabled() {
            &self.span
        } else {
            attempt
        }
    }

    /// The idempotency check's second call of step `i`, whose first call
    /// succeeded with `first`: the same call again, under the same key.
    /// The second answer is the one kept; but if both succeed and their
    /// outputs (as the log would store them) differ, the step is not
    /// idempotent under its key, and fails permanently saying so.
    async fn call_again(
        &self,
        i: usize,
        state: &S::State,
        cx: &StepContext,
        policy: &RetryPolicy,
        span: &tracing::Span,
        first: S::StepOutput,
    ) -> Result<S::StepOutput, StepError> {
        let again = S::__run_step(self.saga, i, self.input, state, cx);
        // A failing second call is kept as it is: it is what a retry could
        // meet (a service unavailable for a moment), and the policy decides.
        let second = guarded(policy, self.innermost(span), again).await?;
        let encode = |output| S::__encode_step_output(output).map_err(|e| e.to_string());
        let (was, is) = (encode(&first), encode(&second));
        if was == is {
            return Ok(second);
        }
        Err(crate::error::permanent(NotIdempotent::new(
            S::definition().steps()[i].name(),
            &was,
            &is,
        )))
    }

    fn repetitions(&self) -> u32 {
        if self.plan.repeat { 2 } else { 1 }
    }

    /// Waits `delay` before a retry; if `interruptible`, cancellation or
    /// the deadline cut it short (returning why).
    async fn wait(
        &self,
        delay: std::time::Duration,
        interruptible: bool,
        group: Option<&CancelSignal>,
    ) -> Option<Stop> {
        if !interruptible {
            tokio::time::sleep(delay).await;
            return None;
        }
        let withdrawn = async {
            match group {
                Some(signal) => signal.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            cause = self.stopped() => Some(Stop::Interrupted(cause)),
            () = withdrawn => Some(Stop::Withdrawn),
            () = tokio::time::sleep(delay) => None,
        }
    }

    /// Whether cancellation or the deadline asks forward work to stop now.
    fn stop_requested(&self) -> Option<Cause> {
        if self.cancel.is_some_and(CancelSignal::is_cancelled) {
            return Some(Cause::Cancelled);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(Cause::DeadlineExceeded);
        }
        None
    }

    /// Resolves when cancellation or the deadline asks forward work to stop.
    async fn stopped(&self) -> Cause {
        let cancelled = async {
            match self.cancel {
                Some(signal) => signal.wait().await,
                None => std::future::pending().await,
            }
        };
        let deadline = async {
            match self.deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = cancelled => Cause::Cancelled,
            () = deadline => Cause::DeadlineExceeded,
        }
    }

    /// Records a transition: tells the listener and, with a store, appends
    /// the log entry; returns what to wait for before the run may act on it
    /// (see [`note!`]). Synchronous, so the entry never lives in the saga's
    /// future, which stays small for the in-memory path. `output` is the
    /// step's output, logged with `StepSucceeded`.
    ///
    /// Inlined, and at once done when nothing observes the run (in memory,
    /// no listener): the call and its result, wide for its error, cost more
    /// than the check.
    #[inline]
    fn record(
        &self,
        kind: EventKind<'_>,
        output: Option<&S::StepOutput>,
    ) -> Result<Option<BoxFuture<'_, Result<(), StoreError>>>, Error> {
        if self.listener.is_none() && self.journal.is_none() {
            return Ok(None);
        }
        self.record_observed(kind, output)
    }

    fn record_observed(
        &self,
        kind: EventKind<'_>,
        output: Option<&S::StepOutput>,
    ) -> Result<Option<BoxFuture<'_, Result<(), StoreError>>>, Error> {
        if let Some(listener) = self.listener {
            // In the saga's span, as whatever the listener logs belongs there.
            let _entered = self.span.enter();
            listener.on_event(&Event {
                saga_id: self.id,
                saga: S::definition().name(),
                kind,
            });
        }
        let Some(journal) = &self.journal else {
            return Ok(None);
        };
        let Some(entry) = entry_of::<S>(self.id, &kind, output)? else {
            return Ok(None);
        };
        // The write-ahead points: the run acts on these only once they are
        // durable (an output before anything uses it, the decision to roll
        // back before the first compensation, a compensation's success
        // before the next one's effects, the end before it is reported).
        // Starts and failed attempts need not wait: nothing acts on them,
        // and the next record waited for makes them durable too.
        let wait = !matches!(
            kind,
            EventKind::StepStarted { .. }
                | EventKind::StepFailed { .. }
                | EventKind::CompensationStarted { .. }
                | EventKind::CompensationFailed { .. }
        );
        Ok(journal.append(self.id, entry, wait))
    }
}

/// The attempt step `j` starts from: where a recovered run left it, or
/// `attempt` for the step a run starts at, or the first.
fn attempt_of(resume: Option<&ResumeAt>, j: usize, first: usize, attempt: u32) -> u32 {
    match resume {
        Some(at) => at.attempts.get(j).copied().unwrap_or(1),
        None if j == first => attempt,
        None => 1,
    }
}

/// Whether an earlier attempt of step `j` (before a crash) may have taken
/// effect unseen.
fn unknown_of(resume: Option<&ResumeAt>, j: usize) -> bool {
    resume.is_some_and(|at| at.unknown.get(j).copied().unwrap_or(false))
}

/// Whether step `i`, if its outcome is unknown (an attempt may have taken
/// effect unseen), may not be rolled back without its answer: it changes
/// things (not readonly) and the saga can still roll back (not past the
/// pivot). The live run and the replay of its log both ask this.
pub(crate) fn unresolved_if_unknown(def: &crate::Definition, i: usize, past_pivot: bool) -> bool {
    !past_pivot && def.steps()[i].kind() != StepKind::Readonly
}

/// Orders the report's undone steps last step first. Only a resumed
/// rollback needs it: it lists the steps undone before the crash first,
/// and in a concurrent group a step may have been undone before a later one.
fn last_first(def: &crate::Definition, names: &mut [&'static str], resumed: bool) {
    if resumed {
        names.sort_by_key(|name| {
            std::cmp::Reverse(def.steps().iter().position(|s| s.name() == *name))
        });
    }
}

/// The names of the steps marked in `done`, in the order rollback undid
/// them (reverse).
fn names_of<'d>(
    def: &'d crate::Definition,
    done: &'d [bool],
) -> impl Iterator<Item = &'static str> + 'd {
    (0..done.len().min(def.steps().len()))
        .rev()
        .filter(|&i| done[i])
        .map(|i| def.steps()[i].name())
}

/// Polls a set of futures of one type, in order, until all are done,
/// without spawning: the steps of a concurrent group run on the saga's own
/// task.
struct JoinAll<F: Future> {
    futures: Vec<Option<Pin<Box<F>>>>,
    outputs: Vec<Option<F::Output>>,
}

impl<F: Future> JoinAll<F> {
    fn new(futures: Vec<Pin<Box<F>>>) -> JoinAll<F> {
        let outputs = futures.iter().map(|_| None).collect();
        JoinAll {
            futures: futures.into_iter().map(Some).collect(),
            outputs,
        }
    }
}

impl<F: Future> Unpin for JoinAll<F> {}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut pending = false;
        for (slot, output) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(this.outputs.iter_mut().filter_map(Option::take).collect())
    }
}

/// The log entry for a transition (`None` for those not logged).
fn entry_of<S: Saga>(
    id: SagaId,
    kind: &EventKind<'_>,
    output: Option<&S::StepOutput>,
) -> Result<Option<Entry>, Error> {
    Ok(Some(match *kind {
        EventKind::Started => return Ok(None),
        EventKind::StepStarted { step, attempt } => Entry::StepStarted {
            step: step.to_string(),
            attempt,
        },
        EventKind::StepSucceeded {
            step: name,
            attempt,
        } => Entry::StepSucceeded {
            step: name.to_string(),
            attempt,
            output: output
                .map_or(Ok(serde_json::Value::Null), S::__encode_step_output)
                .map_err(|e| {
                    Error::Store(StoreError::Encode {
                        saga: id,
                        message: format!("the output of step `{name}`: {e}"),
                    })
                })?,
        },
        EventKind::StepFailed {
            step,
            attempt,
            error,
            will_retry,
            outcome_unknown,
        } => Entry::StepFailed {
            step: step.to_string(),
            attempt,
            error: error.chain_string(),
            retryable: error.is_retryable(),
            will_retry,
            // What the run knows, not only this error: a step cut off by a
            // crash and then refused as unavailable is still unknown, and
            // a replay after another crash must know it too.
            outcome_unknown,
        },
        EventKind::RollbackStarted { cause } => Entry::RollbackStarted {
            cause: CauseSnapshot::of(cause),
        },
        EventKind::CompensationStarted { step, attempt } => Entry::CompensationStarted {
            step: step.to_string(),
            attempt,
        },
        EventKind::CompensationSucceeded { step, attempt } => Entry::CompensationSucceeded {
            step: step.to_string(),
            attempt,
        },
        EventKind::CompensationFailed {
            step,
            attempt,
            error,
            will_retry,
        } => Entry::CompensationFailed {
            step: step.to_string(),
            attempt,
            error: error.chain_string(),
            retryable: error.is_retryable(),
            will_retry,
        },
        EventKind::Completed => Entry::Completed,
        EventKind::Compensated => Entry::Compensated,
        EventKind::Stuck { failure } => Entry::Stuck {
            failure: FailureSnapshot::of(failure),
        },
    }))
}

fn failure(
    step: &'static str,
    compensation: Option<&'static str>,
    phase: Phase,
    error: &StepError,
    attempts: u32,
) -> Failure {
    Failure {
        step,
        compensation,
        phase,
        error: error.chain_string(),
        retryable: error.is_retryable(),
        attempts,
    }
}

/// Runs one attempt under the policy's timeout, turning a panic into a
/// permanent error so that a panicking step rolls the saga back instead of
/// abandoning it. The timer is boxed, and only made when the policy has a
/// timeout, so the saga's future stays small.
///
/// The attempt's span is entered on every poll, as `Instrument` would, but
/// borrowed: an owned copy would add its size to every saga's future.
fn guarded<'s, F, T>(policy: &RetryPolicy, span: &'s tracing::Span, call: F) -> Guarded<'s, F>
where
    F: Future<Output = Result<T, StepError>>,
{
    Guarded {
        inner: call,
        span,
        limit: policy.attempt_timeout(),
        timer: None,
    }
}

pin_project_lite::pin_project! {
    /// See [`guarded`].
    struct Guarded<'s, F> {
        #[pin]
        inner: F,
        span: &'s tracing::Span,
        limit: Option<std::time::Duration>,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F: Future<Output = Result<T, StepError>>, T> Future for Guarded<'_, F> {
    type Output = Result<T, StepError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let inner = this.inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(result)) => return Poll::Ready(result),
            Ok(Poll::Pending) => {}
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                return Poll::Ready(Err(StepError::panicked(message)));
            }
        }
        let Some(limit) = *this.limit else {
            return Poll::Pending;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(StepError::timed_out(limit))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The error of a step the idempotency check caught: called twice in a row
/// under the same key, it succeeded both times with different outputs.
#[derive(Debug)]
struct NotIdempotent {
    step: &'static str,
    first: String,
    second: String,
}

impl NotIdempotent {
    /// Outputs longer than this many characters are shown in part, around
    /// where they first differ.
    const SHOWN: usize = 80;

    fn new(
        step: &'static str,
        first: &Result<serde_json::Value, String>,
        second: &Result<serde_json::Value, String>,
    ) -> NotIdempotent {
        let text = |output: &Result<serde_json::Value, String>| match output {
            Ok(value) => value.to_string(),
            Err(e) => format!("an output that cannot be encoded ({e})"),
        };
        let (first, second) = (text(first), text(second));
        // Both shown from just before their first difference, so that a cut
        // keeps what tells them apart.
        let same = first
            .chars()
            .zip(second.chars())
            .take_while(|(a, b)| a == b)
            .count();
        let from = same.saturating_sub(Self::SHOWN / 4);
        NotIdempotent {
            step,
            first: excerpt(&first, from, Self::SHOWN),
            second: excerpt(&second, from, Self::SHOWN),
        }
    }
}

/// At most `len` characters of `text` from character `from` (0 unless the
/// text is too long to show whole), with `…` where it was cut.
fn excerpt(text: &str, from: usize, len: usize) -> String {
    let count = text.chars().count();
    if count <= len {
        return text.to_string();
    }
    let from = from.min(count.saturating_sub(len));
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    out.extend(text.chars().skip(from).take(len));
    if from + len < count {
        out.push('…');
    }
    out
}

impl std::fmt::Display for NotIdempotent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step `{}` is not idempotent under its key: the first call returned {}, the second {}",
            self.step, self.first, self.second
        )
    }
}

impl std::error::Error for NotIdempotent {}

/// The message a panic carried.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}
