//! The saga laws, checked on generated sagas.
//!
//! Each case is a saga of 1 to 8 steps with a random pivot position (or no
//! pivot), readonly steps before the pivot, random data dependencies on
//! earlier steps, and a fault plan: steps that fail retryably on some attempts
//! or permanently from some attempt on, compensations that fail on some
//! attempts or forever (under a capped compensation policy, so that a run
//! always ends), each fault either written into the step's body or injected by
//! the runtime ([`Faults`]), and each retry policy either in the definition or
//! given as a per-run override.
//!
//! The saga is a hand-written `impl Saga` whose [`Definition`] is built at run
//! time from the generated shape. Its steps and compensations record every
//! call they receive, so the laws are checked against what really ran, not
//! against the report:
//!
//! - **Completed**: every step ran successfully exactly once, no compensation
//!   ran, and the outputs are the ones the steps produced.
//! - **Compensated**: the failed step is the first that did not complete,
//!   nothing after it ran, the pivot (if any) did not complete, and exactly
//!   the completed compensatable steps were compensated, once each, in
//!   reverse order.
//! - **Stuck**: the report names what gave up: either a step after a
//!   completed pivot (then nothing was compensated at all), or a compensation
//!   of a completed compensatable step (then exactly the completed
//!   compensatable steps after it were compensated, in reverse order, and
//!   nothing before it was touched).
//! - Always: no compensation runs for a step that did not complete, nor for a
//!   readonly step, the pivot or anything after it; no step runs after
//!   rollback began; steps run in order, each at most once successfully; a
//!   compensation sees its step's output; the report's `compensated` list is
//!   exactly the compensations that succeeded, in the order they ran.
//!
//! Then a small model derives the expected outcome, report and call log from
//! the fault plan alone, and the run must match it exactly.

use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use saga::__private::serde_json;
use saga::{
    Cause, Definition, Event, EventKind, Failure, Faults, Listener, Outcome, Phase, Report,
    RetryPolicy, Runtime, Saga, SagaId, SagaOptions, StepContext, StepDef, StepError, StepKind,
};

const MAX_STEPS: usize = 8;
const STEP_NAMES: [&str; MAX_STEPS] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"];
const UNDO_NAMES: [&str; MAX_STEPS] = [
    "undo_s0", "undo_s1", "undo_s2", "undo_s3", "undo_s4", "undo_s5", "undo_s6", "undo_s7",
];
const SAGA_NAME: &str = "GeneratedSaga";
const INPUT: u64 = 7;
/// No generated plan needs more attempts than this; more means a policy was
/// not honoured (and, with a "forever" fault, the run would never end).
const ATTEMPT_WATCHDOG: u32 = 32;

// ---------------------------------------------------------------------------
// The generated shape
// ---------------------------------------------------------------------------

/// The result of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Res {
    Ok,
    Retryable,
    Permanent,
}

/// Which attempts of a step (or compensation) fail, and how.
#[derive(Clone, Debug)]
struct Script {
    /// Attempts `first..=last` fail with a retryable error (`last` may be
    /// `u32::MAX`: forever).
    retry: Option<(u32, u32)>,
    /// Attempts from this one on (outside `retry`) fail permanently.
    permanent_from: Option<u32>,
    /// The failures are injected by the runtime (`Faults`) instead of being
    /// returned by the body: the body is then not called on failing attempts.
    injected: bool,
}

impl Script {
    const CLEAN: Script = Script {
        retry: None,
        permanent_from: None,
        injected: false,
    };

    fn result(&self, attempt: u32) -> Res {
        if self
            .retry
            .is_some_and(|(first, last)| (first..=last).contains(&attempt))
        {
            return Res::Retryable;
        }
        match self.permanent_from {
            Some(k) if attempt >= k => Res::Permanent,
            _ => Res::Ok,
        }
    }

    /// Whether the body is called on `attempt`.
    fn invoked(&self, attempt: u32) -> bool {
        !self.injected || self.result(attempt) == Res::Ok
    }

    fn fails_forever(&self) -> bool {
        self.retry.is_some_and(|(_, last)| last == u32::MAX)
    }
}

/// A retry policy (never any backoff: the clock is paused anyway).
#[derive(Clone, Copy, Debug)]
struct Pol {
    /// `None`: retry forever.
    max: Option<u32>,
    /// Given as a per-run override (`SagaOptions::retry`), the definition
    /// holding the default the macro would have put there.
    via_options: bool,
}

impl Pol {
    fn policy(self) -> RetryPolicy {
        match self.max {
            Some(n) => RetryPolicy::attempts(n),
            None => RetryPolicy::forever(),
        }
    }

    fn allows(self, attempt: u32) -> bool {
        self.max.is_none_or(|max| attempt <= max)
    }
}

#[derive(Clone, Debug)]
struct StepPlan {
    kind: StepKind,
    deps: Vec<usize>,
    forward: Script,
    forward_policy: Pol,
    /// Only meaningful for compensatable steps.
    compensation: Script,
    compensation_policy: Pol,
}

#[derive(Clone, Debug)]
struct Case {
    steps: Vec<StepPlan>,
    /// Run through `start_with(..).outcome()` (a spawned task) rather than
    /// `run_with` (the calling task).
    spawn: bool,
}

impl Case {
    fn pivot(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.kind == StepKind::Pivot)
    }

    /// The definition the `#[saga]` macro would have generated, leaked.
    fn definition(&self) -> &'static Definition {
        let steps: Vec<StepDef> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let past_pivot = matches!(s.kind, StepKind::Forward);
                let retry = if s.forward_policy.via_options {
                    if past_pivot {
                        RetryPolicy::FOREVER
                    } else {
                        RetryPolicy::STEP
                    }
                } else {
                    s.forward_policy.policy()
                };
                let compensation_retry = if s.compensation_policy.via_options {
                    RetryPolicy::FOREVER
                } else {
                    s.compensation_policy.policy()
                };
                let compensation = (s.kind == StepKind::Compensatable).then_some(UNDO_NAMES[i]);
                StepDef::__new(
                    STEP_NAMES[i],
                    s.kind,
                    compensation,
                    Box::leak(s.deps.clone().into_boxed_slice()),
                    "u64",
                    retry,
                    compensation_retry,
                    i,
                )
            })
            .collect();
        let steps: &'static [StepDef] = Box::leak(steps.into_boxed_slice());
        Box::leak(Box::new(Definition::__new(
            SAGA_NAME, 0x5a6a, 0x5a6a, steps, None,
        )))
    }

    /// The per-run options: policy overrides and injected faults.
    fn options(&self, id: SagaId) -> SagaOptions {
        let mut options = SagaOptions::new().id(id);
        let mut faults = Faults::new();
        for (i, s) in self.steps.iter().enumerate() {
            let (name, undo) = (STEP_NAMES[i], UNDO_NAMES[i]);
            if s.forward_policy.via_options {
                options = options.retry(name, s.forward_policy.policy());
            }
            if s.forward.injected {
                if let Some((first, last)) = s.forward.retry {
                    faults = faults.fail_step(name, first..=last);
                }
                if s.forward.permanent_from.is_some() {
                    faults = faults.fail_step_permanently(name);
                }
            }
            if s.kind != StepKind::Compensatable {
                continue;
            }
            if s.compensation_policy.via_options {
                options = options.compensation_retry(undo, s.compensation_policy.policy());
            }
            if s.compensation.injected {
                if let Some((first, last)) = s.compensation.retry {
                    faults = faults.fail_compensation(undo, first..=last);
                }
                if s.compensation.permanent_from.is_some() {
                    faults = faults.fail_compensation_permanently(undo);
                }
            }
        }
        options.faults(faults)
    }
}

/// The output of step `step` when attempt `attempt` succeeds.
fn output(step: usize, attempt: u32) -> u64 {
    (step as u64 + 1) * 1000 + u64::from(attempt)
}

/// The error message of a failed attempt: the runtime's for an injected
/// fault, the body's own otherwise.
fn error_text(injected: bool, name: &str, attempt: u32) -> String {
    if injected {
        format!("injected fault in `{name}` (attempt {attempt})")
    } else {
        format!("{name} failed on attempt {attempt}")
    }
}

// ---------------------------------------------------------------------------
// The saga under test
// ---------------------------------------------------------------------------

/// One call a step or compensation body received.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    step: usize,
    phase: Phase,
    attempt: u32,
    result: Res,
    /// Forward: the output produced (if it succeeded). Compensation: the
    /// step's output as the compensation saw it.
    output: Option<u64>,
}

thread_local! {
    /// The definition of the case running on this thread (the runtime here
    /// is a current-thread one, so the saga only ever runs on this thread).
    static CURRENT: Cell<Option<&'static Definition>> = const { Cell::new(None) };
}

struct Generated {
    case: Case,
    calls: Mutex<Vec<Call>>,
    /// Contract breaches noticed inside the bodies.
    violations: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct BodyError(String);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

impl Generated {
    fn new(case: Case) -> Generated {
        Generated {
            case,
            calls: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
        }
    }

    fn violation(&self, text: String) {
        self.violations.lock().unwrap().push(text);
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn check_cx(&self, cx: &StepContext, step: usize, phase: Phase, input: u64) {
        if cx.step() != STEP_NAMES[step] || cx.phase() != phase || cx.saga_name() != SAGA_NAME {
            self.violation(format!(
                "step {step} ({phase:?}) got context for `{}` ({:?}) of `{}`",
                cx.step(),
                cx.phase(),
                cx.saga_name()
            ));
        }
        if input != INPUT {
            self.violation(format!("step {step} ({phase:?}) got input {input}"));
        }
    }

    fn to_error(result: Res, text: String) -> Result<(), StepError> {
        match result {
            Res::Ok => Ok(()),
            Res::Retryable => Err(StepError::new(BodyError(text), true)),
            Res::Permanent => Err(saga::permanent(BodyError(text))),
        }
    }
}

impl Saga for Generated {
    type Input = u64;
    type Outputs = Vec<u64>;
    type State = Vec<Option<u64>>;
    /// The step and its output.
    type StepOutput = (usize, u64);

    fn definition() -> &'static Definition {
        CURRENT
            .with(Cell::get)
            .expect("no generated definition installed on this thread")
    }

    async fn __run_step<'a>(
        &'a self,
        step: usize,
        input: &'a u64,
        state: &'a Vec<Option<u64>>,
        cx: &'a StepContext,
    ) -> Result<(usize, u64), StepError> {
        let attempt = cx.attempt();
        if attempt & 1 == 0 {
            tokio::task::yield_now().await;
        }
        self.check_cx(cx, step, Phase::Forward, *input);
        let has = |i: usize| state.get(i).copied().flatten().is_some();
        for &dep in &self.case.steps[step].deps {
            if !has(dep) {
                self.violation(format!("step {step} ran before its dependency {dep}"));
            }
        }
        if has(step) {
            self.violation(format!("step {step} ran again after it succeeded"));
        }
        let result = self.case.steps[step].forward.result(attempt);
        let produced = (result == Res::Ok).then(|| output(step, attempt));
        self.record(Call {
            step,
            phase: Phase::Forward,
            attempt,
            result,
            output: produced,
        });
        Self::to_error(result, error_text(false, STEP_NAMES[step], attempt))?;
        let produced = produced.expect("a step that succeeded produced an output");
        Ok((step, produced))
    }

    async fn __compensate<'a>(
        &'a self,
        step: usize,
        input: &'a u64,
        state: &'a Vec<Option<u64>>,
        cx: &'a StepContext,
    ) -> Result<(), StepError> {
        let attempt = cx.attempt();
        if attempt & 1 == 1 {
            tokio::task::yield_now().await;
        }
        self.check_cx(cx, step, Phase::Compensation, *input);
        let seen = state.get(step).copied().flatten();
        if seen.is_none() {
            self.violation(format!("compensation of step {step} found no output"));
        }
        let result = self.case.steps[step].compensation.result(attempt);
        self.record(Call {
            step,
            phase: Phase::Compensation,
            attempt,
            result,
            output: seen,
        });
        Self::to_error(result, error_text(false, UNDO_NAMES[step], attempt))
    }

    fn __outputs(state: Vec<Option<u64>>) -> Vec<u64> {
        state
            .into_iter()
            .map(|o| o.expect("a completed saga has every output"))
            .collect()
    }

    fn __store(state: &mut Vec<Option<u64>>, (step, output): (usize, u64)) {
        if state.len() <= step {
            state.resize(step + 1, None);
        }
        state[step] = Some(output);
    }

    fn __has_output(state: &Vec<Option<u64>>, step: usize) -> bool {
        state.get(step).copied().flatten().is_some()
    }

    fn __encode_step_output(output: &(usize, u64)) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(output.1)
    }

    fn __decode_output(
        state: &mut Vec<Option<u64>>,
        step: usize,
        value: serde_json::Value,
    ) -> Result<(), serde_json::Error> {
        let value: Option<u64> = serde_json::from_value(value)?;
        if state.len() <= step {
            state.resize(step + 1, None);
        }
        state[step] = value;
        Ok(())
    }
}

/// Panics (out of the executor, failing the test) when an attempt number
/// shows that a retry policy was not honoured, instead of spinning forever.
struct Watchdog;

impl Listener for Watchdog {
    fn on_event(&self, event: &Event<'_>) {
        match event.kind {
            EventKind::StepStarted { step, attempt }
            | EventKind::CompensationStarted { step, attempt }
                if attempt > ATTEMPT_WATCHDOG =>
            {
                panic!("`{step}` reached attempt {attempt}: a retry policy is not honoured");
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

/// An outcome, comparable.
#[derive(Debug, PartialEq)]
enum Ended {
    Completed(Vec<u64>),
    Compensated(Report),
    Stuck(Report),
}

struct Run {
    id: SagaId,
    ended: Ended,
    calls: Vec<Call>,
    violations: Vec<String>,
}

fn run_case(case: &Case) -> Run {
    CURRENT.with(|c| c.set(Some(case.definition())));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    let saga = Arc::new(Generated::new(case.clone()));
    let id = SagaId::new();
    let options = case.options(id);
    let outcome = rt.block_on(async {
        let runtime = Runtime::builder()
            .listener(Watchdog)
            .build()
            .await
            .expect("runtime");
        runtime.register(Arc::clone(&saga));
        if case.spawn {
            runtime
                .start_with::<Generated>(INPUT, options)
                .await
                .expect("start")
                .outcome()
                .await
                .expect("outcome")
        } else {
            runtime
                .run_with::<Generated>(INPUT, options)
                .await
                .expect("run")
        }
    });
    drop(rt);
    CURRENT.with(|c| c.set(None));
    let ended = match outcome {
        Outcome::Completed(outputs) => Ended::Completed(outputs),
        Outcome::Compensated(report) => Ended::Compensated(report),
        Outcome::Stuck(report) => Ended::Stuck(report),
    };
    let calls = std::mem::take(&mut *saga.calls.lock().unwrap());
    let violations = std::mem::take(&mut *saga.violations.lock().unwrap());
    Run {
        id,
        ended,
        calls,
        violations,
    }
}

// ---------------------------------------------------------------------------
// The laws, checked against the recorded calls
// ---------------------------------------------------------------------------

fn index_of(name: &str) -> usize {
    STEP_NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("unknown step name `{name}`"))
}

fn check_laws(case: &Case, run: &Run) -> Result<(), TestCaseError> {
    let n = case.steps.len();
    let calls = &run.calls;
    prop_assert!(
        run.violations.is_empty(),
        "contract breaches in the bodies: {:?}",
        run.violations
    );

    // Forward discipline: in order, each step at most once successfully,
    // nothing forward once rollback began.
    let mut completed_at: Vec<Option<usize>> = vec![None; n];
    let mut first_compensation: Option<usize> = None;
    for (pos, call) in calls.iter().enumerate() {
        match call.phase {
            Phase::Forward => {
                prop_assert!(
                    first_compensation.is_none(),
                    "step {} ran (call #{pos}) after rollback began",
                    call.step
                );
                prop_assert!(
                    (0..call.step).all(|j| completed_at[j].is_some()),
                    "step {} ran (call #{pos}) before every earlier step completed",
                    call.step
                );
                prop_assert!(
                    completed_at[call.step].is_none(),
                    "step {} ran (call #{pos}) after it had completed",
                    call.step
                );
                if call.result == Res::Ok {
                    completed_at[call.step] = Some(pos);
                }
            }
            Phase::Compensation => {
                first_compensation.get_or_insert(pos);
                let i = call.step;
                prop_assert!(
                    completed_at[i].is_some(),
                    "compensation of step {i} ran (call #{pos}) but step {i} never completed"
                );
                prop_assert_eq!(
                    case.steps[i].kind,
                    StepKind::Compensatable,
                    "compensation ran for step {} which is not compensatable",
                    i
                );
                if let Some(p) = case.pivot() {
                    prop_assert!(i < p, "step {i} at or after the pivot {p} was compensated");
                }
                let produced = completed_at[i].and_then(|at| calls[at].output);
                prop_assert_eq!(
                    call.output,
                    produced,
                    "compensation of step {} saw another output than the step produced",
                    i
                );
            }
        }
    }
    let completed: Vec<usize> = (0..n).filter(|&i| completed_at[i].is_some()).collect();
    let compensated: Vec<usize> = calls
        .iter()
        .filter(|c| c.phase == Phase::Compensation && c.result == Res::Ok)
        .map(|c| c.step)
        .collect();
    let compensation_calls: Vec<usize> = calls
        .iter()
        .filter(|c| c.phase == Phase::Compensation)
        .map(|c| c.step)
        .collect();
    let compensatable_completed_desc = |above: usize| -> Vec<usize> {
        completed
            .iter()
            .rev()
            .copied()
            .filter(|&i| i >= above && case.steps[i].kind == StepKind::Compensatable)
            .collect()
    };
    let names =
        |steps: &[usize]| -> Vec<&'static str> { steps.iter().map(|&i| STEP_NAMES[i]).collect() };
    // The failed step of a report: not completed, everything before it did,
    // nothing after it ran.
    let check_failed_step = |report: &Report| -> Result<usize, TestCaseError> {
        let Cause::StepFailed(failure) = &report.cause else {
            return Err(TestCaseError::fail(format!(
                "cause is not a step failure: {}",
                report.cause
            )));
        };
        prop_assert_eq!(failure.phase, Phase::Forward);
        prop_assert_eq!(failure.compensation, None);
        let f = index_of(failure.step);
        prop_assert!(completed_at[f].is_none(), "failed step {f} completed");
        prop_assert!(
            (0..f).all(|j| completed_at[j].is_some()),
            "a step before the failed step {f} did not complete"
        );
        prop_assert!(
            calls
                .iter()
                .all(|c| c.phase != Phase::Forward || c.step <= f),
            "a step after the failed step {f} ran"
        );
        prop_assert!(
            failure.attempts >= 1
                && case.steps[f].forward_policy.allows(failure.attempts)
                && (!failure.retryable
                    || !case.steps[f].forward_policy.allows(failure.attempts + 1)),
            "failure of step {f} after {} attempts (retryable: {}) contradicts its policy {:?}",
            failure.attempts,
            failure.retryable,
            case.steps[f].forward_policy
        );
        Ok(f)
    };

    match &run.ended {
        Ended::Completed(outputs) => {
            prop_assert_eq!(completed.len(), n, "completed but not every step completed");
            prop_assert!(
                compensation_calls.is_empty(),
                "completed but compensations ran: {:?}",
                compensation_calls
            );
            let produced: Vec<u64> = completed_at
                .iter()
                .map(|at| calls[at.unwrap()].output.unwrap())
                .collect();
            prop_assert_eq!(
                outputs,
                &produced,
                "outputs differ from what the steps produced"
            );
        }
        Ended::Compensated(report) => {
            prop_assert_eq!(report.saga_id, run.id);
            prop_assert_eq!(report.saga, SAGA_NAME);
            prop_assert!(report.stuck.is_none(), "compensated with a stuck failure");
            let f = check_failed_step(report)?;
            if let Some(p) = case.pivot() {
                prop_assert!(
                    f <= p,
                    "failure of step {f} after the pivot {p} rolled back"
                );
                prop_assert!(
                    completed_at[p].is_none(),
                    "the pivot completed, then rolled back"
                );
            }
            let expected = compensatable_completed_desc(0);
            prop_assert_eq!(
                &compensated,
                &expected,
                "compensations that succeeded (left) vs completed compensatable steps in reverse (right)"
            );
            prop_assert_eq!(
                &report.compensated,
                &names(&compensated),
                "report.compensated differs from the compensations that ran"
            );
        }
        Ended::Stuck(report) => {
            prop_assert_eq!(report.saga_id, run.id);
            prop_assert_eq!(report.saga, SAGA_NAME);
            let Some(stuck) = &report.stuck else {
                return Err(TestCaseError::fail("stuck without a stuck failure"));
            };
            let s = index_of(stuck.step);
            match stuck.phase {
                Phase::Forward => {
                    let Some(p) = case.pivot() else {
                        return Err(TestCaseError::fail(format!(
                            "stuck on step {s} in a saga without pivot"
                        )));
                    };
                    prop_assert!(s > p, "stuck on step {s}, not after the pivot {p}");
                    prop_assert!(completed_at[p].is_some(), "stuck after a pivot that failed");
                    prop_assert_eq!(stuck.compensation, None);
                    let f = check_failed_step(report)?;
                    prop_assert_eq!(f, s, "cause and stuck name different steps");
                    prop_assert!(
                        compensation_calls.is_empty(),
                        "compensations ran after the pivot: {:?}",
                        compensation_calls
                    );
                    prop_assert!(report.compensated.is_empty());
                }
                Phase::Compensation => {
                    prop_assert_eq!(stuck.compensation, Some(UNDO_NAMES[s]));
                    prop_assert_eq!(case.steps[s].kind, StepKind::Compensatable);
                    prop_assert!(
                        completed_at[s].is_some(),
                        "stuck undoing step {s} that never ran"
                    );
                    let f = check_failed_step(report)?;
                    prop_assert!(
                        s < f,
                        "stuck compensation {s} is not before the failed step {f}"
                    );
                    prop_assert!(
                        stuck.attempts >= 1
                            && case.steps[s].compensation_policy.allows(stuck.attempts),
                        "compensation {s} gave up after {} attempts, beyond its policy",
                        stuck.attempts
                    );
                    prop_assert_eq!(
                        &compensated,
                        &compensatable_completed_desc(s + 1),
                        "compensations that succeeded (left) vs completed compensatable steps after the stuck one, in reverse (right)"
                    );
                    prop_assert!(
                        compensation_calls.iter().all(|&i| i >= s),
                        "a compensation before the stuck one ran: {:?}",
                        compensation_calls
                    );
                    prop_assert_eq!(
                        &report.compensated,
                        &names(&compensated),
                        "report.compensated differs from the compensations that ran"
                    );
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The model: the expected run, derived from the plan alone
// ---------------------------------------------------------------------------

struct Expected {
    ended: Ended,
    calls: Vec<Call>,
}

/// Runs `script` under `pol` until success or giving up; returns the
/// succeeding attempt, or the failure.
fn attempts(
    script: &Script,
    pol: Pol,
    step: usize,
    phase: Phase,
    calls: &mut Vec<Call>,
    seen: Option<u64>,
) -> Result<u32, Failure> {
    let (name, compensation) = match phase {
        Phase::Forward => (STEP_NAMES[step], None),
        Phase::Compensation => (STEP_NAMES[step], Some(UNDO_NAMES[step])),
    };
    let mut attempt = 1;
    loop {
        let result = script.result(attempt);
        if script.invoked(attempt) {
            calls.push(Call {
                step,
                phase,
                attempt,
                result,
                output: match phase {
                    Phase::Forward => (result == Res::Ok).then(|| output(step, attempt)),
                    Phase::Compensation => seen,
                },
            });
        }
        if result == Res::Ok {
            return Ok(attempt);
        }
        let retryable = result == Res::Retryable;
        if !(retryable && pol.allows(attempt + 1)) {
            return Err(Failure {
                step: name,
                compensation,
                phase,
                error: error_text(script.injected, compensation.unwrap_or(name), attempt),
                retryable,
                attempts: attempt,
            });
        }
        attempt += 1;
    }
}

fn model(case: &Case, id: SagaId) -> Expected {
    let mut calls = Vec::new();
    let mut succeeded_on = Vec::new();
    let mut past_pivot = false;
    let report = |cause: Failure, compensated: Vec<&'static str>, stuck: Option<Failure>| Report {
        saga_id: id,
        saga: SAGA_NAME,
        cause: Cause::StepFailed(cause),
        compensated,
        stuck,
    };
    for (i, s) in case.steps.iter().enumerate() {
        match attempts(
            &s.forward,
            s.forward_policy,
            i,
            Phase::Forward,
            &mut calls,
            None,
        ) {
            Ok(attempt) => {
                succeeded_on.push(attempt);
                past_pivot |= s.kind == StepKind::Pivot;
            }
            Err(failure) if past_pivot => {
                let ended = Ended::Stuck(report(failure.clone(), Vec::new(), Some(failure)));
                return Expected { ended, calls };
            }
            Err(failure) => {
                let mut compensated = Vec::new();
                for j in (0..i).rev() {
                    let t = &case.steps[j];
                    if t.kind != StepKind::Compensatable {
                        continue;
                    }
                    let seen = Some(output(j, succeeded_on[j]));
                    let phase = Phase::Compensation;
                    match attempts(
                        &t.compensation,
                        t.compensation_policy,
                        j,
                        phase,
                        &mut calls,
                        seen,
                    ) {
                        Ok(_) => compensated.push(STEP_NAMES[j]),
                        Err(stuck) => {
                            let ended = Ended::Stuck(report(failure, compensated, Some(stuck)));
                            return Expected { ended, calls };
                        }
                    }
                }
                let ended = Ended::Compensated(report(failure, compensated, None));
                return Expected { ended, calls };
            }
        }
    }
    let outputs = succeeded_on
        .iter()
        .enumerate()
        .map(|(i, &a)| output(i, a))
        .collect();
    Expected {
        ended: Ended::Completed(outputs),
        calls,
    }
}

/// Runs a case, checks the laws, then the model. Returns the run for
/// further checks.
fn check(case: &Case) -> Result<Run, TestCaseError> {
    let run = run_case(case);
    check_laws(case, &run)?;
    let expected = model(case, run.id);
    prop_assert_eq!(
        &run.ended,
        &expected.ended,
        "outcome differs from the model"
    );
    prop_assert_eq!(&run.calls, &expected.calls, "calls differ from the model");
    Ok(run)
}

// ---------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------

/// A script that is clean with weight `clean` (against 4 for some retryable
/// failures, 1 for failing forever); `may_fail_forever` allows "every attempt
/// fails, retryably".
fn script(clean: u32, may_fail_forever: bool) -> impl Strategy<Value = Script> {
    let retry = prop_oneof![
        clean => Just(None),
        4 => (1u32..=3, 0u32..=2).prop_map(|(first, len)| Some((first, first + len))),
        1 => Just(Some((1, u32::MAX))),
    ];
    let permanent = prop_oneof![clean + 4 => Just(None), 1 => (1u32..=3).prop_map(Some)];
    (retry, permanent, any::<bool>()).prop_map(move |(mut retry, mut permanent_from, injected)| {
        if !may_fail_forever && retry.is_some_and(|(_, last)| last == u32::MAX) {
            retry = Some((1, 2));
        }
        if injected && permanent_from.is_some() {
            // `fail_step_permanently` covers every attempt (outside the
            // retryable range, whose rule comes first).
            permanent_from = Some(1);
        }
        Script {
            retry,
            permanent_from,
            injected,
        }
    })
}

fn capped() -> impl Strategy<Value = Option<u32>> {
    (1u32..=4).prop_map(Some)
}

fn maybe_forever() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![3 => capped(), 1 => Just(None)]
}

fn pol(max: impl Strategy<Value = Option<u32>>) -> impl Strategy<Value = Pol> {
    (max, any::<bool>()).prop_map(|(max, via_options)| Pol { max, via_options })
}

/// The parts of a step that do not depend on its position.
#[derive(Clone, Debug)]
struct Raw {
    readonly: bool,
    deps_mask: u8,
    forward: Script,
    capped_forward: Pol,
    after_pivot_forward: Pol,
    compensation: Script,
    compensation_policy: Pol,
}

fn raw() -> impl Strategy<Value = Raw> {
    (
        proptest::bool::weighted(0.25),
        any::<u8>(),
        script(12, false),
        pol(capped()),
        pol(maybe_forever()),
        script(6, true),
        pol(maybe_forever()),
    )
        .prop_map(
            |(
                readonly,
                deps_mask,
                forward,
                capped_forward,
                after_pivot_forward,
                compensation,
                mut compensation_policy,
            )| {
                if compensation.fails_forever() && compensation_policy.max.is_none() {
                    compensation_policy.max = Some(2);
                }
                Raw {
                    readonly,
                    deps_mask,
                    forward,
                    capped_forward,
                    after_pivot_forward,
                    compensation,
                    compensation_policy,
                }
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (1..=MAX_STEPS)
        .prop_flat_map(|n| {
            (
                proptest::option::weighted(0.7, 0..n),
                proptest::collection::vec(raw(), n),
                any::<bool>(),
            )
        })
        .prop_map(|(pivot, raws, spawn)| {
            let steps = raws
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let kind = match pivot {
                        Some(p) if i == p => StepKind::Pivot,
                        Some(p) if i > p => StepKind::Forward,
                        _ if r.readonly => StepKind::Readonly,
                        _ => StepKind::Compensatable,
                    };
                    let forward_policy = if kind == StepKind::Forward {
                        r.after_pivot_forward
                    } else {
                        r.capped_forward
                    };
                    StepPlan {
                        kind,
                        deps: (0..i).filter(|j| r.deps_mask & (1 << j) != 0).collect(),
                        forward: r.forward,
                        forward_policy,
                        compensation: r.compensation,
                        compensation_policy: r.compensation_policy,
                    }
                })
                .collect();
            Case { steps, spawn }
        })
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    Config {
        cases,
        // Regressions are kept as the named tests below, not in a file.
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_sagas_obey_the_laws(case in case()) {
        check(&case)?;
    }
}

// ---------------------------------------------------------------------------
// Corner cases, with hand-written expectations
// ---------------------------------------------------------------------------

fn step(kind: StepKind) -> StepPlan {
    StepPlan {
        kind,
        deps: Vec::new(),
        forward: Script::CLEAN,
        forward_policy: Pol {
            max: Some(3),
            via_options: false,
        },
        compensation: Script::CLEAN,
        compensation_policy: Pol {
            max: Some(3),
            via_options: false,
        },
    }
}

fn report_of(run: &Run) -> &Report {
    match &run.ended {
        Ended::Compensated(r) | Ended::Stuck(r) => r,
        Ended::Completed(_) => panic!("expected a report, the saga completed"),
    }
}

#[test]
fn failure_in_the_first_step_compensates_nothing() {
    use StepKind::*;
    let mut steps = vec![step(Compensatable), step(Compensatable), step(Pivot)];
    steps[0].forward.permanent_from = Some(1);
    let run = check(&Case {
        steps,
        spawn: false,
    })
    .unwrap();
    assert!(matches!(run.ended, Ended::Compensated(_)));
    let report = report_of(&run);
    assert_eq!(report.failed_step(), Some("s0"));
    assert!(report.compensated.is_empty());
    assert_eq!(
        run.calls.len(),
        1,
        "only the failing attempt ran: {:?}",
        run.calls
    );
}

#[test]
fn failure_in_the_pivot_compensates_the_steps_before_it_in_reverse() {
    use StepKind::*;
    let mut steps = vec![
        step(Compensatable),
        step(Readonly),
        step(Compensatable),
        step(Pivot),
        step(Forward),
    ];
    // The pivot fails retryably on every attempt its policy allows.
    steps[3].forward.retry = Some((1, 3));
    steps[3].forward.injected = true;
    let run = check(&Case { steps, spawn: true }).unwrap();
    let Ended::Compensated(report) = &run.ended else {
        panic!("expected Compensated, got {:?}", run.ended);
    };
    assert_eq!(report.failed_step(), Some("s3"));
    assert_eq!(report.compensated, ["s2", "s0"]);
    let undone: Vec<usize> = run
        .calls
        .iter()
        .filter(|c| c.phase == Phase::Compensation)
        .map(|c| c.step)
        .collect();
    assert_eq!(undone, [2, 0]);
    assert!(run.calls.iter().all(|c| c.step != 4), "s4 must never run");
}

#[test]
fn compensation_stuck_in_the_middle_stops_the_rollback_there() {
    use StepKind::*;
    let mut steps = vec![
        step(Compensatable),
        step(Compensatable),
        step(Compensatable),
        step(Pivot),
    ];
    steps[3].forward.permanent_from = Some(2);
    steps[3].forward.retry = Some((1, 1));
    steps[1].compensation.retry = Some((1, u32::MAX));
    steps[1].compensation_policy = Pol {
        max: Some(2),
        via_options: true,
    };
    let run = check(&Case {
        steps,
        spawn: false,
    })
    .unwrap();
    let Ended::Stuck(report) = &run.ended else {
        panic!("expected Stuck, got {:?}", run.ended);
    };
    assert_eq!(report.failed_step(), Some("s3"));
    assert_eq!(report.compensated, ["s2"]);
    let stuck = report.stuck.as_ref().unwrap();
    assert_eq!(stuck.compensation, Some("undo_s1"));
    assert_eq!((stuck.attempts, stuck.retryable), (2, true));
    assert!(
        run.calls
            .iter()
            .all(|c| !(c.phase == Phase::Compensation && c.step == 0)),
        "undo_s0 must not run past the stuck compensation"
    );
}

#[test]
fn step_after_the_pivot_giving_up_is_stuck_without_compensation() {
    use StepKind::*;
    let mut steps = vec![step(Compensatable), step(Pivot), step(Forward)];
    steps[2].forward.retry = Some((1, 5));
    steps[2].forward_policy = Pol {
        max: Some(2),
        via_options: true,
    };
    let run = check(&Case {
        steps,
        spawn: false,
    })
    .unwrap();
    let Ended::Stuck(report) = &run.ended else {
        panic!("expected Stuck, got {:?}", run.ended);
    };
    let stuck = report.stuck.as_ref().unwrap();
    assert_eq!(
        (stuck.step, stuck.phase, stuck.attempts),
        ("s2", Phase::Forward, 2)
    );
    assert!(report.compensated.is_empty());
    assert!(run.calls.iter().all(|c| c.phase == Phase::Forward));
}
