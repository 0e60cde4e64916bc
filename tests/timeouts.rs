//! A per-attempt timeout: an attempt still running when it expires is
//! dropped and counts as a retryable failure, so the step is retried by its
//! policy. Its outcome is unknown (it may have acted), so a step that
//! changes things and exhausts its attempts without an answer leaves the
//! saga stuck rather than rolling back without its output; a readonly step
//! that exhausts them rolls the saga back, and a compensation that exhausts
//! them leaves it stuck. All on tokio's paused clock.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga::prelude::*;
use saga::{Cause, Phase};
use serde::{Deserialize, Serialize};
use support::{runtime_with, within_a_day};
use tokio::time::Instant;

/// How long each attempt of each step sleeps, in milliseconds (attempts
/// past the end of a list do not sleep).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sleeps {
    /// `fetch`'s attempts.
    pub fetch: Vec<u64>,
    /// `undo_fetch`'s attempts.
    pub undo_fetch: Vec<u64>,
    /// `deliver`'s attempts.
    pub deliver: Vec<u64>,
    /// Whether the pivot fails (so that rollback runs).
    pub fail_commit: bool,
}

/// `prepare`, `fetch` (50 ms per attempt), the pivot `commit`, and
/// `deliver` (20 ms per attempt, retried forever).
#[derive(Default)]
pub struct Slow {
    /// `(what, attempt, when)`: "started" and "finished" of each attempt.
    log: Mutex<Vec<(String, u32, Instant)>>,
}

impl Slow {
    async fn attempt(&self, name: &str, sleeps: &[u64], cx: &StepContext) {
        let attempt = cx.attempt();
        let now = Instant::now();
        self.log
            .lock()
            .unwrap()
            .push((format!("{name} started"), attempt, now));
        let ms = sleeps.get(attempt as usize - 1).copied().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.log
            .lock()
            .unwrap()
            .push((format!("{name} finished"), attempt, Instant::now()));
    }

    fn attempts(&self, what: &str) -> Vec<u32> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(w, _, _)| w == what)
            .map(|(_, a, _)| *a)
            .collect()
    }

    fn times(&self, what: &str) -> Vec<Instant> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(w, _, _)| w == what)
            .map(|(_, _, t)| *t)
            .collect()
    }
}

#[saga(input = Sleeps)]
impl Slow {
    #[step(compensate = undo_prepare)]
    async fn prepare(&self, cx: &StepContext) -> Result<(), StepError> {
        self.attempt("prepare", &[], cx).await;
        Ok(())
    }
    async fn undo_prepare(&self, cx: &StepContext) -> Result<(), StepError> {
        self.attempt("undo_prepare", &[], cx).await;
        Ok(())
    }

    #[step(
        compensate = undo_fetch,
        retry(attempts = 3, backoff = none),
        timeout = "50ms",
        compensate_retry(attempts = 3, backoff = none, timeout = "30ms")
    )]
    async fn fetch(&self, input: &Sleeps, cx: &StepContext) -> Result<u32, StepError> {
        self.attempt("fetch", &input.fetch, cx).await;
        Ok(cx.attempt())
    }
    async fn undo_fetch(&self, input: &Sleeps, cx: &StepContext) -> Result<(), StepError> {
        self.attempt("undo_fetch", &input.undo_fetch, cx).await;
        Ok(())
    }

    #[step(pivot, retry(attempts = 1))]
    async fn commit(&self, input: &Sleeps) -> Result<(), StepError> {
        if input.fail_commit {
            return Err(permanent(support::Boom("rejected")));
        }
        Ok(())
    }

    #[step(retry(backoff = fixed("5ms"), timeout = "20ms"))]
    async fn deliver(&self, input: &Sleeps, cx: &StepContext) -> Result<(), StepError> {
        self.attempt("deliver", &input.deliver, cx).await;
        Ok(())
    }
}

async fn run(sleeps: Sleeps, options: SagaOptions) -> (Arc<Slow>, Outcome<SlowOutputs>) {
    let saga = Arc::new(Slow::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run_with::<Slow>(sleeps, options))
        .await
        .expect("the saga runs");
    (saga, outcome)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_times_out_is_retried() {
    let start = Instant::now();
    let sleeps = Sleeps {
        fetch: vec![1_000, 0],
        ..Sleeps::default()
    };
    let (saga, outcome) = run(sleeps, SagaOptions::new()).await;
    let outputs = outcome.completed().expect("the second attempt succeeds");
    assert_eq!(outputs.fetch, 2);
    assert_eq!(saga.attempts("fetch started"), [1, 2]);
    // The first attempt was cut off at 50 ms and dropped, not awaited.
    assert_eq!(saga.attempts("fetch finished"), [2]);
    let started = saga.times("fetch started");
    assert_eq!(started[1] - started[0], ms(50));
    assert_eq!(start.elapsed(), ms(50));
    assert!(saga.attempts("undo_fetch started").is_empty());

    // Even much later, the dropped attempt never resumes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(saga.attempts("fetch finished"), [2]);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_within_its_timeout_is_not_cut_off() {
    let sleeps = Sleeps {
        fetch: vec![49],
        ..Sleeps::default()
    };
    let (saga, outcome) = run(sleeps, SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.attempts("fetch finished"), [1]);
}

#[tokio::test(start_paused = true)]
async fn a_step_that_times_out_on_every_attempt_leaves_the_saga_stuck() {
    let sleeps = Sleeps {
        fetch: vec![1_000; 5],
        ..Sleeps::default()
    };
    let (saga, outcome) = run(sleeps, SagaOptions::new()).await;
    // Three attempts allowed, and each timed-out one may have acted: rolling
    // back without `fetch`'s output could orphan that, so a person decides.
    let Outcome::Stuck(report) = outcome else {
        panic!("expected stuck, got {outcome:?}");
    };
    let stuck = report.stuck.as_ref().expect("what gave up");
    assert_eq!(
        (stuck.step, stuck.phase, stuck.attempts),
        ("fetch", Phase::Forward, 3)
    );
    assert!(report.compensated.is_empty(), "{report}");
    assert_eq!(saga.attempts("fetch started"), [1, 2, 3]);
    assert!(saga.attempts("undo_prepare started").is_empty());
}

/// A readonly step changes nothing, so a timed-out attempt of it orphans
/// nothing: exhausting its attempts rolls the saga back.
#[derive(Default)]
pub struct SlowLookup {
    undone: Mutex<Vec<&'static str>>,
}

#[saga(input = ())]
impl SlowLookup {
    #[step(compensate = undo_reserve)]
    async fn reserve(&self) -> Result<(), StepError> {
        Ok(())
    }
    async fn undo_reserve(&self) -> Result<(), StepError> {
        self.undone.lock().unwrap().push("reserve");
        Ok(())
    }

    #[step(readonly, retry(attempts = 3, backoff = none), timeout = "50ms")]
    async fn look_up(&self) -> Result<(), StepError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }

    #[step(pivot)]
    async fn commit(&self) -> Result<(), StepError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_readonly_step_timing_out_on_every_attempt_rolls_the_saga_back() {
    let start = Instant::now();
    let saga = Arc::new(SlowLookup::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run::<SlowLookup>(()))
        .await
        .expect("the saga runs");
    let report = match &outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a compensated saga, got {other:?}"),
    };
    match &report.cause {
        Cause::StepFailed(failure) => {
            assert_eq!(failure.step, "look_up");
            assert_eq!(failure.attempts, 3);
            assert!(failure.retryable, "a timeout is a retryable failure");
            assert!(
                failure.error.contains("timed out"),
                "the error says what happened: {}",
                failure.error
            );
        }
        other => panic!("expected a step failure, got {other:?}"),
    }
    assert_eq!(report.compensated, ["reserve"]);
    assert_eq!(*saga.undone.lock().unwrap(), ["reserve"]);
    assert_eq!(start.elapsed(), ms(150));
}

#[tokio::test(start_paused = true)]
async fn a_runtime_override_sets_the_timeout() {
    let sleeps = Sleeps {
        fetch: vec![30, 30],
        ..Sleeps::default()
    };
    let options = SagaOptions::new().retry("fetch", RetryPolicy::attempts(3).timeout(ms(10)));
    let start = Instant::now();
    let (saga, outcome) = run(sleeps, options).await;
    // The 50 ms of the attribute would let 30 ms attempts finish; the
    // override's 10 ms cuts the first two off.
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.attempts("fetch started"), [1, 2, 3]);
    assert_eq!(saga.attempts("fetch finished"), [3]);
    assert_eq!(start.elapsed(), ms(20));
}

#[tokio::test(start_paused = true)]
async fn a_runtime_override_without_timeout_removes_it() {
    let sleeps = Sleeps {
        fetch: vec![1_000],
        ..Sleeps::default()
    };
    let options = SagaOptions::new().retry("fetch", RetryPolicy::attempts(2));
    let start = Instant::now();
    let (saga, outcome) = run(sleeps, options).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.attempts("fetch finished"), [1]);
    assert_eq!(start.elapsed(), ms(1_000));
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_times_out_is_retried() {
    let sleeps = Sleeps {
        undo_fetch: vec![1_000, 0],
        fail_commit: true,
        ..Sleeps::default()
    };
    let (saga, outcome) = run(sleeps, SagaOptions::new()).await;
    match &outcome {
        Outcome::Compensated(report) => assert_eq!(report.compensated, ["fetch", "prepare"]),
        other => panic!("expected a compensated saga, got {other:?}"),
    }
    assert_eq!(saga.attempts("undo_fetch started"), [1, 2]);
    assert_eq!(saga.attempts("undo_fetch finished"), [2]);
    let started = saga.times("undo_fetch started");
    assert_eq!(started[1] - started[0], ms(30));
}

#[tokio::test(start_paused = true)]
async fn a_compensation_timing_out_on_every_attempt_leaves_the_saga_stuck() {
    let sleeps = Sleeps {
        undo_fetch: vec![1_000; 3],
        fail_commit: true,
        ..Sleeps::default()
    };
    let (saga, outcome) = run(sleeps, SagaOptions::new()).await;
    let report = match &outcome {
        Outcome::Stuck(report) => report,
        other => panic!("expected a stuck saga, got {other:?}"),
    };
    let stuck = report
        .stuck
        .as_ref()
        .expect("the report names what gave up");
    assert_eq!(stuck.step, "fetch");
    assert_eq!(stuck.compensation, Some("undo_fetch"));
    assert_eq!(stuck.phase, Phase::Compensation);
    assert_eq!(stuck.attempts, 3);
    assert!(stuck.retryable);
    assert!(stuck.error.contains("timed out"), "{}", stuck.error);
    assert!(report.compensated.is_empty());
    // Rollback stopped at `fetch`: `prepare` stays as it is.
    assert!(saga.attempts("undo_prepare started").is_empty());
}

#[tokio::test(start_paused = true)]
async fn after_the_pivot_a_step_that_times_out_is_retried_until_it_succeeds() {
    let sleeps = Sleeps {
        deliver: vec![1_000; 6],
        ..Sleeps::default()
    };
    let (saga, outcome) = run(sleeps, SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.attempts("deliver started"), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(saga.attempts("deliver finished"), [7]);
    let started = saga.times("deliver started");
    // 20 ms until the timeout, then the 5 ms backoff.
    for gap in started.windows(2).map(|w| w[1] - w[0]) {
        assert_eq!(gap, ms(25));
    }
    assert!(saga.attempts("undo_fetch started").is_empty());
}
