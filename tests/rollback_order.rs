//! Rollback undoes exactly the completed compensatable steps, each once, in
//! reverse order: readonly steps are skipped, and a step that did not
//! complete (the one that failed, and every one after it) is never
//! compensated.

mod support;

use std::sync::Arc;

use saga::prelude::*;
use saga::{Cause, Faults, Phase};
use support::{Boom, Calls, runtime_with, within_a_day};

/// Six steps: `a`, readonly `b`, `c`, `d`, the pivot `e`, and `f` after it.
/// The input names the step that fails permanently ("" for none).
#[derive(Default)]
pub struct Chain {
    calls: Calls,
}

impl Chain {
    fn call(&self, input: &str, step: &'static str) -> Result<(), StepError> {
        self.calls.push(step);
        if input == step {
            return Err(permanent(Boom(step)));
        }
        Ok(())
    }
}

#[saga(input = String)]
impl Chain {
    #[step(compensate = undo_a)]
    async fn a(&self, input: &str) -> Result<(), StepError> {
        self.call(input, "a")
    }
    async fn undo_a(&self) -> Result<(), StepError> {
        self.calls.push("undo_a");
        Ok(())
    }

    #[step(readonly)]
    async fn b(&self, input: &str) -> Result<(), StepError> {
        self.call(input, "b")
    }

    #[step(compensate = undo_c)]
    async fn c(&self, input: &str) -> Result<(), StepError> {
        self.call(input, "c")
    }
    async fn undo_c(&self) -> Result<(), StepError> {
        self.calls.push("undo_c");
        Ok(())
    }

    #[step(compensate = undo_d)]
    async fn d(&self, input: &str) -> Result<(), StepError> {
        self.call(input, "d")
    }
    async fn undo_d(&self) -> Result<(), StepError> {
        self.calls.push("undo_d");
        Ok(())
    }

    #[step(pivot)]
    async fn e(&self, input: &str) -> Result<(), StepError> {
        self.call(input, "e")
    }

    #[step]
    async fn f(&self) -> Result<(), StepError> {
        self.calls.push("f");
        Ok(())
    }
}

async fn run(fail: &str, options: SagaOptions) -> (Arc<Chain>, Outcome<ChainOutputs>) {
    let saga = Arc::new(Chain::default());
    let runtime = runtime_with(&saga).await;
    let outcome = within_a_day(runtime.run_with::<Chain>(fail.to_string(), options))
        .await
        .expect("the saga runs");
    (saga, outcome)
}

fn compensated(outcome: &Outcome<ChainOutputs>) -> &saga::Report {
    match outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a compensated saga, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_pivot_undoes_every_completed_step_once_in_reverse_order() {
    let (saga, outcome) = run("e", SagaOptions::new()).await;
    assert_eq!(
        saga.calls.all(),
        ["a", "b", "c", "d", "e", "undo_d", "undo_c", "undo_a"]
    );
    let report = compensated(&outcome);
    assert_eq!(report.compensated, ["d", "c", "a"]);
    assert_eq!(report.failed_step(), Some("e"));
    assert!(report.stuck.is_none());
}

#[tokio::test(start_paused = true)]
async fn readonly_steps_are_skipped_by_rollback() {
    let (saga, outcome) = run("d", SagaOptions::new()).await;
    let report = compensated(&outcome);
    assert!(
        !report.compensated.contains(&"b"),
        "readonly `b` was reported compensated: {report}"
    );
    assert_eq!(report.compensated, ["c", "a"]);
    assert_eq!(saga.calls.all(), ["a", "b", "c", "d", "undo_c", "undo_a"]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_readonly_step_undoes_only_the_steps_before_it() {
    let (saga, outcome) = run("b", SagaOptions::new()).await;
    assert_eq!(compensated(&outcome).compensated, ["a"]);
    assert_eq!(saga.calls.all(), ["a", "b", "undo_a"]);
}

#[tokio::test(start_paused = true)]
async fn the_failed_step_and_the_steps_after_it_are_never_compensated() {
    let (saga, outcome) = run("c", SagaOptions::new()).await;
    assert_eq!(saga.calls.all(), ["a", "b", "c", "undo_a"]);
    let report = compensated(&outcome);
    assert_eq!(report.compensated, ["a"]);
    assert_eq!(report.failed_step(), Some("c"));
}

#[tokio::test(start_paused = true)]
async fn a_failing_first_step_leaves_nothing_to_compensate() {
    let (saga, outcome) = run("a", SagaOptions::new()).await;
    assert_eq!(saga.calls.all(), ["a"]);
    let report = compensated(&outcome);
    assert!(report.compensated.is_empty(), "{report}");
    match &report.cause {
        Cause::StepFailed(failure) => {
            assert_eq!(failure.step, "a");
            assert_eq!(failure.phase, Phase::Forward);
            assert!(!failure.retryable);
            assert_eq!(failure.attempts, 1);
        }
        other => panic!("expected a step failure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_step_that_exhausted_its_retries_is_not_compensated() {
    // `d` fails retryably on every attempt: it never completed, so only the
    // steps before it are undone.
    let options = SagaOptions::new()
        .retry("d", RetryPolicy::attempts(3))
        .faults(Faults::new().fail_step("d", 1..));
    let (saga, outcome) = run("", options).await;
    assert_eq!(saga.calls.all(), ["a", "b", "c", "undo_c", "undo_a"]);
    assert_eq!(compensated(&outcome).compensated, ["c", "a"]);
}

#[tokio::test(start_paused = true)]
async fn a_step_that_succeeded_after_retries_is_compensated_once() {
    let options = SagaOptions::new()
        .retry("d", RetryPolicy::attempts(3))
        .faults(Faults::new().fail_step("d", 1..=2));
    let (saga, outcome) = run("e", options).await;
    assert_eq!(compensated(&outcome).compensated, ["d", "c", "a"]);
    assert_eq!(saga.calls.count("undo_d"), 1);
    assert_eq!(
        saga.calls.all(),
        ["a", "b", "c", "d", "e", "undo_d", "undo_c", "undo_a"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_retried_compensation_counts_once_in_the_report() {
    let options = SagaOptions::new()
        .compensation_retry("undo_c", RetryPolicy::attempts(3))
        .faults(Faults::new().fail_compensation("undo_c", 1..=2));
    let (saga, outcome) = run("e", options).await;
    assert_eq!(compensated(&outcome).compensated, ["d", "c", "a"]);
    // The injected failures replace the call: the body ran once.
    assert_eq!(
        saga.calls.all(),
        ["a", "b", "c", "d", "e", "undo_d", "undo_c", "undo_a"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_completed_saga_runs_no_compensation() {
    let (saga, outcome) = run("", SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.calls.all(), ["a", "b", "c", "d", "e", "f"]);
}
