//! What a step sees of the run it belongs to: the saga id, its own name, the
//! attempt number and the idempotency key.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The identity of one saga run. It is stable across retries and recovery.
///
/// ```
/// use saga_runtime::SagaId;
/// let id = SagaId::new();
/// let parsed: SagaId = id.to_string().parse().unwrap();
/// assert_eq!(id, parsed);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SagaId(Uuid);

impl SagaId {
    /// A fresh id: a UUIDv7, so ids grow with time (the log's index then
    /// takes new sagas at its end, instead of everywhere) and still carry
    /// 74 random bits. Ids made in the same millisecond are in random order:
    /// `Uuid::now_v7` would order them, but through a global mutex that every
    /// new saga on every thread would take.
    pub fn new() -> SagaId {
        SagaId(Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext)))
    }

    /// A random id (UUIDv4), which costs no clock read. The runtime gives
    /// these to sagas run without a store; with one, ids come from
    /// [`new`](Self::new).
    ///
    /// ```
    /// # use saga_runtime::SagaId;
    /// assert_eq!(SagaId::random().as_uuid().get_version_num(), 4);
    /// assert_eq!(SagaId::new().as_uuid().get_version_num(), 7);
    /// ```
    pub fn random() -> SagaId {
        SagaId(Uuid::new_v4())
    }

    /// An id from 128 bits, for ids derived from something else (a request
    /// number, say) so that a repeated request finds the same saga.
    ///
    /// ```
    /// # use saga_runtime::SagaId;
    /// assert_eq!(SagaId::from_u128(1).to_string(), "00000000-0000-0000-0000-000000000001");
    /// ```
    pub const fn from_u128(bits: u128) -> SagaId {
        SagaId(Uuid::from_u128(bits))
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// 64 bits of the id, used to seed jitter (the low half: random bits
    /// in a UUIDv7, and the varying part of ids made by `from_u128`).
    pub(crate) fn entropy(&self) -> u64 {
        self.0.as_u64_pair().1
    }
}

impl Default for SagaId {
    fn default() -> Self {
        SagaId::new()
    }
}

impl From<Uuid> for SagaId {
    fn from(id: Uuid) -> Self {
        SagaId(id)
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for SagaId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(SagaId)
    }
}

/// Whether a piece of work moves the saga forward or undoes a step.
///
/// ```
/// use saga_runtime::{Phase, SagaId, StepContext};
/// let cx = StepContext::new(SagaId::new(), "Transfer", "hold", Phase::Compensation, 1);
/// assert_eq!(cx.phase(), Phase::Compensation);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A step.
    Forward,
    /// A step's compensation.
    Compensation,
}

/// A key that names one step (or one compensation) of one saga run.
///
/// It is the same on every attempt and after recovery, so a service that
/// records the key with its effect can recognise a repeat and answer it
/// without acting twice. Steps and compensations must be idempotent under it.
///
/// ```
/// use saga_runtime::{IdempotencyKey, Phase, SagaId};
/// let id = SagaId::new();
/// let key = IdempotencyKey::new(id, "hold", Phase::Forward);
/// assert_eq!(key.to_string(), format!("{id}/hold"));
/// assert_eq!(IdempotencyKey::new(id, "hold", Phase::Compensation).to_string(), format!("{id}/hold/undo"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    saga: SagaId,
    step: &'static str,
    phase: Phase,
}

impl IdempotencyKey {
    /// The key of `step` of saga `saga`, going forward or compensating.
    pub const fn new(saga: SagaId, step: &'static str, phase: Phase) -> IdempotencyKey {
        IdempotencyKey { saga, step, phase }
    }

    /// The saga run.
    pub fn saga_id(&self) -> SagaId {
        self.saga
    }

    /// The step.
    pub fn step(&self) -> &'static str {
        self.step
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.phase {
            Phase::Forward => write!(f, "{}/{}", self.saga, self.step),
            Phase::Compensation => write!(f, "{}/{}/undo", self.saga, self.step),
        }
    }
}

/// Passed to a step (or compensation) that declares a `cx: &StepContext`
/// parameter.
///
/// ```
/// use saga_runtime::{Phase, SagaId, StepContext};
/// let cx = StepContext::new(SagaId::new(), "Transfer", "hold", Phase::Forward, 2);
/// assert_eq!(cx.attempt(), 2);
/// assert_eq!(cx.idempotency_key().step(), "hold");
/// ```
#[derive(Clone, Debug)]
pub struct StepContext {
    saga_id: SagaId,
    saga: &'static str,
    step: &'static str,
    phase: Phase,
    attempt: u32,
}

impl StepContext {
    /// A context; the runtime makes these, tests of a single step may too.
    pub fn new(
        saga_id: SagaId,
        saga: &'static str,
        step: &'static str,
        phase: Phase,
        attempt: u32,
    ) -> StepContext {
        StepContext {
            saga_id,
            saga,
            step,
            phase,
            attempt,
        }
    }

    /// The saga run.
    pub fn saga_id(&self) -> SagaId {
        self.saga_id
    }

    /// The saga's name.
    pub fn saga_name(&self) -> &'static str {
        self.saga
    }

    /// The step's name (for a compensation, the name of the step it undoes).
    pub fn step(&self) -> &'static str {
        self.step
    }

    /// Forward or compensating.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Which attempt this is, counting from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The key that is the same for every attempt of this step of this saga,
    /// including after a crash and recovery.
    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey::new(self.saga_id, self.step, self.phase)
    }
}
