//! Retry policies: how many attempts each policy allows, which errors are
//! retried (retryable vs permanent, the `permanent`/`retryable` wrappers, a
//! user error type implementing `Classify`), per-run overrides, and the waits
//! between attempts, measured on tokio's paused clock.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga::prelude::*;
use saga::{Cause, Failure, Phase, Report};
use serde::{Deserialize, Serialize};
use support::{Boom, runtime_with, within_a_day};
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// Default policies and error classification
// ---------------------------------------------------------------------------

/// How `work` (before the pivot) or `after` (after it) fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Never fails.
    Succeed,
    /// `work` fails on every attempt with a plain retryable `StepError`.
    Retryable,
    /// `work` fails on every attempt with `saga::retryable(..)`.
    WrappedRetryable,
    /// `work` fails with `saga::permanent(..)`.
    Permanent,
    /// `work` fails on every attempt with an error converted by `?`.
    QuestionMark,
    /// `work` fails retryably on its first `n` attempts.
    WorkFailsFirst(u32),
    /// `after` (past the pivot) fails retryably on its first `n` attempts.
    AfterFailsFirst(u32),
    /// `undo_work` fails retryably on its first `n` attempts, after the
    /// pivot failed.
    UndoFailsFirst(u32),
}

/// Attempts and their start times, by step.
#[derive(Default)]
pub struct Attempts(Mutex<Vec<(&'static str, u32, Instant)>>);

impl Attempts {
    fn record(&self, step: &'static str, cx: &StepContext) {
        self.0
            .lock()
            .unwrap()
            .push((step, cx.attempt(), Instant::now()));
    }

    /// The attempt numbers of `step`, in order.
    fn of(&self, step: &str) -> Vec<u32> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(s, _, _)| *s == step)
            .map(|(_, a, _)| *a)
            .collect()
    }

    /// The time between consecutive attempts of `step`.
    fn gaps(&self, step: &str) -> Vec<Duration> {
        let all = self.0.lock().unwrap();
        let times: Vec<Instant> = all
            .iter()
            .filter(|(s, _, _)| *s == step)
            .map(|(_, _, t)| *t)
            .collect();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// `prepare`, `work`, the pivot `commit`, and `after`: all with the default
/// policies.
#[derive(Default)]
pub struct Defaults {
    attempts: Attempts,
}

#[saga(input = Mode)]
impl Defaults {
    #[step(compensate = undo_prepare)]
    async fn prepare(&self, cx: &StepContext) -> Result<(), StepError> {
        self.attempts.record("prepare", cx);
        Ok(())
    }
    async fn undo_prepare(&self, cx: &StepContext) -> Result<(), StepError> {
        self.attempts.record("undo_prepare", cx);
        Ok(())
    }

    #[step(compensate = undo_work)]
    async fn work(&self, input: &Mode, cx: &StepContext) -> Result<u32, StepError> {
        self.attempts.record("work", cx);
        match *input {
            Mode::Retryable => Err(StepError::msg("busy")),
            Mode::WrappedRetryable => Err(retryable(Boom("busy"))),
            Mode::Permanent => Err(permanent(Boom("refused"))),
            Mode::QuestionMark => {
                Err(Boom("busy"))?;
                Ok(0)
            }
            Mode::WorkFailsFirst(n) if cx.attempt() <= n => Err(StepError::msg("busy")),
            _ => Ok(cx.attempt()),
        }
    }
    async fn undo_work(&self, input: &Mode, cx: &StepContext) -> Result<(), StepError> {
        self.attempts.record("undo_work", cx);
        match *input {
            Mode::UndoFailsFirst(n) if cx.attempt() <= n => Err(StepError::msg("busy")),
            _ => Ok(()),
        }
    }

    #[step(pivot)]
    async fn commit(&self, input: &Mode, cx: &StepContext) -> Result<(), StepError> {
        self.attempts.record("commit", cx);
        match *input {
            Mode::UndoFailsFirst(_) => Err(permanent(Boom("rejected"))),
            _ => Ok(()),
        }
    }

    #[step]
    async fn after(&self, input: &Mode, cx: &StepContext) -> Result<(), StepError> {
        self.attempts.record("after", cx);
        match *input {
            Mode::AfterFailsFirst(n) if cx.attempt() <= n => Err(StepError::msg("busy")),
            _ => Ok(()),
        }
    }
}

async fn run_defaults(
    mode: Mode,
    options: SagaOptions,
) -> (Arc<Defaults>, Outcome<DefaultsOutputs>) {
    let saga = Arc::new(Defaults::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run_with::<Defaults>(mode, options))
        .await
        .expect("the saga runs");
    (saga, outcome)
}

fn compensated<O: std::fmt::Debug>(outcome: &Outcome<O>) -> &Report {
    match outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a compensated saga, got {other:?}"),
    }
}

fn step_failure(report: &Report) -> &Failure {
    match &report.cause {
        Cause::StepFailed(failure) => failure,
        other => panic!("expected a step failure, got {other:?}"),
    }
}

/// Asserts that `gap` is a jittered wait of `base`: shortened by at most
/// half (the default jitter), give or take the timer's millisecond.
fn assert_jittered(gap: Duration, base: Duration) {
    let ms = Duration::from_millis(1);
    assert!(
        gap + ms >= base / 2 && gap <= base + ms,
        "waited {gap:?}, expected between {:?} and {base:?}",
        base / 2
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_before_the_pivot_gets_three_attempts_by_default() {
    let (saga, outcome) = run_defaults(Mode::Retryable, SagaOptions::new()).await;
    assert_eq!(saga.attempts.of("work"), [1, 2, 3]);
    let report = compensated(&outcome);
    let failure = step_failure(report);
    assert_eq!(failure.step, "work");
    assert_eq!(failure.attempts, 3);
    assert!(failure.retryable);
    assert_eq!(failure.error, "busy");
    // `work` never completed: only `prepare` is undone.
    assert_eq!(report.compensated, ["prepare"]);
    assert!(saga.attempts.of("undo_work").is_empty());
    assert!(saga.attempts.of("commit").is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_default_backoff_before_the_pivot_is_exponential_from_100ms_with_jitter() {
    let mut first_waits = Vec::new();
    for _ in 0..8 {
        let (saga, _) = run_defaults(Mode::Retryable, SagaOptions::new()).await;
        let gaps = saga.attempts.gaps("work");
        assert_eq!(gaps.len(), 2);
        assert_jittered(gaps[0], Duration::from_millis(100));
        assert_jittered(gaps[1], Duration::from_millis(200));
        first_waits.push(gaps[0]);
    }
    first_waits.sort();
    first_waits.dedup();
    assert!(
        first_waits.len() > 1,
        "eight sagas all waited {first_waits:?}: the default backoff has no jitter"
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_that_fails_then_succeeds_within_its_attempts_completes() {
    let (saga, outcome) = run_defaults(Mode::WorkFailsFirst(2), SagaOptions::new()).await;
    let outputs = outcome.completed().expect("the saga completes");
    assert_eq!(outputs.work, 3, "the output is the third attempt's");
    assert_eq!(saga.attempts.of("work"), [1, 2, 3]);
    assert!(saga.attempts.of("undo_work").is_empty());
    assert!(saga.attempts.of("undo_prepare").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let (saga, outcome) = run_defaults(Mode::Permanent, SagaOptions::new()).await;
    assert_eq!(saga.attempts.of("work"), [1]);
    let report = compensated(&outcome);
    let failure = step_failure(report);
    assert_eq!(failure.attempts, 1);
    assert!(!failure.retryable);
    assert_eq!(failure.error, "refused");
    assert_eq!(report.compensated, ["prepare"]);
}

#[tokio::test(start_paused = true)]
async fn the_retryable_wrapper_is_retried() {
    let (saga, outcome) = run_defaults(Mode::WrappedRetryable, SagaOptions::new()).await;
    assert_eq!(saga.attempts.of("work"), [1, 2, 3]);
    assert!(step_failure(compensated(&outcome)).retryable);
}

#[tokio::test(start_paused = true)]
async fn an_error_converted_by_question_mark_is_retryable() {
    let (saga, outcome) = run_defaults(Mode::QuestionMark, SagaOptions::new()).await;
    assert_eq!(saga.attempts.of("work"), [1, 2, 3]);
    let failure = step_failure(compensated(&outcome));
    assert!(failure.retryable);
    assert_eq!(failure.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn a_step_after_the_pivot_retries_until_it_succeeds_by_default() {
    let (saga, outcome) = run_defaults(Mode::AfterFailsFirst(12), SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.attempts.of("after"), (1..=13).collect::<Vec<_>>());
    // Exponential from 100 ms, doubling, capped at 30 s, with jitter.
    let gaps = saga.attempts.gaps("after");
    for (k, gap) in gaps.iter().enumerate() {
        let base = (Duration::from_millis(100) * 2u32.pow(k as u32)).min(Duration::from_secs(30));
        assert_jittered(*gap, base);
    }
}

#[tokio::test(start_paused = true)]
async fn a_compensation_retries_until_it_succeeds_by_default() {
    let (saga, outcome) = run_defaults(Mode::UndoFailsFirst(10), SagaOptions::new()).await;
    let report = compensated(&outcome);
    assert_eq!(report.compensated, ["work", "prepare"]);
    assert_eq!(saga.attempts.of("undo_work"), (1..=11).collect::<Vec<_>>());
    assert_eq!(saga.attempts.of("undo_prepare"), [1]);
    // The pivot's permanent error is not retried.
    assert_eq!(saga.attempts.of("commit"), [1]);
    let gaps = saga.attempts.gaps("undo_work");
    for (k, gap) in gaps.iter().enumerate() {
        let base = (Duration::from_millis(100) * 2u32.pow(k as u32)).min(Duration::from_secs(30));
        assert_jittered(*gap, base);
    }
}

// ---------------------------------------------------------------------------
// Runtime overrides
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_runtime_override_changes_the_attempts_of_a_step() {
    let options = SagaOptions::new().retry("work", RetryPolicy::attempts(6));
    let (saga, outcome) = run_defaults(Mode::Retryable, options).await;
    assert_eq!(saga.attempts.of("work"), (1..=6).collect::<Vec<_>>());
    assert_eq!(step_failure(compensated(&outcome)).attempts, 6);
    // `RetryPolicy::attempts` has no backoff.
    assert!(saga.attempts.gaps("work").iter().all(Duration::is_zero));
}

#[tokio::test(start_paused = true)]
async fn the_last_runtime_override_of_a_step_wins() {
    let options = SagaOptions::new()
        .retry("work", RetryPolicy::attempts(6))
        .retry("work", RetryPolicy::attempts(2));
    let (saga, _) = run_defaults(Mode::Retryable, options).await;
    assert_eq!(saga.attempts.of("work"), [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_runtime_override_sets_the_backoff() {
    let policy = RetryPolicy::attempts(4).backoff(Backoff::fixed(Duration::from_secs(2)));
    let options = SagaOptions::new().retry("work", policy);
    let (saga, _) = run_defaults(Mode::Retryable, options).await;
    assert_eq!(saga.attempts.gaps("work"), [Duration::from_secs(2); 3]);
}

#[tokio::test(start_paused = true)]
async fn a_runtime_override_caps_a_compensation() {
    let options = SagaOptions::new().compensation_retry("undo_work", RetryPolicy::attempts(4));
    let (saga, outcome) = run_defaults(Mode::UndoFailsFirst(100), options).await;
    assert_eq!(saga.attempts.of("undo_work"), [1, 2, 3, 4]);
    match &outcome {
        Outcome::Stuck(report) => {
            let stuck = report
                .stuck
                .as_ref()
                .expect("a stuck report names what gave up");
            assert_eq!(stuck.compensation, Some("undo_work"));
            assert_eq!(stuck.attempts, 4);
        }
        other => panic!("expected a stuck saga, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_runtime_override_does_not_touch_other_steps() {
    let options = SagaOptions::new().retry("prepare", RetryPolicy::attempts(9));
    let (saga, _) = run_defaults(Mode::Retryable, options).await;
    assert_eq!(saga.attempts.of("work"), [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn an_override_naming_no_step_is_refused() {
    let saga = Arc::new(Defaults::default());
    let runtime = runtime_with(&saga).await;
    let options = SagaOptions::new().retry("wrok", RetryPolicy::once());
    let err = within_a_day(runtime.run_with::<Defaults>(Mode::Succeed, options))
        .await
        .expect_err("an unknown step name is an error");
    match err {
        saga::Error::UnknownStep { name, .. } => assert_eq!(name, "wrok"),
        other => panic!("expected UnknownStep, got {other}"),
    }
    assert!(saga.attempts.of("prepare").is_empty(), "no step ran");
}

/// Runs `Defaults` with `options`, which must be refused before anything
/// runs; the error.
async fn refused(options: SagaOptions) -> saga::Error {
    let saga = Arc::new(Defaults::default());
    let runtime = runtime_with(&saga).await;
    let err = within_a_day(runtime.run_with::<Defaults>(Mode::Succeed, options))
        .await
        .expect_err("the options are refused");
    assert!(saga.attempts.of("prepare").is_empty(), "no step ran");
    err
}

#[tokio::test(start_paused = true)]
async fn an_override_with_a_timeout_of_zero_is_refused_as_the_attribute_refuses_it() {
    let policy = RetryPolicy::attempts(3).timeout(Duration::ZERO);
    let err = refused(SagaOptions::new().retry("work", policy)).await;
    assert_eq!(
        err.to_string(),
        "saga `Defaults`: the retry policy given for step `work` is refused: a timeout of zero would never let an attempt finish: give a positive duration, or use `no_timeout()`"
    );
    match err {
        saga::Error::InvalidRetryPolicy { saga, name, is, .. } => {
            assert_eq!(
                (saga, name.as_str(), is),
                ("Defaults", "work", Phase::Forward)
            );
        }
        other => panic!("expected InvalidRetryPolicy, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_override_of_zero_attempts_is_refused_not_made_one() {
    let err =
        refused(SagaOptions::new().compensation_retry("undo_work", RetryPolicy::attempts(0))).await;
    assert_eq!(
        err.to_string(),
        "saga `Defaults`: the retry policy given for compensation `undo_work` is refused: zero attempts would never run it: use `RetryPolicy::attempts(1)` for a single try without retries, a larger number, or `RetryPolicy::forever()`"
    );
    let policy = RetryPolicy::forever().with_attempts(0);
    let err = refused(SagaOptions::new().retry("prepare", policy)).await;
    assert!(
        matches!(err, saga::Error::InvalidRetryPolicy { ref name, .. } if name == "prepare"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_smallest_sound_policies_are_taken() {
    // One attempt, and a timeout of a nanosecond (which a step that
    // answers at once still meets).
    let policy = RetryPolicy::attempts(1).timeout(Duration::from_nanos(1));
    let options = SagaOptions::new().retry("work", policy);
    let (saga, outcome) = run_defaults(Mode::Succeed, options).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.attempts.of("work"), [1]);
}

// ---------------------------------------------------------------------------
// Policies written in the attribute
// ---------------------------------------------------------------------------

/// Steps with their own policies; the input names the one that always fails
/// (retryably, with an error type that does not implement `Classify`).
#[derive(Default)]
pub struct Tuned {
    attempts: Attempts,
}

impl Tuned {
    fn attempt(&self, input: &str, step: &'static str, cx: &StepContext) -> Result<(), Boom> {
        self.attempts.record(step, cx);
        if input == step {
            Err(Boom("busy"))
        } else {
            Ok(())
        }
    }
}

#[saga(input = String)]
impl Tuned {
    #[step(compensate = undo, retry(attempts = 5, backoff = none))]
    async fn five(&self, input: &str, cx: &StepContext) -> Result<(), Boom> {
        self.attempt(input, "five", cx)
    }
    async fn undo(&self) -> Result<(), Boom> {
        Ok(())
    }

    #[step(readonly, retry(attempts = 1))]
    async fn once(&self, input: &str, cx: &StepContext) -> Result<(), Boom> {
        self.attempt(input, "once", cx)
    }

    #[step(readonly, retry(attempts = 4, backoff = fixed("10ms")))]
    async fn fixed(&self, input: &str, cx: &StepContext) -> Result<(), Boom> {
        self.attempt(input, "fixed", cx)
    }

    #[step(readonly, retry(attempts = 6, backoff = exponential("10ms", "40ms"), jitter = 0.0))]
    async fn exponential(&self, input: &str, cx: &StepContext) -> Result<(), Boom> {
        self.attempt(input, "exponential", cx)
    }

    #[step(readonly, retry(backoff = fixed("1s")))]
    async fn default_attempts(&self, input: &str, cx: &StepContext) -> Result<(), Boom> {
        self.attempt(input, "default_attempts", cx)
    }

    #[step(pivot, retry(attempts = 2, backoff = fixed("3s"), jitter = 0.5))]
    async fn commit(&self, input: &str, cx: &StepContext) -> Result<(), Boom> {
        self.attempt(input, "commit", cx)
    }
}

async fn run_tuned(fail: &str, options: SagaOptions) -> (Arc<Tuned>, Outcome<TunedOutputs>) {
    let saga = Arc::new(Tuned::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run_with::<Tuned>(fail.to_string(), options))
        .await
        .expect("the saga runs");
    (saga, outcome)
}

#[tokio::test(start_paused = true)]
async fn the_attribute_sets_the_number_of_attempts() {
    let (saga, outcome) = run_tuned("five", SagaOptions::new()).await;
    assert_eq!(saga.attempts.of("five"), [1, 2, 3, 4, 5]);
    assert_eq!(step_failure(compensated(&outcome)).attempts, 5);
    assert!(saga.attempts.gaps("five").iter().all(Duration::is_zero));

    let (saga, _) = run_tuned("once", SagaOptions::new()).await;
    assert_eq!(saga.attempts.of("once"), [1]);
}

#[tokio::test(start_paused = true)]
async fn an_error_type_without_classify_is_retryable() {
    let (saga, outcome) = run_tuned("fixed", SagaOptions::new()).await;
    assert_eq!(saga.attempts.of("fixed"), [1, 2, 3, 4]);
    assert!(step_failure(compensated(&outcome)).retryable);
}

#[tokio::test(start_paused = true)]
async fn a_fixed_backoff_waits_the_same_time_before_every_retry() {
    let start = Instant::now();
    let (saga, _) = run_tuned("fixed", SagaOptions::new()).await;
    assert_eq!(saga.attempts.gaps("fixed"), [Duration::from_millis(10); 3]);
    assert_eq!(start.elapsed(), Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn an_exponential_backoff_doubles_up_to_its_cap() {
    let (saga, _) = run_tuned("exponential", SagaOptions::new()).await;
    let ms = Duration::from_millis;
    assert_eq!(
        saga.attempts.gaps("exponential"),
        [ms(10), ms(20), ms(40), ms(40), ms(40)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_attribute_without_attempts_keeps_the_default_three() {
    let (saga, _) = run_tuned("default_attempts", SagaOptions::new()).await;
    assert_eq!(saga.attempts.of("default_attempts"), [1, 2, 3]);
    assert_eq!(
        saga.attempts.gaps("default_attempts"),
        [Duration::from_secs(1); 2]
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_in_the_attribute_shortens_a_fixed_backoff() {
    let mut waits = Vec::new();
    for _ in 0..8 {
        let (saga, _) = run_tuned("commit", SagaOptions::new()).await;
        let gaps = saga.attempts.gaps("commit");
        assert_eq!(gaps.len(), 1);
        assert_jittered(gaps[0], Duration::from_secs(3));
        waits.push(gaps[0]);
    }
    waits.sort();
    waits.dedup();
    assert!(waits.len() > 1, "no jitter: every saga waited {waits:?}");
}

#[tokio::test(start_paused = true)]
async fn a_runtime_override_replaces_the_attribute() {
    let options = SagaOptions::new().retry("five", RetryPolicy::attempts(2));
    let (saga, _) = run_tuned("five", options).await;
    assert_eq!(saga.attempts.of("five"), [1, 2]);
}

// ---------------------------------------------------------------------------
// A user error type that classifies itself
// ---------------------------------------------------------------------------

/// A ledger's errors: an outage may pass, missing funds will not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LedgerError {
    /// Retryable.
    #[error("ledger unavailable")]
    Unavailable,
    /// Permanent.
    #[error("insufficient funds")]
    Insufficient,
}

impl Classify for LedgerError {
    fn is_retryable(&self) -> bool {
        matches!(self, LedgerError::Unavailable)
    }
}

/// `debit` fails with the input error on every attempt.
#[derive(Default)]
pub struct Ledger {
    attempts: Attempts,
}

#[saga(input = LedgerError)]
impl Ledger {
    #[step(compensate = credit, retry(attempts = 4, backoff = none))]
    async fn debit(&self, input: &LedgerError, cx: &StepContext) -> Result<(), LedgerError> {
        self.attempts.record("debit", cx);
        Err(*input)
    }
    async fn credit(&self) -> Result<(), LedgerError> {
        Ok(())
    }

    #[step(pivot)]
    async fn commit(&self) -> Result<(), LedgerError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_classify_impl_decides_what_is_retried() {
    let saga = Arc::new(Ledger::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run::<Ledger>(LedgerError::Unavailable))
        .await
        .unwrap();
    assert_eq!(saga.attempts.of("debit"), [1, 2, 3, 4]);
    let failure = step_failure(compensated(&outcome));
    assert!(failure.retryable);
    assert_eq!(failure.error, "ledger unavailable");

    let saga = Arc::new(Ledger::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run::<Ledger>(LedgerError::Insufficient))
        .await
        .unwrap();
    assert_eq!(saga.attempts.of("debit"), [1]);
    let failure = step_failure(compensated(&outcome));
    assert!(!failure.retryable);
    assert_eq!(failure.phase, Phase::Forward);
    assert_eq!(failure.error, "insufficient funds");
}

/// A step's result written through an alias, so the macro cannot read the
/// error type from the signature.
pub type LedgerResult<T> = Result<T, LedgerError>;

/// `debit` fails with the input error on every attempt, through an alias;
/// the pivot fails so that `credit`, which fails the same way, runs.
#[derive(Default)]
pub struct Aliased {
    attempts: Attempts,
}

#[saga(input = LedgerError)]
impl Aliased {
    #[step(
        compensate = credit,
        retry(attempts = 4, backoff = none),
        compensate_retry(attempts = 4, backoff = none)
    )]
    async fn debit(&self, cx: &StepContext) -> LedgerResult<()> {
        self.attempts.record("debit", cx);
        Ok(())
    }
    async fn credit(&self, input: &LedgerError, cx: &StepContext) -> LedgerResult<()> {
        self.attempts.record("credit", cx);
        Err(*input)
    }

    #[step(pivot, retry(attempts = 4, backoff = none))]
    async fn commit(&self, input: &LedgerError, cx: &StepContext) -> LedgerResult<()> {
        self.attempts.record("commit", cx);
        Err(*input)
    }
}

#[tokio::test(start_paused = true)]
async fn a_classify_impl_is_honoured_through_a_result_alias_and_in_compensations() {
    let saga = Arc::new(Aliased::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run::<Aliased>(LedgerError::Insufficient))
        .await
        .unwrap();
    assert_eq!(
        saga.attempts.of("commit"),
        [1],
        "a permanent error is not retried"
    );
    assert_eq!(
        saga.attempts.of("credit"),
        [1],
        "a permanent error is not retried"
    );
    match &outcome {
        Outcome::Stuck(report) => {
            let stuck = report.stuck.as_ref().unwrap();
            assert_eq!(stuck.compensation, Some("credit"));
            assert!(!stuck.retryable);
        }
        other => panic!("expected a stuck saga, got {other:?}"),
    }

    let saga = Arc::new(Aliased::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run::<Aliased>(LedgerError::Unavailable))
        .await
        .unwrap();
    assert_eq!(saga.attempts.of("commit"), [1, 2, 3, 4]);
    assert_eq!(saga.attempts.of("credit"), [1, 2, 3, 4]);
    assert!(outcome.is_stuck(), "{outcome:?}");
}

/// Attribute forms that change one part of the default policy.
#[derive(Default)]
pub struct Partial {
    attempts: Attempts,
}

#[saga(input = ())]
impl Partial {
    #[step(compensate = undo, retry(jitter = 0.0))]
    async fn steady(&self, cx: &StepContext) -> Result<(), StepError> {
        self.attempts.record("steady", cx);
        Err(StepError::msg("busy"))
    }
    async fn undo(&self) -> Result<(), StepError> {
        Ok(())
    }

    #[step(pivot)]
    async fn commit(&self) -> Result<(), StepError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn jitter_alone_in_the_attribute_keeps_the_default_exponential_backoff() {
    let saga = Arc::new(Partial::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run::<Partial>(())).await.unwrap();
    assert!(outcome.is_compensated(), "{outcome:?}");
    assert_eq!(saga.attempts.of("steady"), [1, 2, 3]);
    assert_eq!(
        saga.attempts.gaps("steady"),
        [Duration::from_millis(100), Duration::from_millis(200)]
    );
}
