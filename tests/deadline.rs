//! The saga deadline stops forward work: no step or attempt starts after it,
//! and a wait between attempts is cut short, then the saga rolls back. An
//! attempt already running finishes (and is compensated if it succeeded);
//! compensations are never cut short; past the pivot the deadline no longer
//! applies. All on tokio's paused clock.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga::prelude::*;
use saga::{Cause, Report};
use serde::{Deserialize, Serialize};
use support::{runtime_with, within_a_day};
use tokio::time::Instant;

/// What each step does, in milliseconds of sleep and failed attempts.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    /// `a` sleeps this long.
    pub a: u64,
    /// `b` sleeps this long on every attempt.
    pub b: u64,
    /// `b` fails retryably on its first `n` attempts.
    pub b_fails: u32,
    /// The pivot `c` sleeps this long.
    pub c: u64,
    /// `e` (after the pivot) fails retryably on its first `n` attempts.
    pub e_fails: u32,
    /// `undo_a` sleeps this long.
    pub undo_a: u64,
}

/// `a`, `b` (5 attempts, 10 s apart), the pivot `c`, then `e`; the saga's
/// deadline is 1 s.
#[derive(Default)]
pub struct Trip {
    /// `(event, time since the saga started)`.
    log: Mutex<Vec<(String, Duration)>>,
    start: Mutex<Option<Instant>>,
}

impl Trip {
    fn note(&self, event: String) {
        let start = self.start.lock().unwrap().expect("the test sets the start");
        self.log.lock().unwrap().push((event, start.elapsed()));
    }

    async fn work(&self, name: &str, cx: &StepContext, ms: u64) {
        self.note(format!("{name} {} started", cx.attempt()));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.note(format!("{name} {} finished", cx.attempt()));
    }

    fn events(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(e, _)| e.clone())
            .collect()
    }

    fn at(&self, event: &str) -> Duration {
        let log = self.log.lock().unwrap();
        log.iter()
            .find(|(e, _)| e == event)
            .unwrap_or_else(|| panic!("no `{event}` in {log:?}"))
            .1
    }
}

#[saga(input = Plan, deadline = "1s")]
impl Trip {
    #[step(compensate = undo_a)]
    async fn a(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.work("a", cx, input.a).await;
        Ok(())
    }
    async fn undo_a(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.work("undo_a", cx, input.undo_a).await;
        Ok(())
    }

    #[step(compensate = undo_b, retry(attempts = 5, backoff = fixed("10s")))]
    async fn b(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.work("b", cx, input.b).await;
        if cx.attempt() <= input.b_fails {
            return Err(StepError::msg("busy"));
        }
        Ok(())
    }
    async fn undo_b(&self, cx: &StepContext) -> Result<(), StepError> {
        self.work("undo_b", cx, 0).await;
        Ok(())
    }

    #[step(pivot)]
    async fn c(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.work("c", cx, input.c).await;
        Ok(())
    }

    #[step(retry(backoff = fixed("1s")))]
    async fn e(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.work("e", cx, 0).await;
        if cx.attempt() <= input.e_fails {
            return Err(StepError::msg("busy"));
        }
        Ok(())
    }
}

async fn run(plan: Plan, options: SagaOptions) -> (Arc<Trip>, Outcome<TripOutputs>, Duration) {
    let saga = Arc::new(Trip::default());
    let runtime = runtime_with(&saga).await;
    let start = Instant::now();
    *saga.start.lock().unwrap() = Some(start);
    let outcome = within_a_day(runtime.run_with::<Trip>(plan, options))
        .await
        .expect("the saga runs");
    (saga, outcome, start.elapsed())
}

fn past_deadline(outcome: &Outcome<TripOutputs>) -> &Report {
    match outcome {
        Outcome::Compensated(report) => {
            assert_eq!(report.cause, Cause::DeadlineExceeded, "{report}");
            report
        }
        other => panic!("expected a saga compensated for its deadline, got {other:?}"),
    }
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(start_paused = true)]
async fn a_saga_within_its_deadline_completes() {
    let (saga, outcome, _) = run(Plan::default(), SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert!(!saga.events().iter().any(|e| e.starts_with("undo")));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_too_far_to_reach_is_none() {
    let far = SagaOptions::new().deadline(Duration::MAX);
    let (_, outcome, _) = run(Plan::default(), far).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    // Started on a task of its own, likewise (it panicked there before).
    let saga = Arc::new(Trip::default());
    let runtime = runtime_with(&saga).await;
    *saga.start.lock().unwrap() = Some(Instant::now());
    let far = SagaOptions::new().deadline(Duration::MAX);
    let handle = runtime.start_with::<Trip>(Plan::default(), far).await;
    let outcome = within_a_day(handle.unwrap().outcome()).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
}

#[tokio::test(start_paused = true)]
async fn no_step_starts_after_the_deadline() {
    let plan = Plan {
        a: 2_000,
        ..Plan::default()
    };
    let (saga, outcome, elapsed) = run(plan, SagaOptions::new()).await;
    let report = past_deadline(&outcome);
    // `a` was running at the deadline: it finished, then was undone.
    assert_eq!(
        saga.events(),
        [
            "a 1 started",
            "a 1 finished",
            "undo_a 1 started",
            "undo_a 1 finished"
        ]
    );
    assert_eq!(saga.at("a 1 finished"), s(2));
    assert_eq!(report.compensated, ["a"]);
    assert_eq!(elapsed, s(2));
}

#[tokio::test(start_paused = true)]
async fn a_running_attempt_finishes_and_is_compensated() {
    let plan = Plan {
        b: 3_000,
        ..Plan::default()
    };
    let (saga, outcome, _) = run(plan, SagaOptions::new()).await;
    let report = past_deadline(&outcome);
    assert_eq!(saga.at("b 1 finished"), s(3), "`b` was not cut short");
    assert_eq!(report.compensated, ["b", "a"]);
    assert!(
        !saga.events().iter().any(|e| e.starts_with("c ")),
        "the pivot ran"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_a_backoff_wait_short() {
    let plan = Plan {
        b_fails: 5,
        ..Plan::default()
    };
    let (saga, outcome, elapsed) = run(plan, SagaOptions::new()).await;
    let report = past_deadline(&outcome);
    // `b` failed at once and would wait 10 s: the deadline at 1 s ends the
    // wait, and no second attempt starts.
    assert_eq!(elapsed, s(1));
    assert!(!saga.events().contains(&"b 2 started".to_string()));
    assert_eq!(saga.at("undo_a 1 started"), s(1));
    // `b` never succeeded, so it is not compensated.
    assert_eq!(report.compensated, ["a"]);
    assert!(!saga.events().iter().any(|e| e.starts_with("undo_b")));
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_after_the_deadline() {
    let plan = Plan {
        b: 1_500,
        b_fails: 5,
        ..Plan::default()
    };
    let (saga, outcome, elapsed) = run(plan, SagaOptions::new()).await;
    let report = past_deadline(&outcome);
    assert_eq!(
        saga.events(),
        [
            "a 1 started",
            "a 1 finished",
            "b 1 started",
            "b 1 finished",
            "undo_a 1 started",
            "undo_a 1 finished"
        ]
    );
    assert_eq!(report.compensated, ["a"]);
    assert_eq!(elapsed, Duration::from_millis(1_500));
}

#[tokio::test(start_paused = true)]
async fn compensations_are_not_cut_short_by_the_deadline() {
    let plan = Plan {
        a: 2_000,
        undo_a: 5_000,
        ..Plan::default()
    };
    let (saga, outcome, elapsed) = run(plan, SagaOptions::new()).await;
    past_deadline(&outcome);
    assert_eq!(saga.at("undo_a 1 finished"), s(7));
    assert_eq!(elapsed, s(7));
}

#[tokio::test(start_paused = true)]
async fn a_run_option_overrides_the_declared_deadline() {
    let plan = Plan {
        a: 2_000,
        ..Plan::default()
    };
    let (_, outcome, _) = run(plan, SagaOptions::new().deadline(s(10))).await;
    assert!(outcome.is_completed(), "a 10 s deadline: {outcome:?}");

    let plan = Plan {
        a: 500,
        ..Plan::default()
    };
    let options = SagaOptions::new().deadline(Duration::from_millis(100));
    let (saga, outcome, _) = run(plan, options).await;
    past_deadline(&outcome);
    assert!(!saga.events().contains(&"b 1 started".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_pivot_running_at_the_deadline_commits_the_saga() {
    let plan = Plan {
        c: 2_000,
        ..Plan::default()
    };
    let (saga, outcome, _) = run(plan, SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert!(saga.events().contains(&"e 1 finished".to_string()));
    assert!(!saga.events().iter().any(|e| e.starts_with("undo")));
}

#[tokio::test(start_paused = true)]
async fn after_the_pivot_the_deadline_has_no_effect() {
    let plan = Plan {
        e_fails: 5,
        ..Plan::default()
    };
    let (saga, outcome, elapsed) = run(plan, SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.at("e 6 started"), s(5));
    assert_eq!(elapsed, s(5));
    assert!(!saga.events().iter().any(|e| e.starts_with("undo")));
}

/// `first`, then `slow`, whose first three attempts hang until their 50 ms
/// timeout (100 ms apart), then the pivot; the deadline is 120 ms.
#[derive(Default)]
pub struct Hanging {
    calls: support::Calls,
}

#[saga(input = (), deadline = "120ms")]
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
async fn the_deadline_waits_for_a_timed_out_step_to_answer() {
    let saga = Arc::new(Hanging::default());
    let runtime = runtime_with(&saga).await;
    let start = Instant::now();
    let outcome = within_a_day(runtime.run::<Hanging>(())).await.unwrap();
    // The first attempt of `slow` timed out at 50 ms; the deadline at 120 ms
    // falls in the 100 ms wait before the second. The timed-out attempt may
    // have acted, so the step is retried until it answers (its fourth
    // attempt, within its policy), then undone with the rest.
    let report = match &outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a saga compensated for its deadline, got {other:?}"),
    };
    assert_eq!(report.cause, Cause::DeadlineExceeded, "{report}");
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
    assert_eq!(start.elapsed(), Duration::from_millis(450));
}
