//! The pivot is the point of no return: if it fails the saga rolls back like
//! after any other failure; once it succeeds nothing is ever compensated,
//! later steps are retried until they succeed, and a step whose attempts a
//! person capped leaves the saga stuck instead.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use saga::prelude::*;
use saga::{Cause, Faults, Phase};
use serde::{Deserialize, Serialize};
use support::{Boom, Calls, runtime_with, within_a_day};

/// How each step behaves.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    /// `capture` (the pivot) fails permanently.
    pub pivot_refuses: bool,
    /// `notify` fails retryably on its first `n` attempts.
    pub notify_fails: u32,
    /// `notify` fails permanently.
    pub notify_refuses: bool,
    /// `audit` (readonly, after the pivot) fails retryably on its first `n`
    /// attempts.
    pub audit_fails: u32,
    /// `archive` (capped at 2 attempts) fails retryably on its first `n`
    /// attempts.
    pub archive_fails: u32,
}

/// `hold`, `credit`, the pivot `capture`, then `notify`, readonly `audit`
/// and `archive` (capped by a person at 2 attempts).
#[derive(Default)]
pub struct Payment {
    calls: Calls,
    /// An operator fixed what made `archive` fail.
    archive_fixed: AtomicBool,
}

#[saga(input = Plan)]
impl Payment {
    #[step(compensate = release)]
    async fn hold(&self) -> Result<(), StepError> {
        self.calls.push("hold");
        Ok(())
    }
    async fn release(&self) -> Result<(), StepError> {
        self.calls.push("release");
        Ok(())
    }

    #[step(compensate = reverse)]
    async fn credit(&self) -> Result<(), StepError> {
        self.calls.push("credit");
        Ok(())
    }
    async fn reverse(&self) -> Result<(), StepError> {
        self.calls.push("reverse");
        Ok(())
    }

    #[step(pivot, retry(backoff = none))]
    async fn capture(&self, input: &Plan) -> Result<(), StepError> {
        self.calls.push("capture");
        if input.pivot_refuses {
            return Err(permanent(Boom("card declined")));
        }
        Ok(())
    }

    #[step(retry(backoff = fixed("1s")))]
    async fn notify(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.calls.push("notify");
        if input.notify_refuses {
            return Err(permanent(Boom("no such address")));
        }
        if cx.attempt() <= input.notify_fails {
            return Err(StepError::msg("mail server down"));
        }
        Ok(())
    }

    #[step(readonly, retry(backoff = fixed("10s")))]
    async fn audit(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.calls.push("audit");
        if cx.attempt() <= input.audit_fails {
            return Err(StepError::msg("audit log busy"));
        }
        Ok(())
    }

    #[step(retry(attempts = 2, backoff = none))]
    async fn archive(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.calls.push("archive");
        if cx.attempt() <= input.archive_fails && !self.archive_fixed.load(Ordering::SeqCst) {
            return Err(StepError::msg("archive full"));
        }
        Ok(())
    }
}

async fn run(plan: Plan, options: SagaOptions) -> (Arc<Payment>, Outcome<PaymentOutputs>) {
    let saga = Arc::new(Payment::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run_with::<Payment>(plan, options))
        .await
        .expect("the saga runs");
    (saga, outcome)
}

fn stuck<O: std::fmt::Debug>(outcome: &Outcome<O>) -> &saga::Report {
    match outcome {
        Outcome::Stuck(report) => report,
        other => panic!("expected a stuck saga, got {other:?}"),
    }
}

const UNDO: [&str; 2] = ["release", "reverse"];

#[tokio::test(start_paused = true)]
async fn a_failing_pivot_rolls_the_saga_back() {
    let plan = Plan {
        pivot_refuses: true,
        ..Plan::default()
    };
    let (saga, outcome) = run(plan, SagaOptions::new()).await;
    assert_eq!(
        saga.calls.all(),
        ["hold", "credit", "capture", "reverse", "release"]
    );
    match &outcome {
        Outcome::Compensated(report) => {
            assert_eq!(report.failed_step(), Some("capture"));
            assert_eq!(report.compensated, ["credit", "hold"]);
        }
        other => panic!("expected a compensated saga, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_pivot_gets_the_bounded_policy_of_the_steps_before_it() {
    // The pivot may still roll back, so it is not retried forever: three
    // attempts by default, then rollback.
    let options = SagaOptions::new().faults(Faults::new().fail_step("capture", 1..));
    let (saga, outcome) = run(Plan::default(), options).await;
    match &outcome {
        Outcome::Compensated(report) => match &report.cause {
            Cause::StepFailed(failure) => {
                assert_eq!(failure.step, "capture");
                assert_eq!(failure.attempts, 3);
                assert!(failure.retryable);
            }
            other => panic!("expected a step failure, got {other:?}"),
        },
        other => panic!("expected a compensated saga, got {other:?}"),
    }
    assert_eq!(saga.calls.all(), ["hold", "credit", "reverse", "release"]);
}

#[tokio::test(start_paused = true)]
async fn after_the_pivot_a_step_is_retried_until_it_succeeds() {
    let plan = Plan {
        notify_fails: 25,
        ..Plan::default()
    };
    let (saga, outcome) = run(plan, SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.calls.count("notify"), 26);
    assert_eq!(saga.calls.count("capture"), 1);
    for undo in UNDO {
        assert_eq!(saga.calls.count(undo), 0, "`{undo}` ran after the pivot");
    }
}

#[tokio::test(start_paused = true)]
async fn after_the_pivot_a_readonly_step_is_retried_until_it_succeeds() {
    let plan = Plan {
        audit_fails: 10,
        ..Plan::default()
    };
    let (saga, outcome) = run(plan, SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.calls.count("audit"), 11);
}

#[tokio::test(start_paused = true)]
async fn after_the_pivot_a_permanent_error_leaves_the_saga_stuck_without_compensating() {
    let plan = Plan {
        notify_refuses: true,
        ..Plan::default()
    };
    let (saga, outcome) = run(plan, SagaOptions::new()).await;
    let report = stuck(&outcome);
    let failure = report.stuck.as_ref().expect("the report names the step");
    assert_eq!(failure.step, "notify");
    assert_eq!(failure.compensation, None);
    assert_eq!(failure.phase, Phase::Forward);
    assert!(!failure.retryable);
    assert_eq!(failure.attempts, 1);
    assert_eq!(report.failed_step(), Some("notify"));
    assert!(report.compensated.is_empty());
    assert_eq!(saga.calls.all(), ["hold", "credit", "capture", "notify"]);
}

#[tokio::test(start_paused = true)]
async fn after_the_pivot_a_capped_step_that_runs_out_of_attempts_leaves_the_saga_stuck() {
    let plan = Plan {
        archive_fails: 2,
        ..Plan::default()
    };
    let (saga, outcome) = run(plan, SagaOptions::new()).await;
    let report = stuck(&outcome);
    let failure = report.stuck.as_ref().expect("the report names the step");
    assert_eq!(failure.step, "archive");
    assert_eq!(failure.attempts, 2);
    assert!(failure.retryable);
    assert!(report.compensated.is_empty());
    assert_eq!(saga.calls.count("archive"), 2);
    for undo in UNDO {
        assert_eq!(saga.calls.count(undo), 0, "`{undo}` ran after the pivot");
    }
}

#[tokio::test(start_paused = true)]
async fn after_the_pivot_a_step_capped_at_run_time_leaves_the_saga_stuck() {
    let plan = Plan {
        notify_fails: 100,
        ..Plan::default()
    };
    let options = SagaOptions::new().retry("notify", RetryPolicy::attempts(3));
    let (saga, outcome) = run(plan, options).await;
    let failure = stuck(&outcome).stuck.clone().expect("names the step");
    assert_eq!(failure.step, "notify");
    assert_eq!(failure.attempts, 3);
    assert_eq!(saga.calls.count("notify"), 3);
    assert_eq!(
        saga.calls.count("audit"),
        0,
        "no step runs after a stuck one"
    );
    for undo in UNDO {
        assert_eq!(saga.calls.count(undo), 0, "`{undo}` ran after the pivot");
    }
}

#[tokio::test(start_paused = true)]
async fn an_injected_permanent_fault_after_the_pivot_leaves_the_saga_stuck() {
    let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("audit"));
    let (saga, outcome) = run(Plan::default(), options).await;
    assert_eq!(stuck(&outcome).stuck.as_ref().unwrap().step, "audit");
    assert_eq!(saga.calls.all(), ["hold", "credit", "capture", "notify"]);
}

/// A saga without a pivot: every step is compensatable, and a failure of the
/// last one undoes all the others.
#[derive(Default)]
pub struct NoPivot {
    calls: Calls,
}

#[saga(input = ())]
impl NoPivot {
    #[step(compensate = undo_first)]
    async fn first(&self) -> Result<(), StepError> {
        self.calls.push("first");
        Ok(())
    }
    async fn undo_first(&self) -> Result<(), StepError> {
        self.calls.push("undo_first");
        Ok(())
    }

    #[step(compensate = undo_last)]
    async fn last(&self) -> Result<(), StepError> {
        self.calls.push("last");
        Err(permanent(Boom("no")))
    }
    async fn undo_last(&self) -> Result<(), StepError> {
        self.calls.push("undo_last");
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_pivot_the_last_step_failing_rolls_everything_back() {
    let saga = Arc::new(NoPivot::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run::<NoPivot>(())).await.unwrap();
    assert!(outcome.is_compensated(), "{outcome:?}");
    assert_eq!(saga.calls.all(), ["first", "last", "undo_first"]);
}

/// A saga stuck after its pivot is resumed by an operator, once what made
/// it stuck is fixed: the step that gave up is tried again with a fresh
/// policy, the steps that completed are not run again, and nothing is
/// compensated.
#[tokio::test(start_paused = true)]
async fn a_saga_stuck_after_its_pivot_completes_when_an_operator_resumes_it() {
    let saga = Arc::new(Payment::default());
    let runtime = Runtime::builder()
        .store(saga::store::MemoryStore::new())
        .build()
        .await
        .unwrap();
    runtime.register(Arc::clone(&saga));
    let plan = Plan {
        archive_fails: 2,
        ..Plan::default()
    };
    let handle = runtime.start::<Payment>(plan).await.unwrap();
    let id = handle.id();
    let outcome = within_a_day(handle.outcome()).await.unwrap();
    assert_eq!(stuck(&outcome).stuck.as_ref().unwrap().step, "archive");

    saga.archive_fixed.store(true, Ordering::SeqCst);
    let ended = within_a_day(runtime.resume(id)).await.unwrap();
    assert!(matches!(ended, saga::Ended::Completed), "{ended:?}");
    assert_eq!(saga.calls.count("archive"), 3, "one more attempt");
    for done in ["hold", "credit", "capture", "notify", "audit"] {
        assert_eq!(saga.calls.count(done), 1, "`{done}` ran again");
    }
    for undo in UNDO {
        assert_eq!(saga.calls.count(undo), 0, "`{undo}` ran after the pivot");
    }
}

/// A cap set for the run is logged with the saga: recovered after a crash,
/// the saga still becomes stuck when the capped step runs out of attempts,
/// instead of retrying it forever by the policy the saga declares.
#[tokio::test(start_paused = true)]
async fn a_cap_set_at_run_time_holds_after_a_crash() {
    use saga::store::MemoryStore;
    use saga::testing::{CrashPoint, CrashingStore};

    let durable = MemoryStore::new();
    // hold, credit, capture (started and succeeded: 1..=6), then `notify`
    // started (7) and failed (8): the process dies after its first attempt.
    let crashing = CrashingStore::new(durable.clone(), CrashPoint::AfterDurable(8));
    let runtime = Runtime::builder()
        .store(crashing.clone())
        .build()
        .await
        .unwrap();
    runtime.register(Arc::new(Payment::default()));
    let plan = Plan {
        notify_fails: 100,
        ..Plan::default()
    };
    let options = SagaOptions::new().retry("notify", RetryPolicy::attempts(3));
    let handle = runtime.start_with::<Payment>(plan, options).await.unwrap();
    crashing.wait_for_crash().await;
    drop(handle);

    let saga = Arc::new(Payment::default());
    let recovering = Runtime::builder().store(durable).build().await.unwrap();
    recovering.register(Arc::clone(&saga));
    let report = within_a_day(recovering.recover()).await.unwrap();
    assert_eq!(report.stuck, 1, "{report:?}");
    assert_eq!(saga.calls.count("notify"), 2, "attempts 2 and 3");
}
