//! `SagaHandle::cancel` stops forward work and rolls back: an attempt
//! already running finishes (and is compensated if it succeeded), no later
//! step or attempt starts, a wait between attempts is cut short; a rollback
//! in progress, and every compensation in it, runs to its end; past the pivot
//! cancellation has no effect.

mod support;

use std::sync::Arc;
use std::time::Duration;

use saga::prelude::*;
use saga::{Cause, Report, SagaHandle};
use serde::{Deserialize, Serialize};
use support::{Calls, runtime_with, within_a_day};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the steps do.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    /// The step or compensation that stops at the gate until the test
    /// releases it.
    pub gate: Option<String>,
    /// `b` fails retryably on its first `n` attempts (1 h apart).
    pub b_fails: u32,
    /// The pivot `c` fails permanently.
    pub c_refuses: bool,
    /// `undo_a` fails retryably on its first `n` attempts (1 s apart).
    pub undo_a_fails: u32,
    /// `d` (after the pivot) fails retryably on its first `n` attempts.
    pub d_fails: u32,
}

/// `a`, `b`, the pivot `c`, then `d`.
#[derive(Default)]
pub struct Job {
    calls: Calls,
    /// Signalled when the gated call arrives at the gate.
    entered: Notify,
    /// Signalled by the test to let it through.
    release: Notify,
}

impl Job {
    async fn call(&self, input: &Plan, name: &str, cx: &StepContext) {
        self.calls.push(format!("{name} {} started", cx.attempt()));
        if input.gate.as_deref() == Some(name) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.calls.push(format!("{name} {} finished", cx.attempt()));
    }

    fn ran(&self, name: &str) -> bool {
        self.calls
            .all()
            .iter()
            .any(|c| c.starts_with(&format!("{name} ")))
    }
}

#[saga(input = Plan)]
impl Job {
    #[step(compensate = undo_a)]
    async fn a(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.call(input, "a", cx).await;
        Ok(())
    }
    async fn undo_a(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.call(input, "undo_a", cx).await;
        if cx.attempt() <= input.undo_a_fails {
            return Err(StepError::msg("busy"));
        }
        Ok(())
    }

    #[step(compensate = undo_b, retry(attempts = 5, backoff = fixed("1h")))]
    async fn b(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.call(input, "b", cx).await;
        if cx.attempt() <= input.b_fails {
            return Err(StepError::msg("busy"));
        }
        Ok(())
    }
    async fn undo_b(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.call(input, "undo_b", cx).await;
        Ok(())
    }

    #[step(pivot)]
    async fn c(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.call(input, "c", cx).await;
        if input.c_refuses {
            return Err(permanent(support::Boom("refused")));
        }
        Ok(())
    }

    #[step]
    async fn d(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.call(input, "d", cx).await;
        if cx.attempt() <= input.d_fails {
            return Err(StepError::msg("busy"));
        }
        Ok(())
    }
}

fn gated(name: &str) -> Plan {
    Plan {
        gate: Some(name.to_string()),
        ..Plan::default()
    }
}

async fn start(plan: Plan) -> (Arc<Job>, SagaHandle<Job>) {
    let saga = Arc::new(Job::default());
    let runtime = runtime_with(&saga).await;
    let handle = runtime.start::<Job>(plan).await.expect("the saga starts");
    (saga, handle)
}

fn compensated<O: std::fmt::Debug>(outcome: &Outcome<O>) -> &Report {
    match outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a compensated saga, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn cancel_during_a_step_lets_the_attempt_finish_and_compensates_it() {
    let (saga, handle) = start(gated("b")).await;
    saga.entered.notified().await;
    handle.cancel();
    saga.release.notify_one();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    let report = compensated(&outcome);
    assert_eq!(report.cause, Cause::Cancelled);
    assert_eq!(report.compensated, ["b", "a"]);
    assert_eq!(
        saga.calls.all(),
        [
            "a 1 started",
            "a 1 finished",
            "b 1 started",
            "b 1 finished",
            "undo_b 1 started",
            "undo_b 1 finished",
            "undo_a 1 started",
            "undo_a 1 finished",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_during_a_failing_attempt_starts_no_retry() {
    let plan = Plan {
        b_fails: 5,
        ..gated("b")
    };
    let (saga, handle) = start(plan).await;
    saga.entered.notified().await;
    handle.cancel();
    saga.release.notify_one();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    let report = compensated(&outcome);
    assert_eq!(report.cause, Cause::Cancelled);
    // `b` did not complete: it is not compensated, and not retried.
    assert_eq!(report.compensated, ["a"]);
    assert_eq!(saga.calls.count("b 1 started"), 1);
    assert!(!saga.ran("undo_b"));
    assert_eq!(saga.calls.count("b 2 started"), 0);
}

#[tokio::test(start_paused = true)]
async fn cancel_during_a_backoff_wait_ends_it_and_rolls_back() {
    let start_time = Instant::now();
    let plan = Plan {
        b_fails: 5,
        ..Plan::default()
    };
    let (saga, handle) = start(plan).await;
    // `b` failed at once and now waits an hour before its second attempt.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(saga.calls.count("b 1 finished"), 1);
    handle.cancel();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    assert_eq!(start_time.elapsed(), Duration::from_secs(1));
    let report = compensated(&outcome);
    assert_eq!(report.cause, Cause::Cancelled);
    assert_eq!(report.compensated, ["a"]);
    assert_eq!(saga.calls.count("b 2 started"), 0);
    assert!(!saga.ran("c"));
}

#[tokio::test(start_paused = true)]
async fn cancel_before_the_first_step_runs_nothing() {
    let (saga, handle) = start(Plan::default()).await;
    // On this single-threaded runtime the saga's task has not run yet.
    handle.cancel();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    let report = compensated(&outcome);
    assert_eq!(report.cause, Cause::Cancelled);
    assert!(report.compensated.is_empty());
    assert!(saga.calls.all().is_empty(), "{:?}", saga.calls.all());
}

#[tokio::test(start_paused = true)]
async fn cancel_during_rollback_does_not_cut_a_compensation_short() {
    let plan = Plan {
        c_refuses: true,
        ..gated("undo_a")
    };
    let (saga, handle) = start(plan).await;
    saga.entered.notified().await;
    handle.cancel();
    saga.release.notify_one();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    let report = compensated(&outcome);
    // The rollback was for the pivot's failure; it ran to its end.
    assert_eq!(report.failed_step(), Some("c"));
    assert_eq!(report.compensated, ["b", "a"]);
    assert_eq!(saga.calls.count("undo_a 1 finished"), 1);
}

#[tokio::test(start_paused = true)]
async fn cancel_during_rollback_does_not_stop_a_compensation_retrying() {
    let plan = Plan {
        c_refuses: true,
        undo_a_fails: 2,
        ..Plan::default()
    };
    let (saga, handle) = start(plan).await;
    // `undo_a` failed once and waits before its second attempt.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(saga.calls.count("undo_a 1 finished"), 1);
    handle.cancel();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    assert_eq!(compensated(&outcome).compensated, ["b", "a"]);
    assert_eq!(saga.calls.count("undo_a 3 finished"), 1);
}

#[tokio::test(start_paused = true)]
async fn cancel_while_the_pivot_runs_lets_it_commit_the_saga() {
    let (saga, handle) = start(gated("c")).await;
    saga.entered.notified().await;
    handle.cancel();
    saga.release.notify_one();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert!(saga.ran("d"));
    assert!(!saga.ran("undo_a") && !saga.ran("undo_b"));
}

#[tokio::test(start_paused = true)]
async fn cancel_after_the_pivot_has_no_effect() {
    let (saga, handle) = start(gated("d")).await;
    saga.entered.notified().await;
    handle.cancel();
    saga.release.notify_one();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert!(!saga.ran("undo_a") && !saga.ran("undo_b"));
}

#[tokio::test(start_paused = true)]
async fn cancel_during_a_backoff_wait_after_the_pivot_has_no_effect() {
    let plan = Plan {
        d_fails: 3,
        ..Plan::default()
    };
    let (saga, handle) = start(plan).await;
    // `d` failed once and waits (at least 50 ms) before its second attempt.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(saga.calls.count("d 1 finished"), 1);
    assert_eq!(saga.calls.count("d 2 started"), 0);
    handle.cancel();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.calls.count("d 4 finished"), 1);
    assert!(!saga.ran("undo_a") && !saga.ran("undo_b"));
}

#[tokio::test(start_paused = true)]
async fn a_canceller_cancels_from_another_task() {
    let (saga, handle) = start(gated("a")).await;
    let canceller = handle.canceller();
    let job = Arc::clone(&saga);
    tokio::spawn(async move {
        job.entered.notified().await;
        canceller.cancel();
        job.release.notify_one();
    });
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    let report = compensated(&outcome);
    assert_eq!(report.cause, Cause::Cancelled);
    assert_eq!(report.compensated, ["a"]);
    assert!(!saga.ran("b"));
}

/// `first`, then `slow`, whose first three attempts hang until their 50 ms
/// timeout (100 ms apart), then the pivot.
#[derive(Default)]
pub struct Hanging {
    calls: Calls,
}

#[saga(input = ())]
impl Hanging {
    #[step(compensate = undo_first)]
    async fn first(&self) -> Result<(), StepError> {
        self.calls.push("first");
        Ok(())
    }
    async fn undo_first(&self) -> Result<(), StepError> {
        self.calls.push("undo_first");
        Ok(())
    }

    #[step(
        compensate = undo_slow,
        retry(attempts = 5, backoff = fixed("100ms")),
        timeout = "50ms"
    )]
    async fn slow(&self, cx: &StepContext) -> Result<(), StepError> {
        self.calls.push(format!("slow {}", cx.attempt()));
        if cx.attempt() <= 3 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(())
    }
    async fn undo_slow(&self) -> Result<(), StepError> {
        self.calls.push("undo_slow");
        Ok(())
    }

    #[step(pivot)]
    async fn commit(&self) -> Result<(), StepError> {
        self.calls.push("commit");
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn cancel_after_a_timed_out_attempt_waits_until_the_step_answers() {
    let saga = Arc::new(Hanging::default());
    let runtime = runtime_with(&saga).await;
    let start_time = Instant::now();
    let handle = runtime.start::<Hanging>(()).await.unwrap();
    // The first attempt of `slow` timed out at 50 ms; it now waits 100 ms.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(saga.calls.all(), ["first", "slow 1"]);
    handle.cancel();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    let report = compensated(&outcome);
    assert_eq!(report.cause, Cause::Cancelled);
    // The timed-out attempt may have acted, so the rollback waits for
    // `slow` to answer (its fourth attempt) and then undoes it too.
    assert_eq!(
        saga.calls.all(),
        [
            "first",
            "slow 1",
            "slow 2",
            "slow 3",
            "slow 4",
            "undo_slow",
            "undo_first"
        ]
    );
    assert_eq!(report.compensated, ["slow", "first"]);
    // Three 50 ms timeouts and three 100 ms waits; `commit` never runs.
    assert_eq!(start_time.elapsed(), Duration::from_millis(450));
}
