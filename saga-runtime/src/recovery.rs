//! Reading a saga back from its log: the input, the outputs of the steps
//! that completed, and where the run stands, so that it continues exactly
//! where it stopped. A step started but not finished runs again (with the
//! same idempotency key); a rollback in progress continues.

use std::collections::HashMap;

use serde::Deserialize;

use crate::executor::{GaveUp, Position, ResumeAt, RollbackAt, unresolved_if_unknown};
use crate::log::{Entry, Resumes, RetryOverride};
use crate::store::StoredSaga;
use crate::{Error, Failure, Phase, Saga, SagaId};

/// A saga's log, replayed.
pub(crate) struct Replayed<S: Saga> {
    pub(crate) id: SagaId,
    pub(crate) input: S::Input,
    pub(crate) state: S::State,
    pub(crate) position: Position,
    /// The number the next record gets.
    pub(crate) next_seq: u64,
    /// The log ends stuck (no operator has resumed it).
    pub(crate) stuck: bool,
    /// The log ends with the saga finished.
    pub(crate) finished: bool,
    /// When the saga's deadline passes (ms since the Unix epoch), if the
    /// log says.
    pub(crate) deadline_ms: Option<u64>,
    /// The run's retry overrides.
    pub(crate) retry: Vec<RetryOverride>,
    /// The steps an attempt of which may have been running when the log
    /// ended (see [`Entry::Recovered`]), in step order.
    pub(crate) running: Vec<usize>,
    /// Likewise for compensations, by step, in step order.
    pub(crate) compensating: Vec<usize>,
}

impl<S: Saga> Replayed<S> {
    /// The [`Entry::Recovered`] record a recovery after a crash writes
    /// before it resumes this saga: what this replay found.
    pub(crate) fn recovered(&self) -> Entry {
        let def = S::definition();
        let name = |i: usize| def.steps().get(i).map(|s| s.name().to_string());
        let (resumes, step) = match &self.position {
            Position::Resume(at) => match &at.gave_up {
                Some(gave_up) => (Resumes::GaveUp, name(gave_up.step)),
                None => (Resumes::Forward, name(at.next)),
            },
            Position::Forward { next, .. } => (Resumes::Forward, name(*next)),
            Position::Failed(gave_up) => (Resumes::GaveUp, name(gave_up.step)),
            Position::Rollback(_) => (Resumes::RollingBack, None),
        };
        Entry::Recovered {
            resumes,
            step,
            running: self.running.iter().filter_map(|&i| name(i)).collect(),
            compensating: self.compensating.iter().filter_map(|&i| name(i)).collect(),
        }
    }
}

/// What resuming needs of a `created` record. Decoded as a plain struct,
/// it skips the definition snapshot (most of the record) without building
/// it, and without the buffering an internally tagged [`Entry`] needs.
#[derive(Deserialize)]
struct CreatedHead {
    event: String,
    saga: String,
    fingerprint: u64,
    input: serde_json::Value,
    /// Absent from logs written before deadlines were logged.
    #[serde(default)]
    deadline_ms: Option<u64>,
    /// Likewise.
    #[serde(default)]
    retry: Vec<RetryOverride>,
}

/// What the log says of one step.
#[derive(Clone, Default)]
struct StepLog {
    completed: bool,
    compensated: bool,
    /// The last failed attempt of the step, and whether it gave up.
    failed: Option<(u32, bool)>,
    /// The last failed attempt of its compensation, and whether it gave up.
    compensation_failed: Option<(u32, bool)>,
    /// The last error of either, for a report.
    last_error: Option<(String, bool)>,
    /// The last attempt of the step that started.
    started: u32,
    /// The last attempt of its compensation that started.
    compensation_started: u32,
    /// An attempt may have taken effect unseen: it timed out, or it was
    /// running when the process stopped.
    unknown: bool,
}

pub(crate) fn replay<S: Saga>(stored: &StoredSaga) -> Result<Replayed<S>, Error> {
    replay_as::<S>(stored, false)
}

/// Replays `stored`; `just_resumed` says its last record is an operator's
/// `resumed` that this process wrote a moment ago: no run of it can have
/// started since, so nothing is in flight. (After a crash, a `resumed` last
/// may be followed by starts that were not yet durable.)
pub(crate) fn replay_as<S: Saga>(
    stored: &StoredSaga,
    just_resumed: bool,
) -> Result<Replayed<S>, Error> {
    let def = S::definition();
    let id = stored.summary.id;
    let damaged = |seq: u64, message: String| Error::DamagedRecord { id, seq, message };
    let mut records = stored.records.iter();
    let Some(first) = records.next() else {
        return Err(damaged(0, "the log is empty".into()));
    };
    let head = match serde_json::from_str::<CreatedHead>(&first.body) {
        Ok(head) if head.event == "created" => head,
        // Not a `created` record: say what it is, if it is anything.
        head => {
            let message = match (first.decode(), head) {
                (Ok(Entry::Created { .. }), Err(e)) | (Err(e), _) => e.to_string(),
                (Ok(other), _) => {
                    format!("the first record is `{}`, not `created`", other.name())
                }
            };
            return Err(damaged(first.seq, message));
        }
    };
    if head.saga != def.name() {
        return Err(Error::UnknownSaga {
            id,
            name: head.saga,
        });
    }
    let (input, logged, deadline_ms, retry) =
        (head.input, head.fingerprint, head.deadline_ms, head.retry);
    if !def.wrote(logged) {
        return Err(Error::DefinitionChanged {
            id,
            name: def.name(),
            logged,
            current: def.fingerprint(),
        });
    }
    let input: S::Input = serde_json::from_value(input)
        .map_err(|e| damaged(first.seq, format!("the input does not decode: {e}")))?;

    let n = def.steps().len();
    let mut steps = vec![StepLog::default(); n];
    let mut state = S::State::default();
    let mut cause = None;
    let mut stuck = false;
    let mut finished = false;
    let mut next_seq = first.seq + 1;
    let index: HashMap<&str, usize> = def
        .steps()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name(), i))
        .collect();
    for record in records {
        let entry = record
            .decode()
            .map_err(|e| damaged(record.seq, e.to_string()))?;
        let step_of = |name: &str| {
            index.get(name).copied().ok_or_else(|| {
                damaged(
                    record.seq,
                    format!("names step `{name}`, which the saga does not have"),
                )
            })
        };
        match entry {
            Entry::Created { .. } => {
                return Err(damaged(record.seq, "a second `created` record".into()));
            }
            Entry::StepStarted { step, attempt } => {
                let i = step_of(&step)?;
                steps[i].started = steps[i].started.max(attempt);
            }
            Entry::CompensationStarted { step, attempt } => {
                let i = step_of(&step)?;
                steps[i].compensation_started = steps[i].compensation_started.max(attempt);
            }
            Entry::StepSucceeded { step, output, .. } => {
                let i = step_of(&step)?;
                S::__decode_output(&mut state, i, output).map_err(|e| {
                    damaged(
                        record.seq,
                        format!("the output of step `{step}` does not decode: {e}"),
                    )
                })?;
                steps[i].completed = true;
            }
            Entry::StepFailed {
                step,
                attempt,
                error,
                retryable,
                will_retry,
                outcome_unknown,
            } => {
                let i = step_of(&step)?;
                steps[i].failed = Some((attempt, !will_retry));
                steps[i].last_error = Some((error, retryable));
                steps[i].unknown |= outcome_unknown;
            }
            Entry::RollbackStarted { cause: c } => {
                cause = Some(c.restore(def).ok_or_else(|| {
                    damaged(
                        record.seq,
                        "the rollback's cause names an unknown step".into(),
                    )
                })?);
            }
            Entry::CompensationSucceeded { step, .. } | Entry::MarkedCompensated { step } => {
                steps[step_of(&step)?].compensated = true;
            }
            Entry::CompensationFailed {
                step,
                attempt,
                error,
                retryable,
                will_retry,
            } => {
                let i = step_of(&step)?;
                steps[i].compensation_failed = Some((attempt, !will_retry));
                steps[i].last_error = Some((error, retryable));
            }
            Entry::Stuck { .. } => stuck = true,
            Entry::Resumed => {
                // An operator's resume starts every policy afresh, and the
                // run that got stuck had ended: what it started answered
                // (what did not answer stays unknown, from its records).
                stuck = false;
                for s in &mut steps {
                    s.failed = None;
                    s.compensation_failed = None;
                    s.started = 0;
                    s.compensation_started = 0;
                }
            }
            // A note of an earlier recovery: what it says, the records
            // around it say too.
            Entry::Recovered { .. } => {}
            Entry::Completed | Entry::Compensated => finished = true,
        }
        next_seq = record.seq + 1;
    }

    let next = steps.iter().position(|s| !s.completed).unwrap_or(n);
    let past_pivot = |j: usize| {
        def.steps()[..j]
            .iter()
            .any(|s| s.kind() == crate::StepKind::Pivot)
    };
    let failure = |i: usize, phase: Phase, attempts: u32| {
        let step = &def.steps()[i];
        let (error, retryable) = steps[i].last_error.clone().unwrap_or_default();
        Failure {
            step: step.name(),
            compensation: match phase {
                Phase::Forward => None,
                Phase::Compensation => step.compensation(),
            },
            phase,
            error,
            retryable,
            attempts,
        }
    };
    // A step an operator marked compensated though it never answered (the
    // saga was stuck on it, its outcome unknown): they found it had no
    // effect, or undid it, so the saga rolls back without it.
    let cause = cause.or_else(|| {
        let j = (0..n).find(|&j| {
            steps[j].compensated
                && !steps[j].completed
                && unresolved_if_unknown(def, j, past_pivot(j))
        })?;
        let attempts = steps[j].started.max(1);
        Some(crate::Cause::StepFailed(failure(
            j,
            Phase::Forward,
            attempts,
        )))
    });
    let mut running = Vec::new();
    let mut compensating = Vec::new();
    let position = match cause {
        Some(cause) => {
            // Each compensation goes on from the attempt after its last
            // failed one; one that exhausted its policy is not run again,
            // and the last of those in rollback order is what the saga ends
            // stuck with (once the rest of its group has finished).
            let attempts = steps
                .iter()
                .map(|s| s.compensation_failed.map_or(1, |(attempt, _)| attempt + 1))
                .collect();
            let exhausted: Vec<bool> = steps
                .iter()
                .map(|s| {
                    !s.compensated && s.compensation_failed.is_some_and(|(_, gave_up)| gave_up)
                })
                .collect();
            let gave_up = (0..n).rev().find(|&i| exhausted[i]).map(|i| {
                let attempts = steps[i].compensation_failed.map_or(1, |(a, _)| a);
                (i, failure(i, Phase::Compensation, attempts))
            });
            compensating =
                in_flight_compensations(def, &steps, &exhausted, gave_up.as_ref().map(|(i, _)| *i));
            Position::Rollback(Box::new(RollbackAt {
                compensated: steps.iter().map(|s| s.compensated).collect(),
                cause,
                attempts,
                exhausted,
                gave_up,
            }))
        }
        None => {
            // A step that gave up (in a concurrent group it need not be the
            // first unfinished one) decides; otherwise the first unfinished
            // step goes on from its last failed attempt.
            let mut gave_up: Vec<GaveUp> = (0..n)
                .filter(|&j| !steps[j].completed && matches!(steps[j].failed, Some((_, true))))
                .map(|j| {
                    let attempts = steps[j].failed.map_or(1, |(a, _)| a);
                    let failure = failure(j, Phase::Forward, attempts);
                    // Gave up with its outcome unknown: stuck, as the live
                    // run ends (see `executor::forward`).
                    let unresolved = steps[j].unknown
                        && failure.retryable
                        && unresolved_if_unknown(def, j, past_pivot(j));
                    GaveUp {
                        step: j,
                        failure,
                        unresolved,
                    }
                })
                .collect();
            // As the live run decides a group: one left unresolved first,
            // then the first in step order.
            let decides = match gave_up.iter().position(|g| g.unresolved) {
                Some(k) => Some(gave_up.swap_remove(k)),
                None => gave_up.into_iter().next(),
            };
            // An attempt started and never reported ran into the crash: it
            // may have taken effect. So may one whose start record the crash
            // caught before it was durable (runs do not wait for starts):
            // every unfinished step of the group that was running counts as
            // started. Once a member gave up, though, a sibling starts no
            // new attempt (it is withdrawn), and what started before the
            // durable give-up was logged before it: only a sibling the log
            // shows never started may have started unseen (all of a group
            // start at once, a member that fails at once first).
            let group = def.steps().get(next).map(|s| s.group());
            for (j, s) in steps.iter_mut().enumerate() {
                let last_failed = s.failed.map_or(0, |(a, _)| a);
                let in_flight = Some(def.steps()[j].group()) == group
                    && !just_resumed
                    && (decides.is_none() || s.started == 0)
                    && !matches!(s.failed, Some((_, true)));
                let cut_off = !s.completed && (s.started > last_failed || in_flight);
                s.unknown |= cut_off;
                if cut_off {
                    running.push(j);
                }
            }
            // With a member that gave up: the siblings whose attempt may
            // have acted unseen, which the live run would have waited for.
            let rerun: Vec<bool> = match &decides {
                Some(gave_up) => (0..n)
                    .map(|j| {
                        j != gave_up.step
                            && def.steps()[j].group() == def.steps()[gave_up.step].group()
                            && !steps[j].completed
                            && steps[j].unknown
                            && !matches!(steps[j].failed, Some((_, true)))
                            && unresolved_if_unknown(def, j, past_pivot(j))
                    })
                    .collect(),
                None => Vec::new(),
            };
            let resume = |gave_up: Option<GaveUp>, rerun: Vec<bool>| {
                Position::Resume(Box::new(ResumeAt {
                    next,
                    attempts: steps
                        .iter()
                        .map(|s| s.failed.map_or(1, |(a, _)| a + 1))
                        .collect(),
                    unknown: steps.iter().map(|s| s.unknown).collect(),
                    gave_up,
                    rerun,
                }))
            };
            match decides {
                // The recovered run asks those again before it stops.
                Some(gave_up) if rerun.contains(&true) => resume(Some(gave_up), rerun),
                Some(gave_up) => Position::Failed(Box::new(gave_up)),
                None => resume(None, rerun),
            }
        }
    };
    Ok(Replayed {
        id,
        input,
        state,
        position,
        next_seq,
        stuck,
        finished,
        deadline_ms,
        retry,
        running,
        compensating,
    })
}

/// The compensations that may have been running when the log of a rollback
/// ended: the pending members of the group the rollback stands at (it
/// undoes a group's members at once, and a compensation's start is not
/// waited for, so each may have started unseen), and any the log shows
/// started and not finished. As the run goes on (see `executor::roll_back`):
/// the last group holding a compensation still to run, unless the group of
/// the compensation that gave up comes first, where the run stops.
fn in_flight_compensations(
    def: &crate::Definition,
    steps: &[StepLog],
    exhausted: &[bool],
    gave_up: Option<usize>,
) -> Vec<usize> {
    let kinds = def.steps();
    let pending = |i: usize| {
        kinds[i].kind() == crate::StepKind::Compensatable
            && steps[i].completed
            && !steps[i].compensated
            && !exhausted[i]
    };
    let mut at = Vec::new();
    let mut end = kinds.len();
    while end > 0 {
        let mut start = end - 1;
        while start > 0 && kinds[start - 1].group() == kinds[end - 1].group() {
            start -= 1;
        }
        at = (start..end).filter(|&i| pending(i)).collect();
        if !at.is_empty() || gave_up.is_some_and(|k| k >= start) {
            break;
        }
        end = start;
    }
    let started = |i: usize| {
        let s = &steps[i];
        let last_failed = s.compensation_failed.map_or(0, |(a, _)| a);
        !s.compensated && s.compensation_started > last_failed
    };
    (0..kinds.len())
        .filter(|&i| at.contains(&i) || started(i))
        .collect()
}
