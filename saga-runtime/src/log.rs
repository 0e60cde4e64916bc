//! The saga log: the records a durable runtime appends for every transition
//! of every saga, and the snapshot of a saga's definition recorded when it is
//! created (so tools can read a log without the user's code).
//!
//! Records are JSON (serde) so that a log stays readable by a person with
//! `sqlite3` and by the inspector.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Cause, Definition, Failure, Phase, RetryPolicy, SagaId, StepKind};

/// One record of a saga's log.
///
/// ```
/// use saga_runtime::log::{Entry, Record};
/// use saga_runtime::SagaId;
/// let record = Record::new(SagaId::new(), 2, Entry::StepStarted { step: "hold".into(), attempt: 1 });
/// let json = serde_json::to_string(&record.entry).unwrap();
/// assert_eq!(json, r#"{"event":"step_started","step":"hold","attempt":1}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The saga run.
    pub saga_id: SagaId,
    /// Position in the saga's log, from 0 (the `Created` record).
    pub seq: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub entry: Entry,
}

impl Record {
    /// A record stamped with the current time.
    pub fn new(saga_id: SagaId, seq: u64, entry: Entry) -> Record {
        Record {
            saga_id,
            seq,
            at_ms: now_ms(),
            entry,
        }
    }
}

/// The current time in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a record says happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// The saga was created with this input; durable before any step runs.
    Created {
        /// The saga's name.
        saga: String,
        /// Its definition's fingerprint.
        fingerprint: u64,
        /// The input, as JSON.
        input: serde_json::Value,
        /// The steps and their dependencies.
        definition: DefinitionSnapshot,
        /// When the saga's deadline passes, in milliseconds since the Unix
        /// epoch, if it has one. Fixed when the saga is created, so that a
        /// saga recovered after a crash has only the time it had left.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
        /// The run's retry overrides ([`SagaOptions::retry`]), so that a
        /// saga recovered after a crash keeps them.
        ///
        /// [`SagaOptions::retry`]: crate::SagaOptions::retry
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        retry: Vec<RetryOverride>,
    },
    /// An attempt of a step began.
    StepStarted {
        /// The step.
        step: String,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A step succeeded with this output; durable before anything uses it.
    StepSucceeded {
        /// The step.
        step: String,
        /// The attempt that succeeded.
        attempt: u32,
        /// The output, as JSON.
        output: serde_json::Value,
    },
    /// An attempt of a step failed.
    StepFailed {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// The error and its sources.
        error: String,
        /// Whether the error was retryable.
        retryable: bool,
        /// Whether another attempt follows.
        will_retry: bool,
        /// The attempt was cut off by its timeout, so it may have taken
        /// effect: the saga does not roll back without the step's answer
        /// (it ends stuck if the step's attempts run out first).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        outcome_unknown: bool,
    },
    /// The decision to roll back; durable before any compensation runs.
    RollbackStarted {
        /// Why.
        cause: CauseSnapshot,
    },
    /// An attempt of a compensation began.
    CompensationStarted {
        /// The step being undone.
        step: String,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A compensation succeeded.
    CompensationSucceeded {
        /// The step undone.
        step: String,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// An attempt of a compensation failed.
    CompensationFailed {
        /// The step being undone.
        step: String,
        /// The attempt.
        attempt: u32,
        /// The error and its sources.
        error: String,
        /// Whether the error was retryable.
        retryable: bool,
        /// Whether another attempt follows.
        will_retry: bool,
    },
    /// Every step succeeded.
    Completed,
    /// Every completed step was compensated.
    Compensated,
    /// The saga needs an operator.
    Stuck {
        /// What gave up.
        failure: FailureSnapshot,
    },
    /// An operator resumed the stuck saga.
    Resumed,
    /// An operator declared step `step` compensated by hand.
    MarkedCompensated {
        /// The step.
        step: String,
    },
    /// Recovery took the saga up after the process running it stopped
    /// short of an end (a crash): what its log said then. Written before the
    /// recovered run acts, so that a reader of the log can tell that what
    /// follows is a second run, and that what was running at the crash may
    /// have acted twice under the same idempotency key (once before the
    /// crash, once after). An operator's [`Resumed`](Entry::Resumed) of a
    /// stuck saga writes none.
    ///
    /// Only a note: replaying a log reads past it, so a log with any number
    /// of them resumes where it would without them. A binary from before
    /// this record existed cannot read a log holding one: it reports the
    /// record as damaged (that saga is not recovered, its log untouched;
    /// every other saga still is), and its inspector shows the row as
    /// `damaged`.
    ///
    /// ```
    /// use saga_runtime::log::{Entry, Resumes};
    /// let entry = Entry::Recovered {
    ///     resumes: Resumes::Forward,
    ///     step: Some("charge".into()),
    ///     running: vec!["charge".into()],
    ///     compensating: vec![],
    /// };
    /// let json = serde_json::to_string(&entry).unwrap();
    /// assert_eq!(
    ///     json,
    ///     r#"{"event":"recovered","resumes":"forward","step":"charge","running":["charge"]}"#
    /// );
    /// ```
    Recovered {
        /// Which way the saga goes on.
        resumes: Resumes,
        /// Going forward, the first step not completed (none: every step
        /// completed, and the run records the end); a step that gave up,
        /// the step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        /// Steps an attempt of which may have been running at the crash:
        /// started and not finished as the log tells, or, since runs do
        /// not wait for start records, about to start after the last
        /// durable record. Each may have taken effect; the recovered run
        /// asks it again under the same idempotency key.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        running: Vec<String>,
        /// Likewise for compensations, by the step they undo.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        compensating: Vec<String>,
    },
}

/// Which way a recovered saga goes on, as its
/// [`Recovered`](Entry::Recovered) record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resumes {
    /// Forward, from the first step not completed.
    Forward,
    /// A step gave up before the crash, and what follows was not recorded
    /// yet: once any sibling that may have acted unseen has answered, the
    /// saga rolls back, or is stuck (past the pivot, or if the step's
    /// outcome is unknown).
    GaveUp,
    /// The rollback the log had decided goes on.
    RollingBack,
}

/// A retry policy a run set for one of its steps or compensations, in
/// place of the one the saga declares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryOverride {
    /// The step's name (also for its compensation's policy: step names are
    /// part of the definition's fingerprint, compensations' are not).
    pub step: String,
    /// The step's policy, or its compensation's.
    pub phase: Phase,
    /// The policy.
    pub policy: RetryPolicy,
}

impl Entry {
    /// The state a saga is in after this entry, if it changes it.
    pub fn state_after(&self) -> Option<SagaState> {
        match self {
            Entry::Completed => Some(SagaState::Completed),
            Entry::Compensated => Some(SagaState::Compensated),
            Entry::Stuck { .. } => Some(SagaState::Stuck),
            Entry::Created { .. } | Entry::Resumed => Some(SagaState::Running),
            // `Recovered` among them: written only for a saga that is
            // running, and it stays so (a store keeps its owner and state
            // as they are).
            _ => None,
        }
    }

    /// A short name of the event, as in the JSON `event` tag.
    pub fn name(&self) -> &'static str {
        match self {
            Entry::Created { .. } => "created",
            Entry::StepStarted { .. } => "step_started",
            Entry::StepSucceeded { .. } => "step_succeeded",
            Entry::StepFailed { .. } => "step_failed",
            Entry::RollbackStarted { .. } => "rollback_started",
            Entry::CompensationStarted { .. } => "compensation_started",
            Entry::CompensationSucceeded { .. } => "compensation_succeeded",
            Entry::CompensationFailed { .. } => "compensation_failed",
            Entry::Completed => "completed",
            Entry::Compensated => "compensated",
            Entry::Stuck { .. } => "stuck",
            Entry::Resumed => "resumed",
            Entry::MarkedCompensated { .. } => "marked_compensated",
            Entry::Recovered { .. } => "recovered",
        }
    }
}

/// Where a saga stands, as far as its log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Not finished: recovery resumes it.
    Running,
    /// Every step succeeded.
    Completed,
    /// Rolled back.
    Compensated,
    /// Waiting for an operator.
    Stuck,
}

impl SagaState {
    /// The lower-case name, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Completed => "completed",
            SagaState::Compensated => "compensated",
            SagaState::Stuck => "stuck",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output.
    pub fn parse(s: &str) -> Option<SagaState> {
        Some(match s {
            "running" => SagaState::Running,
            "completed" => SagaState::Completed,
            "compensated" => SagaState::Compensated,
            "stuck" => SagaState::Stuck,
            _ => return None,
        })
    }

    /// Whether the saga will never change again without an operator.
    pub fn is_finished(&self) -> bool {
        matches!(self, SagaState::Completed | SagaState::Compensated)
    }
}

/// A saga's definition as recorded in its log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefinitionSnapshot {
    /// The steps, in order.
    pub steps: Vec<StepSnapshot>,
}

/// One step of a [`DefinitionSnapshot`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepSnapshot {
    /// The step's name.
    pub name: String,
    /// `compensatable`, `readonly`, `pivot` or `forward`.
    pub kind: String,
    /// Its compensation, if any.
    pub compensation: Option<String>,
    /// Indices of the steps it depends on.
    pub deps: Vec<usize>,
    /// The output type as written.
    pub output_type: String,
}

impl DefinitionSnapshot {
    /// Renders the saga as a Mermaid flowchart; see
    /// [`Definition::to_mermaid_with`].
    ///
    /// ```
    /// use saga_runtime::log::{DefinitionSnapshot, StepSnapshot};
    /// let def = DefinitionSnapshot {
    ///     steps: vec![StepSnapshot {
    ///         name: "hold".into(),
    ///         kind: "pivot".into(),
    ///         compensation: None,
    ///         deps: vec![],
    ///         output_type: "HoldId".into(),
    ///     }],
    /// };
    /// let graph = def.to_mermaid_with(|_| Some("completed"));
    /// assert!(graph.contains("s0{{\"hold (pivot)\"}}"));
    /// assert!(graph.contains("class s0 completed"));
    /// ```
    pub fn to_mermaid_with(&self, class_of: impl Fn(usize) -> Option<&'static str>) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("flowchart TD\n    input([input])\n");
        for (i, s) in self.steps.iter().enumerate() {
            let label = match &s.compensation {
                Some(c) => format!("{}<br/><small>undo: {}</small>", s.name, c),
                None => s.name.clone(),
            };
            let _ = match s.kind.as_str() {
                "pivot" => writeln!(out, "    s{i}{{{{\"{label} (pivot)\"}}}}"),
                "readonly" => writeln!(out, "    s{i}(\"{label} (readonly)\")"),
                _ => writeln!(out, "    s{i}[\"{label}\"]"),
            };
        }
        for (i, s) in self.steps.iter().enumerate() {
            if s.deps.is_empty() {
                let _ = writeln!(out, "    input --> s{i}");
            }
            for d in &s.deps {
                let _ = writeln!(out, "    s{d} --> s{i}");
            }
        }
        // Names as comments keep the graph readable as text too.
        for (i, s) in self.steps.iter().enumerate() {
            for d in &s.deps {
                if let Some(dep) = self.steps.get(*d) {
                    let _ = writeln!(out, "    %% {} --> {}", dep.name, s.name);
                }
            }
            if let Some(class) = class_of(i) {
                let _ = writeln!(out, "    class s{i} {class}");
            }
        }
        out.push_str(
            "    classDef completed fill:#c8e6c9,stroke:#2e7d32\n    \
             classDef failed fill:#ffcdd2,stroke:#c62828\n    \
             classDef unknown fill:#ffe0b2,stroke:#e65100,stroke-dasharray:4\n    \
             classDef undo_failed fill:#ffcdd2,stroke:#b71c1c,stroke-width:3px,stroke-dasharray:6 3\n    \
             classDef compensated fill:#fff9c4,stroke:#f9a825\n    \
             classDef running fill:#bbdefb,stroke:#1565c0\n    \
             classDef pending fill:#eeeeee,stroke:#9e9e9e\n",
        );
        out
    }

    /// The snapshot of `def`.
    pub fn of(def: &Definition) -> DefinitionSnapshot {
        DefinitionSnapshot {
            steps: def
                .steps()
                .iter()
                .map(|s| StepSnapshot {
                    name: s.name().to_string(),
                    kind: match s.kind() {
                        StepKind::Compensatable => "compensatable",
                        StepKind::Readonly => "readonly",
                        StepKind::Pivot => "pivot",
                        StepKind::Forward => "forward",
                    }
                    .to_string(),
                    compensation: s.compensation().map(str::to_string),
                    deps: s.dependencies().to_vec(),
                    output_type: s.output_type().to_string(),
                })
                .collect(),
        }
    }
}

/// A [`Cause`] as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CauseSnapshot {
    /// A step failed for good.
    StepFailed {
        /// What failed.
        failure: FailureSnapshot,
    },
    /// The saga was cancelled.
    Cancelled,
    /// The deadline passed.
    DeadlineExceeded,
}

impl CauseSnapshot {
    /// The snapshot of `cause`.
    pub fn of(cause: &Cause) -> CauseSnapshot {
        match cause {
            Cause::StepFailed(f) => CauseSnapshot::StepFailed {
                failure: FailureSnapshot::of(f),
            },
            Cause::Cancelled => CauseSnapshot::Cancelled,
            Cause::DeadlineExceeded => CauseSnapshot::DeadlineExceeded,
        }
    }
}

/// A [`Failure`] as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureSnapshot {
    /// The step.
    pub step: String,
    /// The compensation, for a compensation's failure.
    pub compensation: Option<String>,
    /// Step or compensation.
    pub phase: Phase,
    /// The last error.
    pub error: String,
    /// Whether it was retryable.
    pub retryable: bool,
    /// Attempts made.
    pub attempts: u32,
}

impl FailureSnapshot {
    /// The snapshot of `failure`.
    pub fn of(failure: &Failure) -> FailureSnapshot {
        FailureSnapshot {
            step: failure.step.to_string(),
            compensation: failure.compensation.map(str::to_string),
            phase: failure.phase,
            error: failure.error.clone(),
            retryable: failure.retryable,
            attempts: failure.attempts,
        }
    }

    /// Back to a [`Failure`], naming steps of `def`; `None` if `def` has no
    /// such step.
    pub fn restore(&self, def: &Definition) -> Option<Failure> {
        let step = def.steps().get(def.step_index(&self.step)?)?;
        Some(Failure {
            step: step.name(),
            compensation: match &self.compensation {
                Some(_) => step.compensation(),
                None => None,
            },
            phase: self.phase,
            error: self.error.clone(),
            retryable: self.retryable,
            attempts: self.attempts,
        })
    }
}

impl CauseSnapshot {
    /// Back to a [`Cause`]; `None` if it names a step `def` lacks.
    pub fn restore(&self, def: &Definition) -> Option<Cause> {
        Some(match self {
            CauseSnapshot::StepFailed { failure } => Cause::StepFailed(failure.restore(def)?),
            CauseSnapshot::Cancelled => Cause::Cancelled,
            CauseSnapshot::DeadlineExceeded => Cause::DeadlineExceeded,
        })
    }
}
