//! A compensation that gives up (a permanent error, or attempts exhausted
//! under a capped policy) makes the saga `Stuck`: the report names it, the
//! rollback stops there (earlier steps stay as they are), and `compensated`
//! lists what was undone before, in order.

mod support;

use std::sync::Arc;

use saga::prelude::*;
use saga::{Cause, Failure, Faults, Phase, Report};
use serde::{Deserialize, Serialize};
use support::{Boom, Calls, runtime_with, within_a_day};

/// How a compensation behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Undo {
    /// Succeeds.
    #[default]
    Works,
    /// Fails with `saga::permanent(..)`.
    Refuses,
    /// Fails retryably on its first `n` attempts.
    FailsFirst(u32),
}

impl Undo {
    fn result(self, cx: &StepContext) -> Result<(), StepError> {
        match self {
            Undo::Works => Ok(()),
            Undo::Refuses => Err(permanent(Boom("cannot undo"))),
            Undo::FailsFirst(n) if cx.attempt() <= n => Err(StepError::msg("try later")),
            Undo::FailsFirst(_) => Ok(()),
        }
    }
}

/// How each compensation behaves; the pivot always fails.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    /// `undo_a` (default policy, retried forever).
    pub a: Undo,
    /// `undo_b` (capped at 3 attempts by its attribute).
    pub b: Undo,
    /// `undo_c` (default policy, retried forever).
    pub c: Undo,
}

/// `a`, `b`, `c`, then the pivot `d`, which is refused.
#[derive(Default)]
pub struct Booking {
    calls: Calls,
}

#[saga(input = Plan)]
impl Booking {
    #[step(compensate = undo_a)]
    async fn a(&self) -> Result<(), StepError> {
        self.calls.push("a");
        Ok(())
    }
    async fn undo_a(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.calls.push("undo_a");
        input.a.result(cx)
    }

    #[step(compensate = undo_b, compensate_retry(attempts = 3, backoff = none))]
    async fn b(&self) -> Result<(), StepError> {
        self.calls.push("b");
        Ok(())
    }
    async fn undo_b(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.calls.push("undo_b");
        input.b.result(cx)
    }

    #[step(compensate = undo_c)]
    async fn c(&self) -> Result<(), StepError> {
        self.calls.push("c");
        Ok(())
    }
    async fn undo_c(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.calls.push("undo_c");
        input.c.result(cx)
    }

    #[step(pivot)]
    async fn d(&self) -> Result<(), StepError> {
        self.calls.push("d");
        Err(permanent(Boom("declined")))
    }
}

async fn run(plan: Plan, options: SagaOptions) -> (Arc<Booking>, Outcome<BookingOutputs>) {
    let saga = Arc::new(Booking::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run_with::<Booking>(plan, options))
        .await
        .expect("the saga runs");
    (saga, outcome)
}

fn stuck(outcome: &Outcome<BookingOutputs>) -> (&Report, &Failure) {
    match outcome {
        Outcome::Stuck(report) => (
            report,
            report
                .stuck
                .as_ref()
                .expect("a stuck report names what gave up"),
        ),
        other => panic!("expected a stuck saga, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_compensation_with_a_permanent_error_leaves_the_saga_stuck() {
    let plan = Plan {
        b: Undo::Refuses,
        ..Plan::default()
    };
    let (saga, outcome) = run(plan, SagaOptions::new()).await;
    let (report, failure) = stuck(&outcome);
    assert_eq!(
        *failure,
        Failure {
            step: "b",
            compensation: Some("undo_b"),
            phase: Phase::Compensation,
            error: "cannot undo".to_string(),
            retryable: false,
            attempts: 1,
        }
    );
    // What was undone before it, in order; nothing before it was touched.
    assert_eq!(report.compensated, ["c"]);
    assert_eq!(saga.calls.all(), ["a", "b", "c", "d", "undo_c", "undo_b"]);
    // The cause is still the step that failed.
    match &report.cause {
        Cause::StepFailed(cause) => assert_eq!(cause.step, "d"),
        other => panic!("expected a step failure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_exhausts_its_capped_policy_leaves_the_saga_stuck() {
    let plan = Plan {
        b: Undo::FailsFirst(u32::MAX),
        ..Plan::default()
    };
    let (saga, outcome) = run(plan, SagaOptions::new()).await;
    let (report, failure) = stuck(&outcome);
    assert_eq!(failure.compensation, Some("undo_b"));
    assert_eq!(failure.attempts, 3);
    assert!(failure.retryable);
    assert_eq!(saga.calls.count("undo_b"), 3);
    assert_eq!(saga.calls.count("undo_a"), 0);
    assert_eq!(report.compensated, ["c"]);
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_recovers_within_its_policy_does_not_leave_the_saga_stuck() {
    let plan = Plan {
        b: Undo::FailsFirst(2),
        ..Plan::default()
    };
    let (saga, outcome) = run(plan, SagaOptions::new()).await;
    match &outcome {
        Outcome::Compensated(report) => assert_eq!(report.compensated, ["c", "b", "a"]),
        other => panic!("expected a compensated saga, got {other:?}"),
    }
    assert_eq!(saga.calls.count("undo_b"), 3);
}

#[tokio::test(start_paused = true)]
async fn under_the_default_policy_a_failing_compensation_is_retried_rather_than_stuck() {
    let plan = Plan {
        c: Undo::FailsFirst(15),
        ..Plan::default()
    };
    let (saga, outcome) = run(plan, SagaOptions::new()).await;
    match &outcome {
        Outcome::Compensated(report) => assert_eq!(report.compensated, ["c", "b", "a"]),
        other => panic!("expected a compensated saga, got {other:?}"),
    }
    assert_eq!(saga.calls.count("undo_c"), 16);
}

#[tokio::test(start_paused = true)]
async fn the_first_compensation_giving_up_stops_the_whole_rollback() {
    let options = SagaOptions::new().faults(Faults::new().fail_compensation_permanently("undo_c"));
    let (saga, outcome) = run(Plan::default(), options).await;
    let (report, failure) = stuck(&outcome);
    assert_eq!(failure.step, "c");
    assert_eq!(failure.compensation, Some("undo_c"));
    assert!(!failure.retryable);
    assert!(report.compensated.is_empty());
    // The injected fault replaced the call; nothing else was undone.
    assert_eq!(saga.calls.all(), ["a", "b", "c", "d"]);
}

#[tokio::test(start_paused = true)]
async fn the_last_compensation_giving_up_reports_all_the_others_undone() {
    let options = SagaOptions::new().compensation_retry("undo_a", RetryPolicy::attempts(2));
    let plan = Plan {
        a: Undo::FailsFirst(u32::MAX),
        ..Plan::default()
    };
    let (saga, outcome) = run(plan, options).await;
    let (report, failure) = stuck(&outcome);
    assert_eq!(failure.step, "a");
    assert_eq!(failure.attempts, 2);
    assert_eq!(report.compensated, ["c", "b"]);
    assert_eq!(saga.calls.count("undo_a"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_report_says_what_gave_up() {
    let plan = Plan {
        b: Undo::Refuses,
        ..Plan::default()
    };
    let (_, outcome) = run(plan, SagaOptions::new()).await;
    assert!(outcome.is_stuck());
    let text = outcome.report().expect("a report").to_string();
    assert!(text.contains("compensated c"), "{text}");
    assert!(
        text.contains(
            "stuck: compensation `undo_b` failed after 1 attempt (permanent error): cannot undo"
        ),
        "{text}"
    );
}
