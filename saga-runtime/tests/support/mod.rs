//! Records the store tests write, shared by `sqlite_store.rs` and
//! `postgres_store.rs`.

#![allow(dead_code)]

use saga_runtime::SagaId;
use saga_runtime::log::{DefinitionSnapshot, Entry, Record};

/// The `created` record of a saga `Transfer`, at position 0.
pub fn created(id: SagaId) -> Record {
    Record::new(
        id,
        0,
        Entry::Created {
            saga: "Transfer".into(),
            fingerprint: u64::MAX - 1,
            input: serde_json::json!({ "amount": 10 }),
            definition: DefinitionSnapshot { steps: vec![] },
            deadline_ms: None,
            retry: Vec::new(),
        },
    )
}

/// A `step_started` record at position `seq` (its attempt is `seq` too).
pub fn started(id: SagaId, seq: u64) -> Record {
    Record::new(
        id,
        seq,
        Entry::StepStarted {
            step: "hold".into(),
            attempt: seq as u32,
        },
    )
}
