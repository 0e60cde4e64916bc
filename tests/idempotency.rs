//! `cx.idempotency_key()` is `{saga_id}/{step}` going forward and
//! `{saga_id}/{step}/undo` compensating: the same on every attempt, different
//! for each step and each saga run. `check_idempotency(true)` runs every step
//! and compensation twice in a row with the same key.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use saga::prelude::*;
use saga::{Cause, Phase, SagaId};
use serde::{Deserialize, Serialize};
use support::{Boom, runtime_with, within_a_day};

/// What the steps do.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    /// `a` fails retryably on its first `n` attempts.
    pub a_fails: u32,
    /// `undo_a` fails retryably on its first `n` attempts.
    pub undo_a_fails: u32,
    /// The pivot `c` fails permanently.
    pub c_refuses: bool,
}

/// One call of a step or compensation, as it saw its context.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    name: &'static str,
    attempt: u32,
    phase: Phase,
    key: String,
}

/// `a`, `b`, then the pivot `c`; every call records its context, and the
/// ledger applies each amount once per idempotency key.
#[derive(Default)]
pub struct Keyed {
    calls: Mutex<Vec<Call>>,
    /// Effects by idempotency key.
    ledger: Mutex<HashMap<String, i64>>,
    /// Effects counted without regard to the key.
    careless: Mutex<i64>,
}

impl Keyed {
    fn record(&self, name: &'static str, cx: &StepContext, amount: i64) {
        let key = cx.idempotency_key().to_string();
        self.calls.lock().unwrap().push(Call {
            name,
            attempt: cx.attempt(),
            phase: cx.phase(),
            key: key.clone(),
        });
        self.ledger.lock().unwrap().entry(key).or_insert(amount);
        *self.careless.lock().unwrap() += amount;
    }

    fn calls_of(&self, name: &str) -> Vec<Call> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.name == name).cloned().collect()
    }

    fn keys_of(&self, name: &str) -> Vec<String> {
        self.calls_of(name).into_iter().map(|c| c.key).collect()
    }

    fn balance(&self) -> i64 {
        self.ledger.lock().unwrap().values().sum()
    }
}

#[saga(input = Plan)]
impl Keyed {
    #[step(
        compensate = undo_a,
        retry(attempts = 5, backoff = none),
        compensate_retry(attempts = 5, backoff = none)
    )]
    async fn a(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.record("a", cx, 0);
        if cx.attempt() <= input.a_fails {
            return Err(StepError::msg("busy"));
        }
        Ok(())
    }
    async fn undo_a(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.record("undo_a", cx, 0);
        if cx.attempt() <= input.undo_a_fails {
            return Err(StepError::msg("busy"));
        }
        Ok(())
    }

    #[step(compensate = undo_b)]
    async fn b(&self, cx: &StepContext) -> Result<(), StepError> {
        self.record("b", cx, 100);
        Ok(())
    }
    async fn undo_b(&self, cx: &StepContext) -> Result<(), StepError> {
        self.record("undo_b", cx, -100);
        Ok(())
    }

    #[step(pivot)]
    async fn c(&self, input: &Plan, cx: &StepContext) -> Result<(), StepError> {
        self.record("c", cx, 0);
        if input.c_refuses {
            return Err(permanent(Boom("refused")));
        }
        Ok(())
    }
}

async fn run(
    saga: &Arc<Keyed>,
    plan: Plan,
    options: SagaOptions,
) -> (SagaId, Outcome<KeyedOutputs>) {
    let runtime = runtime_with(saga).await;
    let handle = runtime
        .start_with::<Keyed>(plan, options)
        .await
        .expect("the saga starts");
    let id = handle.id();
    (
        id,
        within_a_day(handle.outcome()).await.expect("the saga runs"),
    )
}

#[tokio::test(start_paused = true)]
async fn the_key_is_the_same_on_every_attempt_of_a_step() {
    let saga = Arc::new(Keyed::default());
    let plan = Plan {
        a_fails: 2,
        ..Plan::default()
    };
    let (id, outcome) = run(&saga, plan, SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    let calls = saga.calls_of("a");
    assert_eq!(
        calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for call in &calls {
        assert_eq!(call.key, format!("{id}/a"));
        assert_eq!(call.phase, Phase::Forward);
    }
}

#[tokio::test(start_paused = true)]
async fn each_step_has_its_own_key() {
    let saga = Arc::new(Keyed::default());
    let (id, outcome) = run(&saga, Plan::default(), SagaOptions::new()).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.keys_of("a"), [format!("{id}/a")]);
    assert_eq!(saga.keys_of("b"), [format!("{id}/b")]);
    assert_eq!(saga.keys_of("c"), [format!("{id}/c")]);
}

#[tokio::test(start_paused = true)]
async fn each_saga_run_has_its_own_keys() {
    let saga = Arc::new(Keyed::default());
    let (first, _) = run(&saga, Plan::default(), SagaOptions::new()).await;
    let (second, _) = run(&saga, Plan::default(), SagaOptions::new()).await;
    assert_ne!(first, second);
    assert_eq!(
        saga.keys_of("b"),
        [format!("{first}/b"), format!("{second}/b")]
    );
    // The idempotent ledger applied `b` once per run.
    assert_eq!(saga.balance(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_run_under_a_given_id_uses_it_in_its_keys() {
    let id: SagaId = "6f9619ff-8b86-4d01-b42d-00c04fc964ff".parse().unwrap();
    let saga = Arc::new(Keyed::default());
    let (ran_as, _) = run(&saga, Plan::default(), SagaOptions::new().id(id)).await;
    assert_eq!(ran_as, id);
    assert_eq!(
        saga.keys_of("a"),
        ["6f9619ff-8b86-4d01-b42d-00c04fc964ff/a"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_compensation_has_its_own_key_stable_across_its_retries() {
    let saga = Arc::new(Keyed::default());
    let plan = Plan {
        undo_a_fails: 2,
        c_refuses: true,
        ..Plan::default()
    };
    let (id, outcome) = run(&saga, plan, SagaOptions::new()).await;
    assert!(outcome.is_compensated(), "{outcome:?}");
    let undo = saga.calls_of("undo_a");
    assert_eq!(
        undo.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for call in &undo {
        assert_eq!(call.key, format!("{id}/a/undo"));
        assert_eq!(call.phase, Phase::Compensation);
    }
    assert_eq!(saga.keys_of("undo_b"), [format!("{id}/b/undo")]);
    assert_ne!(saga.keys_of("a")[0], undo[0].key);
    // `b` and its undoing are both applied: the books are back to zero.
    assert_eq!(saga.balance(), 0);
}

#[tokio::test(start_paused = true)]
async fn check_idempotency_runs_every_step_twice_with_the_same_key() {
    let saga = Arc::new(Keyed::default());
    let options = SagaOptions::new().check_idempotency(true);
    let (id, outcome) = run(&saga, Plan::default(), options).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    for step in ["a", "b", "c"] {
        let calls = saga.calls_of(step);
        let expected = Call {
            name: step,
            attempt: 1,
            phase: Phase::Forward,
            key: format!("{id}/{step}"),
        };
        assert_eq!(calls, [expected.clone(), expected], "step `{step}`");
    }
    // Under its key, the ledger applied `b` once; a careless count saw it
    // twice, which is what the check is there to reveal.
    assert_eq!(saga.balance(), 100);
    assert_eq!(*saga.careless.lock().unwrap(), 200);
}

#[tokio::test(start_paused = true)]
async fn check_idempotency_runs_every_compensation_twice_with_the_same_key() {
    let saga = Arc::new(Keyed::default());
    let plan = Plan {
        c_refuses: true,
        ..Plan::default()
    };
    let options = SagaOptions::new().check_idempotency(true);
    let (id, outcome) = run(&saga, plan, options).await;
    match &outcome {
        Outcome::Compensated(report) => assert_eq!(report.compensated, ["b", "a"]),
        other => panic!("expected a compensated saga, got {other:?}"),
    }
    for (undo, step) in [("undo_a", "a"), ("undo_b", "b")] {
        assert_eq!(
            saga.keys_of(undo),
            [format!("{id}/{step}/undo"), format!("{id}/{step}/undo")],
            "compensation `{undo}`"
        );
    }
    // The pivot failed on its first call: a failing call is not repeated.
    assert_eq!(saga.keys_of("c").len(), 1);
    assert_eq!(saga.balance(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_the_check_each_step_and_compensation_runs_once() {
    let saga = Arc::new(Keyed::default());
    let plan = Plan {
        c_refuses: true,
        ..Plan::default()
    };
    let (_, outcome) = run(&saga, plan, SagaOptions::new()).await;
    assert!(outcome.is_compensated(), "{outcome:?}");
    for name in ["a", "b", "c", "undo_b", "undo_a"] {
        assert_eq!(saga.calls_of(name).len(), 1, "`{name}`");
    }
    assert_eq!(*saga.careless.lock().unwrap(), 0);
}

// ---------------------------------------------------------------------------
// What the check proves: a step that answers differently under the same key
// ---------------------------------------------------------------------------

/// Which steps of [`Counting`] answer anew on every call.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Careless {
    /// `bump` (before the pivot) returns its call count, not the count its
    /// key first saw.
    pub bump: bool,
    /// `after` (past the pivot) does the same.
    pub after: bool,
    /// `label` returns a long text ending in its call count.
    pub label: bool,
    /// `bump`'s second call (of its first attempt) fails retryably.
    pub bump_stumbles: bool,
}

/// `reserve` (its output a map, rebuilt on every call), `bump`, `label`,
/// the pivot `commit`, then `after`; each counts its calls.
#[derive(Default)]
pub struct Counting {
    calls: support::Calls,
    n: std::sync::atomic::AtomicU64,
    /// The first answer `bump` and `after` gave under each key.
    answers: Mutex<HashMap<String, u64>>,
}

impl Counting {
    /// A new count on every call, or, `keyed`, the first one the key saw.
    fn count(&self, cx: &StepContext, keyed: bool) -> u64 {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if !keyed {
            return n;
        }
        let key = cx.idempotency_key().to_string();
        *self.answers.lock().unwrap().entry(key).or_insert(n)
    }
}

#[saga(input = Careless)]
impl Counting {
    #[step(compensate = release)]
    async fn reserve(&self) -> Result<HashMap<String, u64>, StepError> {
        self.calls.push("reserve");
        // The same map every time, in an order of its own (each map draws
        // its own hash seed): the check compares the values, not the order.
        Ok((0..32).map(|i| (format!("item-{i}"), i)).collect())
    }
    async fn release(&self) -> Result<(), StepError> {
        self.calls.push("release");
        Ok(())
    }

    #[step(compensate = unbump, retry(attempts = 3, backoff = none))]
    async fn bump(&self, input: &Careless, cx: &StepContext) -> Result<u64, StepError> {
        self.calls.push("bump");
        if input.bump_stumbles && cx.attempt() == 1 && self.calls.count("bump") == 2 {
            return Err(StepError::msg("busy"));
        }
        Ok(self.count(cx, !input.bump))
    }
    async fn unbump(&self) -> Result<(), StepError> {
        self.calls.push("unbump");
        Ok(())
    }

    #[step(compensate = unlabel)]
    async fn label(&self, input: &Careless) -> Result<String, StepError> {
        self.calls.push("label");
        let n = match input.label {
            true => self.calls.count("label"),
            false => 0,
        };
        Ok(format!("{}{n}", "x".repeat(200)))
    }
    async fn unlabel(&self) -> Result<(), StepError> {
        self.calls.push("unlabel");
        Ok(())
    }

    #[step(pivot)]
    async fn commit(&self) -> Result<(), StepError> {
        self.calls.push("commit");
        Ok(())
    }

    #[step(retry(attempts = 3, backoff = none))]
    async fn after(&self, input: &Careless, cx: &StepContext) -> Result<u64, StepError> {
        self.calls.push("after");
        Ok(self.count(cx, !input.after))
    }
}

async fn count(careless: Careless, check: bool) -> (Arc<Counting>, Outcome<CountingOutputs>) {
    let saga = Arc::new(Counting::default());
    let runtime = runtime_with(&saga).await;
    let options = SagaOptions::new().check_idempotency(check);
    let outcome = within_a_day(runtime.run_with::<Counting>(careless, options))
        .await
        .expect("the saga runs");
    (saga, outcome)
}

#[tokio::test(start_paused = true)]
async fn the_check_fails_a_step_that_answers_differently_under_its_key() {
    let careless = Careless {
        bump: true,
        ..Careless::default()
    };
    let (saga, outcome) = count(careless, true).await;
    let report = match &outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected the saga rolled back, got {other:?}"),
    };
    let Cause::StepFailed(failure) = &report.cause else {
        panic!("expected a step failure, got {}", report.cause);
    };
    assert_eq!(failure.step, "bump");
    assert_eq!(
        failure.error,
        "step `bump` is not idempotent under its key: the first call returned 1, the second 2"
    );
    // Permanent: not retried, whatever its policy.
    assert!(!failure.retryable);
    assert_eq!(failure.attempts, 1);
    assert_eq!(saga.calls.count("bump"), 2);
    // Rolled back as for any permanent error before the pivot: what
    // completed is undone; the failed step has no output to undo.
    assert_eq!(report.compensated, ["reserve"]);
    assert_eq!(saga.calls.count("release"), 2, "compensations repeat too");
    assert_eq!(saga.calls.count("unbump"), 0);
    assert_eq!(saga.calls.count("commit"), 0);
    assert!(report.to_string().contains("not idempotent"), "{report}");
}

#[tokio::test(start_paused = true)]
async fn the_check_passes_steps_that_answer_the_same_under_their_key() {
    let (saga, outcome) = count(Careless::default(), true).await;
    let outputs = match outcome {
        Outcome::Completed(outputs) => outputs,
        other => panic!("expected a completed saga, got {other:?}"),
    };
    // The map's entries came in a different order each call: the same
    // value all the same.
    assert_eq!(outputs.reserve.len(), 32);
    assert_eq!(outputs.bump, 1);
    assert_eq!(outputs.after, 3);
    for step in ["reserve", "bump", "label", "commit", "after"] {
        assert_eq!(saga.calls.count(step), 2, "`{step}` ran twice");
    }
}

#[tokio::test(start_paused = true)]
async fn without_the_check_a_careless_step_is_not_noticed() {
    let careless = Careless {
        bump: true,
        after: true,
        label: true,
        ..Careless::default()
    };
    let (saga, outcome) = count(careless, false).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(saga.calls.count("bump"), 1);
}

#[tokio::test(start_paused = true)]
async fn past_the_pivot_a_step_the_check_fails_leaves_the_saga_stuck() {
    let careless = Careless {
        after: true,
        ..Careless::default()
    };
    let (saga, outcome) = count(careless, true).await;
    let report = match &outcome {
        Outcome::Stuck(report) => report,
        other => panic!("expected a stuck saga, got {other:?}"),
    };
    let stuck = report.stuck.as_ref().expect("what is stuck");
    assert_eq!(stuck.step, "after");
    // `bump`'s calls counted 1 and 2 (and answered 1, keyed), `after`'s
    // 3 and 4.
    assert_eq!(
        stuck.error,
        "step `after` is not idempotent under its key: the first call returned 3, the second 4"
    );
    assert!(!stuck.retryable);
    // Past the pivot nothing is undone: what is done stays done.
    assert!(report.compensated.is_empty());
    assert_eq!(saga.calls.count("after"), 2, "not retried");
    assert_eq!(saga.calls.count("release"), 0);
}

#[tokio::test(start_paused = true)]
async fn long_outputs_are_shown_in_part_around_their_difference() {
    let careless = Careless {
        label: true,
        ..Careless::default()
    };
    let (_, outcome) = count(careless, true).await;
    let report = outcome.report().expect("the check failed `label`");
    let Cause::StepFailed(failure) = &report.cause else {
        panic!("expected a step failure, got {}", report.cause);
    };
    assert_eq!(failure.step, "label");
    // Each shown as its last 80 characters: where they differ, and what
    // leads up to it.
    let xs = "x".repeat(78);
    assert_eq!(
        failure.error,
        format!(
            "step `label` is not idempotent under its key: the first call returned …{xs}1\", the second …{xs}2\""
        )
    );
    assert_eq!(report.compensated, ["bump", "reserve"]);
}

#[tokio::test(start_paused = true)]
async fn a_second_call_that_fails_is_kept_and_retried_as_any_failure() {
    let careless = Careless {
        bump_stumbles: true,
        ..Careless::default()
    };
    let (saga, outcome) = count(careless, true).await;
    let outputs = outcome.completed().expect("the retry succeeded");
    // Attempt 1: the first call succeeded, the second failed retryably and
    // was kept; attempt 2 ran both calls again, under the same key.
    assert_eq!(saga.calls.count("bump"), 4);
    assert_eq!(outputs.bump, 1);
}
