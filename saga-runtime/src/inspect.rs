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
    /// Succeeded, and its compensation gave up: the saga is stuck on it, its
    /// effect still in place, for a person to undo by hand (then
    /// `mark_compensated`) or to resume. A later attempt of the compensation
    /// (a resume) makes it `completed` again while it runs, `compensated`
    /// once it succeeds.
    UndoFailed,
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
            StepStatus::UndoFailed => "undo_failed",
        }
    }
}

/// What ends a value cut short in the table.
const CUT: char = '…';

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
    /// The error, a summary of the output (cut short at 60 characters,
    /// ending in `…`), or what is wrong with a damaged record.
    pub detail: String,
    /// The whole output of a `step_succeeded` record, as the JSON value the
    /// log holds (what an operator undoing the step by hand needs); absent
    /// from other rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
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
                output: None,
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

    /// The status of the step named `step`.
    fn slot(&mut self, step: &str) -> Option<&mut StepStatus> {
        self.steps
            .iter_mut()
            .find(|(name, _)| name == step)
            .map(|(_, status)| status)
    }

    fn status(&mut self, step: &str, status: StepStatus) {
        if let Some(slot) = self.slot(step) {
            *slot = status;
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
                row.output = Some(output.clone());
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
                    let status = if *outcome_unknown {
                        StepStatus::Unknown
                    } else {
                        StepStatus::Failed
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
                // The compensation is tried again (a resume): its step is
                // done and being undone, no longer given up on.
                if let Some(slot) = self.slot(step)
                    && *slot == StepStatus::UndoFailed
                {
                    *slot = StepStatus::Completed;
                }
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
                if !will_retry {
                    self.status(step, StepStatus::UndoFailed);
                }
            }
            Entry::Stuck { failure } => {
                row.step = Some(failure.step.clone());
                if failure.compensation.is_some() {
                    self.status(&failure.step, StepStatus::UndoFailed);
                }
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
                    if let Some(slot) = self.slot(name)
                        && *slot == StepStatus::Pending
                    {
                        *slot = StepStatus::Running;
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
        let input = self.input.as_ref().map(summarize);
        if let Some(input) = &input {
            let _ = writeln!(out, "input: {input}");
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
        let cut = |text: &str| text.ends_with(CUT);
        if input.as_deref().is_some_and(cut)
            || self
                .timeline
                .iter()
                .any(|r| r.output.is_some() && cut(&r.detail))
        {
            let _ = writeln!(
                out,
                "{CUT} values cut short: the JSON view (`saga-inspect <log> show {} --json`) \
                 carries the whole input and each whole output",
                self.id
            );
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

/// A one-line summary of a JSON value, at most 60 characters: one cut
/// short ends in `…`.
fn summarize(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 60 {
        text
    } else {
        let mut cut: String = text.chars().take(59).collect();
        cut.push(CUT);
        cut
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Phase;
    use crate::log::{FailureSnapshot, StepSnapshot};
    use crate::store::StoredRecord;

    fn stored(state: SagaState, entries: Vec<Entry>) -> StoredSaga {
        let created = Entry::Created {
            saga: "Trip".into(),
            fingerprint: 1,
            input: serde_json::json!(7),
            definition: DefinitionSnapshot {
                steps: vec![
                    StepSnapshot {
                        name: "reserve".into(),
                        kind: "compensatable".into(),
                        compensation: Some("release".into()),
                        deps: vec![],
                        output_type: "Reservation".into(),
                    },
                    StepSnapshot {
                        name: "book".into(),
                        kind: "pivot".into(),
                        compensation: None,
                        deps: vec![0],
                        output_type: "u64".into(),
                    },
                ],
            },
            deadline_ms: None,
            retry: Vec::new(),
        };
        let records = std::iter::once(created)
            .chain(entries)
            .enumerate()
            .map(|(seq, e)| StoredRecord {
                seq: seq as u64,
                at_ms: seq as u64,
                body: serde_json::to_string(&e).unwrap(),
            })
            .collect();
        StoredSaga {
            summary: SagaSummary {
                id: SagaId::new(),
                name: "Trip".into(),
                fingerprint: 1,
                state,
                created_ms: 0,
                updated_ms: 0,
            },
            records,
        }
    }

    fn reserved(output: serde_json::Value) -> Vec<Entry> {
        vec![
            Entry::StepStarted {
                step: "reserve".into(),
                attempt: 1,
            },
            Entry::StepSucceeded {
                step: "reserve".into(),
                attempt: 1,
                output,
            },
        ]
    }

    /// The JSON view carries each output whole, as the value the log holds;
    /// the table cuts it short and says so.
    #[test]
    fn the_json_view_carries_whole_outputs_and_the_table_says_it_cuts() {
        let long = "x".repeat(200);
        let output =
            serde_json::json!({ "reservation": format!("reservation-1-{long}"), "seats": [1, 2] });
        let view = Inspection::of(&stored(SagaState::Running, reserved(output.clone())));
        let json = serde_json::to_value(&view).unwrap();
        let row = &json["timeline"][2];
        assert_eq!(row["event"], "step_succeeded");
        assert_eq!(row["output"], output);
        let detail = row["detail"].as_str().unwrap();
        assert!(detail.ends_with('…'), "{detail}");
        assert_eq!(detail.chars().count(), 60, "{detail}");
        assert!(json["timeline"][1].get("output").is_none(), "{json}");

        let table = view.table();
        assert!(table.contains(detail), "{table}");
        assert!(
            table.contains(&format!(
                "… values cut short: the JSON view (`saga-inspect <log> show {} --json`)",
                view.id
            )),
            "{table}"
        );

        // A short output is whole in the table too, which then says nothing.
        let view = Inspection::of(&stored(
            SagaState::Running,
            reserved(serde_json::json!("r-1")),
        ));
        assert_eq!(view.timeline[2].output, Some(serde_json::json!("r-1")));
        assert_eq!(view.timeline[2].detail, "\"r-1\"");
        assert!(!view.table().contains("cut short"), "{}", view.table());
    }

    fn gave_up() -> Vec<Entry> {
        let mut entries = reserved(serde_json::json!("r-1"));
        entries.extend([
            Entry::StepStarted {
                step: "book".into(),
                attempt: 1,
            },
            Entry::StepFailed {
                step: "book".into(),
                attempt: 1,
                error: "sold out".into(),
                retryable: false,
                will_retry: false,
                outcome_unknown: false,
            },
            Entry::RollbackStarted {
                cause: CauseSnapshot::Cancelled,
            },
            Entry::CompensationStarted {
                step: "reserve".into(),
                attempt: 1,
            },
            Entry::CompensationFailed {
                step: "reserve".into(),
                attempt: 1,
                error: "hotel down".into(),
                retryable: true,
                will_retry: true,
            },
            Entry::CompensationStarted {
                step: "reserve".into(),
                attempt: 2,
            },
            Entry::CompensationFailed {
                step: "reserve".into(),
                attempt: 2,
                error: "hotel down".into(),
                retryable: true,
                will_retry: false,
            },
            Entry::Stuck {
                failure: FailureSnapshot {
                    step: "reserve".into(),
                    compensation: Some("release".into()),
                    phase: Phase::Compensation,
                    error: "hotel down".into(),
                    retryable: true,
                    attempts: 2,
                },
            },
        ]);
        entries
    }

    /// A step whose compensation gave up is drawn as such, not as
    /// completed; a resume that compensates it clears that.
    #[test]
    fn a_step_whose_compensation_gave_up_is_undo_failed_until_compensated() {
        let view = Inspection::of(&stored(SagaState::Stuck, gave_up()));
        assert_eq!(
            view.steps,
            [
                ("reserve".to_string(), StepStatus::UndoFailed),
                ("book".to_string(), StepStatus::Failed)
            ]
        );
        let graph = view.mermaid();
        assert!(graph.contains("class s0 undo_failed"), "{graph}");
        assert!(graph.contains("classDef undo_failed "), "{graph}");
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json["steps"][0],
            serde_json::json!(["reserve", "undo_failed"])
        );

        // A retry before giving up is not giving up.
        let mut retrying = gave_up();
        retrying.truncate(retrying.len() - 3);
        let view = Inspection::of(&stored(SagaState::Running, retrying));
        assert_eq!(view.steps[0].1, StepStatus::Completed);

        // Resumed: being undone again, then undone.
        let mut resumed = gave_up();
        resumed.extend([
            Entry::Resumed,
            Entry::CompensationStarted {
                step: "reserve".into(),
                attempt: 1,
            },
        ]);
        let view = Inspection::of(&stored(SagaState::Running, resumed.clone()));
        assert_eq!(view.steps[0].1, StepStatus::Completed);
        resumed.extend([
            Entry::CompensationSucceeded {
                step: "reserve".into(),
                attempt: 1,
            },
            Entry::Compensated,
        ]);
        let view = Inspection::of(&stored(SagaState::Compensated, resumed));
        assert_eq!(view.steps[0].1, StepStatus::Compensated);
        assert!(view.mermaid().contains("class s0 compensated"));

        // Undone by hand.
        let mut marked = gave_up();
        marked.push(Entry::MarkedCompensated {
            step: "reserve".into(),
        });
        let view = Inspection::of(&stored(SagaState::Stuck, marked));
        assert_eq!(view.steps[0].1, StepStatus::Compensated);
    }
}
