//! A `Listener` sees every transition of a saga, in the order it happens:
//! start, each attempt of each step, rollback, each compensation, and the
//! end (completed, compensated or stuck). The steps write to the same log as
//! the listener, so the order is checked against what really ran.

mod support;

use std::sync::{Arc, Mutex};

use saga::prelude::*;
use saga::{Event, EventKind, Listener, SagaId};
use serde::{Deserialize, Serialize};
use support::{Boom, within_a_day};

/// One shared log: the listener's events and the steps' own calls.
type Log = Arc<Mutex<Vec<(SagaId, String)>>>;

/// Writes every event it receives to the log, as a line of text.
struct Recorder {
    log: Log,
    names: Arc<Mutex<Vec<&'static str>>>,
}

impl Listener for Recorder {
    fn on_event(&self, event: &Event<'_>) {
        let line = match event.kind {
            EventKind::Started => "started".to_string(),
            EventKind::StepStarted { step, attempt } => format!("step {step} #{attempt}"),
            EventKind::StepSucceeded { step, attempt } => format!("ok {step} #{attempt}"),
            EventKind::StepFailed {
                step,
                attempt,
                error,
                will_retry,
                ..
            } => format!("failed {step} #{attempt} retry={will_retry}: {error}"),
            EventKind::RollbackStarted { cause } => format!("rollback: {cause}"),
            EventKind::CompensationStarted { step, attempt } => format!("undo {step} #{attempt}"),
            EventKind::CompensationSucceeded { step, attempt } => {
                format!("undone {step} #{attempt}")
            }
            EventKind::CompensationFailed {
                step,
                attempt,
                error,
                will_retry,
            } => format!("undo failed {step} #{attempt} retry={will_retry}: {error}"),
            EventKind::Completed => "completed".to_string(),
            EventKind::Compensated => "compensated".to_string(),
            EventKind::Stuck { failure } => format!("stuck: {failure}"),
            other => format!("{other:?}"),
        };
        self.log.lock().unwrap().push((event.saga_id, line));
        self.names.lock().unwrap().push(event.saga);
    }
}

/// What the steps do.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    /// `a` fails retryably on its first `n` attempts.
    pub a_fails: u32,
    /// The pivot `c` fails permanently.
    pub c_refuses: bool,
    /// `undo_b` fails permanently.
    pub undo_b_refuses: bool,
    /// `d` (after the pivot) fails permanently.
    pub d_refuses: bool,
}

/// `a` (3 attempts), `b`, the pivot `c`, then `d`.
pub struct Evented {
    log: Log,
}

impl Evented {
    fn body(&self, name: &str, cx: &StepContext) {
        self.log
            .lock()
            .unwrap()
            .push((cx.saga_id(), format!("body {name}")));
    }
}

#[saga(input = Plan)]
impl Evented {
    #[step(compensate = undo_a, retry(attempts = 3, backoff = none))]
    async fn a(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.body("a", cx);
        if cx.attempt() <= input.a_fails {
            return Err(StepError::msg("busy"));
        }
        Ok(())
    }
    async fn undo_a(&self, cx: &StepContext) -> Result<(), StepError> {
        self.body("undo_a", cx);
        Ok(())
    }

    #[step(compensate = undo_b, compensate_retry(attempts = 3))]
    async fn b(&self, cx: &StepContext) -> Result<(), StepError> {
        self.body("b", cx);
        Ok(())
    }
    async fn undo_b(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.body("undo_b", cx);
        if input.undo_b_refuses {
            return Err(permanent(Boom("cannot undo")));
        }
        Ok(())
    }

    #[step(pivot)]
    async fn c(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.body("c", cx);
        if input.c_refuses {
            return Err(permanent(Boom("refused")));
        }
        Ok(())
    }

    #[step]
    async fn d(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.body("d", cx);
        if input.d_refuses {
            return Err(permanent(Boom("gone")));
        }
        Ok(())
    }
}

struct Setup {
    runtime: Runtime,
    log: Log,
    names: Arc<Mutex<Vec<&'static str>>>,
}

impl Setup {
    async fn new() -> Setup {
        let log = Log::default();
        let names = Arc::new(Mutex::new(Vec::new()));
        let runtime = Runtime::builder()
            .listener(Recorder {
                log: Arc::clone(&log),
                names: Arc::clone(&names),
            })
            .build()
            .await
            .expect("an in-memory runtime");
        runtime.register(Arc::new(Evented {
            log: Arc::clone(&log),
        }));
        Setup {
            runtime,
            log,
            names,
        }
    }

    /// Runs one saga; returns its id and everything logged for it.
    async fn run(&self, plan: Plan) -> (SagaId, Outcome<EventedOutputs>, Vec<String>) {
        let handle = self.runtime.start::<Evented>(plan).await.unwrap();
        let id = handle.id();
        let outcome = within_a_day(handle.outcome()).await.unwrap();
        (id, outcome, self.lines_of(id))
    }

    fn lines_of(&self, id: SagaId) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, l)| l.clone())
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_completed_saga_reports_every_step_in_order() {
    let setup = Setup::new().await;
    let (_, outcome, lines) = setup.run(Plan::default()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        lines,
        [
            "started",
            "step a #1",
            "body a",
            "ok a #1",
            "step b #1",
            "body b",
            "ok b #1",
            "step c #1",
            "body c",
            "ok c #1",
            "step d #1",
            "body d",
            "ok d #1",
            "completed",
        ]
    );
    let names = setup.names.lock().unwrap();
    assert!(names.iter().all(|n| *n == "Evented"), "{names:?}");
}

#[tokio::test(start_paused = true)]
async fn every_failed_attempt_and_retry_is_reported() {
    let setup = Setup::new().await;
    let plan = Plan {
        a_fails: 2,
        ..Plan::default()
    };
    let (_, outcome, lines) = setup.run(plan).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        lines[..10],
        [
            "started",
            "step a #1",
            "body a",
            "failed a #1 retry=true: busy",
            "step a #2",
            "body a",
            "failed a #2 retry=true: busy",
            "step a #3",
            "body a",
            "ok a #3",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_failed_attempt_says_no_retry_follows_then_rollback_is_reported() {
    let setup = Setup::new().await;
    let plan = Plan {
        a_fails: 3,
        ..Plan::default()
    };
    let (_, outcome, lines) = setup.run(plan).await;
    assert!(outcome.is_compensated(), "{outcome:?}");
    assert_eq!(
        lines[7..],
        [
            "step a #3",
            "body a",
            "failed a #3 retry=false: busy",
            "rollback: step `a` failed after 3 attempts (attempts exhausted): busy",
            "compensated",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollback_reports_each_compensation_in_order() {
    let setup = Setup::new().await;
    let plan = Plan {
        c_refuses: true,
        ..Plan::default()
    };
    let (_, outcome, lines) = setup.run(plan).await;
    assert!(outcome.is_compensated(), "{outcome:?}");
    assert_eq!(
        lines,
        [
            "started",
            "step a #1",
            "body a",
            "ok a #1",
            "step b #1",
            "body b",
            "ok b #1",
            "step c #1",
            "body c",
            "failed c #1 retry=false: refused",
            "rollback: step `c` failed after 1 attempt (permanent error): refused",
            "undo b #1",
            "body undo_b",
            "undone b #1",
            "undo a #1",
            "body undo_a",
            "undone a #1",
            "compensated",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stuck_compensation_is_reported_and_ends_the_saga() {
    let setup = Setup::new().await;
    let plan = Plan {
        c_refuses: true,
        undo_b_refuses: true,
        ..Plan::default()
    };
    let (_, outcome, lines) = setup.run(plan).await;
    assert!(outcome.is_stuck(), "{outcome:?}");
    assert_eq!(
        lines[10..],
        [
            "rollback: step `c` failed after 1 attempt (permanent error): refused",
            "undo b #1",
            "body undo_b",
            "undo failed b #1 retry=false: cannot undo",
            "stuck: compensation `undo_b` failed after 1 attempt (permanent error): cannot undo",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_stuck_after_the_pivot_is_reported_without_rollback() {
    let setup = Setup::new().await;
    let plan = Plan {
        d_refuses: true,
        ..Plan::default()
    };
    let (_, outcome, lines) = setup.run(plan).await;
    assert!(outcome.is_stuck(), "{outcome:?}");
    assert_eq!(
        lines[10..],
        [
            "step d #1",
            "body d",
            "failed d #1 retry=false: gone",
            "stuck: step `d` failed after 1 attempt (permanent error): gone",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_saga_reports_why_it_rolled_back() {
    let setup = Setup::new().await;
    let handle = setup
        .runtime
        .start::<Evented>(Plan::default())
        .await
        .unwrap();
    let id = handle.id();
    handle.cancel();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    assert!(outcome.is_compensated(), "{outcome:?}");
    assert_eq!(
        setup.lines_of(id),
        ["started", "rollback: cancelled", "compensated"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sagas_each_report_their_own_transitions_in_order() {
    let setup = Arc::new(Setup::new().await);
    let plans = [
        Plan::default(),
        Plan {
            c_refuses: true,
            ..Plan::default()
        },
        Plan {
            a_fails: 1,
            ..Plan::default()
        },
        Plan::default(),
    ];
    let mut handles = Vec::new();
    for plan in plans.into_iter().cycle().take(16) {
        handles.push(setup.runtime.start::<Evented>(plan).await.unwrap());
    }
    let mut ended = Vec::new();
    for handle in handles {
        let id = handle.id();
        let outcome = within_a_day(handle.outcome()).await.unwrap();
        ended.push((id, outcome.is_completed()));
    }
    for (id, completed) in ended {
        let lines = setup.lines_of(id);
        assert_eq!(lines.first().map(String::as_str), Some("started"));
        let last = if completed {
            "completed"
        } else {
            "compensated"
        };
        assert_eq!(lines.last().map(String::as_str), Some(last), "{lines:?}");
        // Every attempt's body sits between its start and its result.
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("step ") {
                let step = rest.split(' ').next().unwrap();
                assert_eq!(lines[i + 1], format!("body {step}"), "{lines:?}");
                assert!(
                    lines[i + 2].starts_with(&format!("ok {step} "))
                        || lines[i + 2].starts_with(&format!("failed {step} ")),
                    "{lines:?}"
                );
            }
        }
    }
}
