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
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use crate::options::Plan;
use crate::{
    Cause, Event, EventKind, Failure, Listener, Outcome, Phase, Report, RetryPolicy, Saga, SagaId,
    StepContext, StepError, StepKind,
};

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
}

/// How a run of the retry loop ended without success.
enum Stop {
    /// The step or compensation failed for good.
    Failed(Failure),
    /// Cancellation or the deadline interrupted a wait between attempts.
    Interrupted(Cause),
}

impl<S: Saga> Run<'_, S> {
    /// Runs the saga to its outcome.
    pub(crate) async fn execute(self) -> Outcome<S::Outputs> {
        let def = S::definition();
        let span = tracing::info_span!("saga", saga = def.name(), id = %self.id);
        self.run_all().instrument(span).await
    }

    async fn run_all(&self) -> Outcome<S::Outputs> {
        let def = S::definition();
        let mut state = S::State::default();
        self.emit(EventKind::Started);
        let mut past_pivot = false;
        for (i, step) in def.steps().iter().enumerate() {
            if !past_pivot {
                if let Some(cause) = self.stop_requested() {
                    return self.roll_back(&state, i, cause).await;
                }
            }
            match self.forward(i, &mut state, past_pivot).await {
                Ok(()) => past_pivot |= step.kind() == StepKind::Pivot,
                Err(Stop::Failed(failure)) if past_pivot => {
                    return self.stuck(Cause::StepFailed(failure.clone()), Vec::new(), failure);
                }
                Err(Stop::Failed(failure)) => {
                    return self.roll_back(&state, i, Cause::StepFailed(failure)).await;
                }
                Err(Stop::Interrupted(cause)) => return self.roll_back(&state, i, cause).await,
            }
        }
        self.emit(EventKind::Completed);
        Outcome::Completed(S::__outputs(state))
    }

    /// Runs step `i` with its retry policy.
    async fn forward(&self, i: usize, state: &mut S::State, past_pivot: bool) -> Result<(), Stop> {
        let def = S::definition();
        let name = def.steps()[i].name();
        let policy = self.plan.policy(def, i, Phase::Forward);
        let mut attempt = 1;
        loop {
            self.emit(EventKind::StepStarted {
                step: name,
                attempt,
            });
            let span = tracing::debug_span!("step", step = name, attempt);
            let result = match self.plan.fault(i, Phase::Forward, attempt) {
                Some(injected) => Err(injected),
                None => {
                    let cx = StepContext::new(self.id, def.name(), name, Phase::Forward, attempt);
                    let mut result = Ok(());
                    for _ in 0..self.repetitions() {
                        let call = S::__run_step(self.saga, i, self.input, state, &cx);
                        result = guarded(policy, call).instrument(span.clone()).await;
                        if result.is_err() {
                            break;
                        }
                    }
                    result
                }
            };
            let error = match result {
                Ok(()) => {
                    self.emit(EventKind::StepSucceeded {
                        step: name,
                        attempt,
                    });
                    return Ok(());
                }
                Err(error) => error,
            };
            let will_retry = error.is_retryable() && policy.allows_attempt(attempt + 1);
            tracing::warn!(parent: &span, error = %error, will_retry, "step failed");
            self.emit(EventKind::StepFailed {
                step: name,
                attempt,
                error: &error,
                will_retry,
            });
            if !will_retry {
                return Err(Stop::Failed(failure(
                    name,
                    None,
                    Phase::Forward,
                    &error,
                    attempt,
                )));
            }
            let delay = policy.backoff_policy().delay(attempt, self.id.entropy());
            if past_pivot {
                tokio::time::sleep(delay).await;
            } else {
                tokio::select! {
                    biased;
                    cause = self.stopped() => return Err(Stop::Interrupted(cause)),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            attempt += 1;
        }
    }

    /// Compensates steps `completed - 1` down to `0`, then reports.
    async fn roll_back(
        &self,
        state: &S::State,
        completed: usize,
        cause: Cause,
    ) -> Outcome<S::Outputs> {
        let def = S::definition();
        tracing::info!(%cause, "rolling back");
        self.emit(EventKind::RollbackStarted { cause: &cause });
        let mut compensated = Vec::new();
        for i in (0..completed).rev() {
            let step = &def.steps()[i];
            if step.kind() != StepKind::Compensatable {
                continue;
            }
            match self.compensate(i, state).await {
                Ok(()) => compensated.push(step.name()),
                Err(failure) => return self.stuck(cause, compensated, failure),
            }
        }
        self.emit(EventKind::Compensated);
        Outcome::Compensated(Report {
            saga_id: self.id,
            saga: def.name(),
            cause,
            compensated,
            stuck: None,
        })
    }

    /// Runs the compensation of step `i` with its retry policy. Never
    /// interrupted: cancellation and the deadline do not apply to undoing.
    async fn compensate(&self, i: usize, state: &S::State) -> Result<(), Failure> {
        let def = S::definition();
        let step = &def.steps()[i];
        let (name, compensation) = (step.name(), step.compensation());
        let policy = self.plan.policy(def, i, Phase::Compensation);
        let mut attempt = 1;
        loop {
            self.emit(EventKind::CompensationStarted {
                step: name,
                attempt,
            });
            let span = tracing::debug_span!("compensation", step = name, attempt);
            let result = match self.plan.fault(i, Phase::Compensation, attempt) {
                Some(injected) => Err(injected),
                None => {
                    let cx =
                        StepContext::new(self.id, def.name(), name, Phase::Compensation, attempt);
                    let mut result = Ok(());
                    for _ in 0..self.repetitions() {
                        let call = S::__compensate(self.saga, i, self.input, state, &cx);
                        result = guarded(policy, call).instrument(span.clone()).await;
                        if result.is_err() {
                            break;
                        }
                    }
                    result
                }
            };
            let error = match result {
                Ok(()) => {
                    self.emit(EventKind::CompensationSucceeded {
                        step: name,
                        attempt,
                    });
                    return Ok(());
                }
                Err(error) => error,
            };
            let will_retry = error.is_retryable() && policy.allows_attempt(attempt + 1);
            tracing::warn!(parent: &span, error = %error, will_retry, "compensation failed");
            self.emit(EventKind::CompensationFailed {
                step: name,
                attempt,
                error: &error,
                will_retry,
            });
            if !will_retry {
                return Err(failure(
                    name,
                    compensation,
                    Phase::Compensation,
                    &error,
                    attempt,
                ));
            }
            let delay = policy.backoff_policy().delay(attempt, self.id.entropy());
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    fn stuck(
        &self,
        cause: Cause,
        compensated: Vec<&'static str>,
        failure: Failure,
    ) -> Outcome<S::Outputs> {
        tracing::error!(%failure, "saga stuck");
        self.emit(EventKind::Stuck { failure: &failure });
        Outcome::Stuck(Report {
            saga_id: self.id,
            saga: S::definition().name(),
            cause,
            compensated,
            stuck: Some(failure),
        })
    }

    fn repetitions(&self) -> u32 {
        if self.plan.repeat { 2 } else { 1 }
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

    fn emit(&self, kind: EventKind<'_>) {
        if let Some(listener) = self.listener {
            listener.on_event(&Event {
                saga_id: self.id,
                saga: S::definition().name(),
                kind,
            });
        }
    }
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
/// abandoning it.
async fn guarded<F>(policy: RetryPolicy, call: F) -> Result<(), StepError>
where
    F: Future<Output = Result<(), StepError>>,
{
    let call = CatchUnwind { inner: call };
    let result = match policy.attempt_timeout() {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => return Err(StepError::timed_out(limit)),
        },
        None => call.await,
    };
    result.unwrap_or_else(|message| Err(StepError::panicked(message)))
}

pin_project_lite::pin_project! {
    /// A future that turns a panic while polling `inner` into an `Err`.
    struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}
