//! A readable view of one saga's log: its timeline as a table and its graph
//! with each step coloured by state. Used by the `saga-inspect` tool and by
//! the transfer example's `--inspect`; needs no user code, since the log
//! carries the saga's definition.

use std::fmt::Write as _;

use serde::Serialize;

use crate::SagaId;
use crate::log::{CauseSnapshot, DefinitionSnapshot, Entry, Resumes, SagaState};
use crate::store::{SagaSummary, StoredSaga};

/// Where one step of an inspected saga stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Started, not finished.
    Running,
    /// Succeeded.
    Completed,
    /// Failed for good.
    Failed,
    /// Gave up without an answer: an attempt may have taken effect unseen
    /// (unless the step is readonly, the saga is stuck on it, for a person
    /// to find out).
    Unknown,
    /// Succeeded, then undone.
    Compensated,
}

impl StepStatus {
    fn class(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Unknown => "unknown",
            StepStatus::Compensated => "compensated",
        }
    }
}

/// One row of a timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineRow {
    /// The record's position in the log.
    pub seq: u64,
    /// When it was written (ms since the Unix epoch).
    pub at_ms: u64,
    /// The step it concerns, if any.
    pub step: Option<String>,
    /// The attempt, if any.
    pub attempt: Option<u32>,
    /// The event (`step_started`, ...), or `damaged`.
    pub event: String,
    /// The error, a summary of the output, or what is wrong with a damaged
    /// record.
    pub detail: String,
}

/// One saga's log, made readable.
///
/// ```
/// use saga_runtime::inspect::Inspection;
/// use saga_runtime::log::{DefinitionSnapshot, Entry, SagaState, StepSnapshot};
/// use saga_runtime::store::{SagaSummary, StoredRecord, StoredSaga};
/// use saga_runtime::SagaId;
///
/// let created = Entry::Created {
///     saga: "Pay".into(),
///     fingerprint: 1,
///     input: serde_json::json!(5),
///     definition: DefinitionSnapshot {
///         steps: vec![StepSnapshot { name: "charge".into(), kind: "pivot".into(), compensation: None, deps: vec![], output_type: "u64".into() }],
///     },
///     deadline_ms: None,
///     retry: Vec::new(),
/// };
/// let body = |e: &Entry| serde_json::to_string(e).unwrap();
/// let id = SagaId::new();
/// let stored = StoredSaga {
///     summary: SagaSummary { id, name: "Pay".into(), fingerprint: 1, state: SagaState::Running, created_ms: 0, updated_ms: 0 },
///     records: vec![
///         StoredRecord { seq: 0, at_ms: 0, body: body(&created) },
///         StoredRecord { seq: 1, at_ms: 5, body: body(&Entry::StepStarted { step: "charge".into(), attempt: 1 }) },
///     ],
/// };
/// let view = Inspection::of(&stored);
/// assert!(view.table().contains("step_started"));
/// assert!(view.mermaid().contains("class s0 running"));
/// ```
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// The saga run.
    pub id: SagaId,
    /// The saga's name.
    pub name: String,
    /// Where it stands.
    pub state: SagaState,
    /// Its definition's fingerprint. In JSON a string of 16 hex digits, as
    /// `saga-inspect list --json` prints it (a number this large loses
    /// digits in many JSON readers).
    #[serde(serialize_with = "hex")]
    pub fingerprint: u64,
    /// The input, if the `created` record could be read.
    pub input: Option<serde_json::Value>,
    /// The definition recorded at creation.
    pub definition: Option<DefinitionSnapshot>,
    /// Each step's status, by name, in order.
    pub steps: Vec<(String, StepStatus)>,
    /// Every record.
    pub timeline: Vec<TimelineRow>,
}

impl Inspection {
    /// Reads `stored`; damaged records become rows saying so.
    pub fn of(stored: &StoredSaga) -> Inspection {
        let SagaSummary {
            id,
            name,
            fingerprint,
            state,
            ..
        } = stored.summary.clone();
        let mut view = Inspection {
            id,
            name,
            state,
            fingerprint,
            input: None,
            definition: None,
            steps: Vec::new(),
            timeline: Vec::new(),
        };
        for record in &stored.records {
            let mut row = TimelineRow {
                seq: record.seq,
                at_ms: record.at_ms,
                step: None,
                attempt: None,
                event: String::new(),
                detail: String::new(),
            };
            match record.decode() {
                Ok(entry) => {
                    row.event = entry.name().to_string();
                    view.apply(&entry, &mut row);
                }
                Err(e) => {
                    row.event = "damaged".into();
                    row.detail = e.to_string();
                }
            }
            view.timeline.push(row);
        }
        view
    }

    fn status(&mut self, step: &str, status: StepStatus) {
        if let Some(slot) = self.steps.iter_mut().find(|(name, _)| name == step) {
            slot.1 = status;
        }
    }

    fn apply(&mut self, entry: &Entry, row: &mut TimelineRow) {
        match entry {
            Entry::Created {
                input, definition, ..
            } => {
                row.detail = summarize(input);
                self.input = Some(input.clone());
                self.steps = definition
                    .steps
                    .iter()
                    .map(|s| (s.name.clone(), StepStatus::Pending))
                    .collect();
                self.definition = Some(definition.clone());
            }
            Entry::StepStarted { step, attempt } => {
                (row.step, row.attempt) = (Some(step.clone()), Some(*attempt));
                self.status(step, StepStatus::Running);
            }
            Entry::StepSucceeded {
                step,
                attempt,
                output,
            } => {
                (row.step, row.attempt) = (Some(step.clone()), Some(*attempt));
                row.detail = summarize(output);
                self.status(step, StepStatus::Completed);
            }
            Entry::StepFailed {
                step,
                attempt,
                error,
                will_retry,
                outcome_unknown,
                ..
            } => {
                (row.step, row.attempt) = (Some(step.clone()), Some(*attempt));
                row.detail = if *will_retry {
                    format!("{error} (will retry)")
                } else {
                    error.clone()
                };
                if !will_retry {
                    let status = match outcome_unknown {
                        true => StepStatus::Unknown,
                        false => StepStatus::Failed,
                    };
                    self.status(step, status);
                }
            }
            Entry::RollbackStarted { cause } => {
                row.detail = match cause {
                    CauseSnapshot::StepFailed { failure } => {
                        format!("step `{}` failed: {}", failure.step, failure.error)
                    }
                    CauseSnapshot::Cancelled => "cancelled".into(),
                    CauseSnapshot::DeadlineExceeded => "deadline exceeded".into(),
                };
            }
            Entry::CompensationStarted { step, attempt } => {
                (row.step, row.attempt) = (Some(step.clone()), Some(*attempt));
            }
            Entry::CompensationSucceeded { step, attempt } => {
                (row.step, row.attempt) = (Some(step.clone()), Some(*attempt));
                self.status(step, StepStatus::Compensated);
            }
            Entry::CompensationFailed {
                step,
                attempt,
                error,
                will_retry,
                ..
            } => {
                (row.step, row.attempt) = (Some(step.clone()), Some(*attempt));
                row.detail = if *will_retry {
                    format!("{error} (will retry)")
                } else {
                    error.clone()
                };
            }
            Entry::Stuck { failure } => {
                row.step = Some(failure.step.clone());
                row.detail = format!(
                    "{} gave up after {} attempts: {}",
                    failure.compensation.as_deref().unwrap_or(&failure.step),
                    failure.attempts,
                    failure.error
                );
            }
            Entry::MarkedCompensated { step } => {
                row.step = Some(step.clone());
                row.detail = "marked compensated by an operator".into();
                self.status(step, StepStatus::Compensated);
            }
            Entry::Recovered {
                resumes,
                step,
                running,
                compensating,
            } => {
                row.step = step.clone();
                row.detail = recovered_detail(*resumes, step.as_deref(), running, compensating);
                // What may have been running at the crash runs again: a step
                // whose start the crash caught before it was durable shows
                // as running, not as never started.
                for name in running {
                    if let Some(slot) = self.steps.iter_mut().find(|(n, _)| n == name)
                        && slot.1 == StepStatus::Pending
                    {
                        slot.1 = StepStatus::Running;
                    }
                }
            }
            Entry::Completed | Entry::Compensated | Entry::Resumed => {}
        }
    }

    /// The timeline as an aligned text table, headed by the saga's identity.
    pub fn table(&self) -> String {
        let mut out = format!(
            "saga {} `{}`: {}\n",
            self.id,
            self.name,
            self.state.as_str()
        );
        if let Some(input) = &self.input {
            let _ = writeln!(out, "input: {}", summarize(input));
        }
        let header = ["seq", "time (UTC)", "step", "attempt", "event", "detail"];
        let rows: Vec<[String; 6]> = self
            .timeline
            .iter()
            .map(|r| {
                [
                    r.seq.to_string(),
                    utc(r.at_ms),
                    r.step.clone().unwrap_or_default(),
                    r.attempt.map(|a| a.to_string()).unwrap_or_default(),
                    r.event.clone(),
                    r.detail.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    let _ = write!(s, "{cell:<w$}  ");
                }
            }
            s.trim_end().to_string()
        };
        out.push_str(&line(&header.map(String::from)));
        out.push('\n');
        for row in &rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }

    /// The saga's graph with each step coloured by its status, and each
    /// recovery after a crash as a comment (`%%`) at its end.
    pub fn mermaid(&self) -> String {
        let mut out = match &self.definition {
            Some(def) => def.to_mermaid_with(|i| self.steps.get(i).map(|(_, s)| s.class())),
            None => "flowchart TD\n    damaged([the created record is damaged])\n".into(),
        };
        for row in self.timeline.iter().filter(|r| r.event == "recovered") {
            // A comment ends at the line's end: nothing read from the log
            // may end it early.
            let detail: String = row
                .detail
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let _ = writeln!(out, "    %% seq {}: {detail}", row.seq);
        }
        out
    }
}

/// What a [`Entry::Recovered`] row says.
fn recovered_detail(
    resumes: Resumes,
    step: Option<&str>,
    running: &[String],
    compensating: &[String],
) -> String {
    let mut detail = String::from("recovered after a crash");
    let _ = match (resumes, step) {
        (Resumes::Forward, Some(step)) => write!(detail, "; goes on at `{step}`"),
        (Resumes::Forward, None) => write!(detail, "; every step had completed"),
        (Resumes::GaveUp, Some(step)) => write!(detail, "; `{step}` had given up"),
        (Resumes::GaveUp, None) => write!(detail, "; a step had given up"),
        (Resumes::RollingBack, _) => write!(detail, "; rolling back"),
    };
    if !running.is_empty() {
        let _ = write!(detail, "; may have been running: {}", running.join(", "));
    }
    if !compensating.is_empty() {
        let _ = write!(
            detail,
            "; may have been compensating: {}",
            compensating.join(", ")
        );
    }
    detail
}

fn hex<S: serde::Serializer>(fingerprint: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{fingerprint:016x}"))
}

/// A one-line summary of a JSON value, at most 60 characters.
fn summarize(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 60 {
        text
    } else {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
///
/// ```
/// assert_eq!(saga_runtime::inspect::utc(0), "1970-01-01 00:00:00.000");
/// assert_eq!(saga_runtime::inspect::utc(1_795_000_000_123), "2026-11-18 11:06:40.123");
/// ```
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}
