//! Steps and compensations returning `Box<dyn Error + Send + Sync>`, the
//! error of many crates: the boxed error becomes the step's error as any
//! other error type does (retryable, reported with its message and its
//! sources), a failed step rolls the saga back, and a failed compensation is
//! retried by its policy, then reported.

mod support;

use std::error::Error;
use std::sync::Arc;

use saga::prelude::*;
use saga::{Cause, Failure, Phase, Report};
use serde::{Deserialize, Serialize};
use support::{Calls, runtime_with, within_a_day};

/// The boxed error, as many crates name it.
type BoxError = Box<dyn Error + Send + Sync>;

/// A library's error with a source, which the saga only sees boxed.
#[derive(Debug, thiserror::Error)]
#[error("ledger refused the debit")]
struct Refused(#[source] std::io::Error);

/// How the saga's steps and compensations behave.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    /// `debit` fails on every attempt.
    pub debit_fails: bool,
    /// `release` fails on its first `n` attempts.
    pub release_fails_first: u32,
}

/// `reserve`, then `debit`, then the pivot `commit`.
#[derive(Default)]
pub struct Payment {
    calls: Calls,
}

#[saga(input = Plan)]
impl Payment {
    #[step(compensate = release, compensate_retry(attempts = 5, backoff = none))]
    async fn reserve(&self) -> Result<u32, Box<dyn Error + Send + Sync>> {
        self.calls.push("reserve");
        Ok(7)
    }
    async fn release(
        &self,
        input: &Plan,
        reserve: &u32,
        cx: &StepContext,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.calls.push("release");
        if cx.attempt() <= input.release_fails_first {
            return Err(
                format!("reservation {reserve} is locked (attempt {})", cx.attempt()).into(),
            );
        }
        Ok(())
    }

    #[step(compensate = refund, retry(attempts = 3, backoff = none))]
    async fn debit(&self, input: &Plan, reserve: &u32) -> Result<u32, BoxError> {
        self.calls.push("debit");
        if input.debit_fails {
            let reset = std::io::Error::other("connection reset");
            return Err(Box::new(Refused(reset)));
        }
        Ok(*reserve * 10)
    }
    async fn refund(&self) -> Result<(), BoxError> {
        self.calls.push("refund");
        Ok(())
    }

    #[step(pivot)]
    async fn commit(&self, debit: &u32) -> Result<u32, StepError> {
        self.calls.push("commit");
        Ok(*debit + 1)
    }
}

async fn run(plan: Plan) -> (Arc<Payment>, Outcome<PaymentOutputs>) {
    let saga = Arc::new(Payment::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run::<Payment>(plan))
        .await
        .expect("the saga runs");
    (saga, outcome)
}

fn step_failure(report: &Report) -> &Failure {
    match &report.cause {
        Cause::StepFailed(failure) => failure,
        other => panic!("expected a step failure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn steps_returning_boxed_errors_complete_when_they_succeed() {
    let (saga, outcome) = run(Plan::default()).await;
    let outputs = outcome.completed().expect("the saga completes");
    assert_eq!(
        (outputs.reserve, outputs.debit, outputs.commit),
        (7, 70, 71)
    );
    assert_eq!(saga.calls.all(), ["reserve", "debit", "commit"]);
}

#[tokio::test(start_paused = true)]
async fn a_boxed_step_error_is_retried_then_reported_with_its_sources_and_the_saga_rolls_back() {
    let plan = Plan {
        debit_fails: true,
        ..Plan::default()
    };
    let (saga, outcome) = run(plan).await;
    let report = match &outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a compensated saga, got {other:?}"),
    };
    let failure = step_failure(report);
    assert_eq!(failure.step, "debit");
    assert_eq!(failure.phase, Phase::Forward);
    assert_eq!(failure.error, "ledger refused the debit: connection reset");
    assert!(failure.retryable, "a boxed error is retryable by default");
    assert_eq!(failure.attempts, 3);
    assert_eq!(report.compensated, ["reserve"]);
    assert_eq!(
        saga.calls.all(),
        ["reserve", "debit", "debit", "debit", "release"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_boxed_compensation_error_is_retried_by_the_compensation_policy() {
    let plan = Plan {
        debit_fails: true,
        release_fails_first: 3,
    };
    let (saga, outcome) = run(plan).await;
    let report = match &outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a compensated saga, got {other:?}"),
    };
    assert_eq!(report.compensated, ["reserve"]);
    assert_eq!(saga.calls.count("release"), 4);
}

#[tokio::test(start_paused = true)]
async fn a_boxed_compensation_error_that_persists_is_reported_in_the_stuck_saga() {
    let plan = Plan {
        debit_fails: true,
        release_fails_first: u32::MAX,
    };
    let (saga, outcome) = run(plan).await;
    let report = match &outcome {
        Outcome::Stuck(report) => report,
        other => panic!("expected a stuck saga, got {other:?}"),
    };
    let stuck = report.stuck.as_ref().expect("the failed compensation");
    assert_eq!(stuck.step, "reserve");
    assert_eq!(stuck.compensation, Some("release"));
    assert_eq!(stuck.error, "reservation 7 is locked (attempt 5)");
    assert!(stuck.retryable, "a boxed error is retryable by default");
    assert_eq!(stuck.attempts, 5);
    assert_eq!(saga.calls.count("release"), 5);
    assert!(report.compensated.is_empty());
}
