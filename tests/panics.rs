//! A panic inside a step is a permanent failure: the step is not retried
//! and the saga rolls back (or, past the pivot, is stuck). A panicking
//! compensation leaves the saga stuck. The runtime itself carries on.

mod support;

use std::sync::Arc;

use saga::prelude::*;
use saga::{Cause, Failure, Phase};
use serde::{Deserialize, Serialize};
use support::{Calls, runtime_with, within_a_day};

/// Where to panic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Panic {
    /// Nowhere.
    #[default]
    Nowhere,
    /// In `b`, with a static message.
    InB,
    /// In `b`, with a formatted message.
    InBFormatted,
    /// In `d`, after the pivot.
    InD,
    /// In `undo_a`, after the pivot failed.
    InUndoA,
    /// In `b`, after it awaited something.
    InBAfterAwait,
}

/// `a`, `b` (5 attempts), the pivot `c`, then `d`.
#[derive(Default)]
pub struct Fragile {
    calls: Calls,
}

#[saga(input = Panic)]
impl Fragile {
    #[step(compensate = undo_a)]
    async fn a(&self) -> Result<(), StepError> {
        self.calls.push("a");
        Ok(())
    }
    async fn undo_a(&self, input: &Panic) -> Result<(), StepError> {
        self.calls.push("undo_a");
        if *input == Panic::InUndoA {
            panic!("undo exploded");
        }
        Ok(())
    }

    #[step(compensate = undo_b, retry(attempts = 5, backoff = none))]
    async fn b(&self, input: &Panic, cx: &StepContext) -> Result<(), StepError> {
        self.calls.push("b");
        match input {
            Panic::InB => panic!("boom"),
            Panic::InBFormatted => panic!("boom on attempt {}", cx.attempt()),
            Panic::InBAfterAwait => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                panic!("boom after a while")
            }
            _ => Ok(()),
        }
    }
    async fn undo_b(&self) -> Result<(), StepError> {
        self.calls.push("undo_b");
        Ok(())
    }

    #[step(pivot)]
    async fn c(&self, input: &Panic) -> Result<(), StepError> {
        self.calls.push("c");
        if *input == Panic::InUndoA {
            return Err(permanent(support::Boom("refused")));
        }
        Ok(())
    }

    #[step]
    async fn d(&self, input: &Panic) -> Result<(), StepError> {
        self.calls.push("d");
        if *input == Panic::InD {
            panic!("too late");
        }
        Ok(())
    }
}

async fn start(runtime: &Runtime, panic: Panic) -> Outcome<FragileOutputs> {
    let handle = runtime
        .start::<Fragile>(panic)
        .await
        .expect("the saga starts");
    within_a_day(handle.outcome())
        .await
        .expect("a panicking step does not abort the saga's task")
}

async fn run(panic: Panic) -> (Arc<Fragile>, Outcome<FragileOutputs>) {
    let saga = Arc::new(Fragile::default());
    let runtime = runtime_with(&saga).await;
    let outcome = start(&runtime, panic).await;
    (saga, outcome)
}

#[tokio::test(start_paused = true)]
async fn a_panicking_step_rolls_the_saga_back() {
    let (saga, outcome) = run(Panic::InB).await;
    let report = match &outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a compensated saga, got {other:?}"),
    };
    assert_eq!(report.compensated, ["a"]);
    assert_eq!(saga.calls.all(), ["a", "b", "undo_a"]);
    match &report.cause {
        Cause::StepFailed(failure) => assert_eq!(
            *failure,
            Failure {
                step: "b",
                compensation: None,
                phase: Phase::Forward,
                error: "panicked: boom".to_string(),
                retryable: false,
                attempts: 1,
            }
        ),
        other => panic!("expected a step failure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_not_retried_and_its_message_is_kept() {
    let (saga, outcome) = run(Panic::InBFormatted).await;
    assert_eq!(saga.calls.count("b"), 1, "5 attempts allowed, yet one ran");
    let report = outcome.report().expect("a report");
    assert!(
        report.to_string().contains("panicked: boom on attempt 1"),
        "{report}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_after_an_await_rolls_the_saga_back() {
    let (saga, outcome) = run(Panic::InBAfterAwait).await;
    match &outcome {
        Outcome::Compensated(report) => {
            assert_eq!(report.compensated, ["a"]);
            assert!(report.to_string().contains("panicked: boom after a while"));
        }
        other => panic!("expected a compensated saga, got {other:?}"),
    }
    assert_eq!(saga.calls.all(), ["a", "b", "undo_a"]);
}

#[tokio::test(start_paused = true)]
async fn a_panic_after_the_pivot_leaves_the_saga_stuck() {
    let (saga, outcome) = run(Panic::InD).await;
    let failure = match &outcome {
        Outcome::Stuck(report) => report.stuck.clone().expect("names the step"),
        other => panic!("expected a stuck saga, got {other:?}"),
    };
    assert_eq!(failure.step, "d");
    assert_eq!(failure.error, "panicked: too late");
    assert!(!failure.retryable);
    // Not retried, even under the retry-forever policy after the pivot.
    assert_eq!(saga.calls.all(), ["a", "b", "c", "d"]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_compensation_leaves_the_saga_stuck() {
    let (saga, outcome) = run(Panic::InUndoA).await;
    let report = match &outcome {
        Outcome::Stuck(report) => report,
        other => panic!("expected a stuck saga, got {other:?}"),
    };
    let failure = report.stuck.as_ref().expect("names the compensation");
    assert_eq!(failure.compensation, Some("undo_a"));
    assert_eq!(failure.error, "panicked: undo exploded");
    assert_eq!(failure.attempts, 1);
    assert_eq!(report.compensated, ["b"]);
    // Not retried, even under the retry-forever compensation policy.
    assert_eq!(saga.calls.count("undo_a"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_runtime_runs_other_sagas_after_a_panic() {
    let saga = Arc::new(Fragile::default());
    let runtime = runtime_with(&saga).await;
    assert!(start(&runtime, Panic::InB).await.is_compensated());
    assert!(start(&runtime, Panic::Nowhere).await.is_completed());
    assert_eq!(saga.calls.all(), ["a", "b", "undo_a", "a", "b", "c", "d"]);
}
