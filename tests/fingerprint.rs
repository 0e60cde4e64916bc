//! The definition fingerprint: what a saga log was written by. Recovery
//! refuses a log whose fingerprint the registered definition did not
//! write (DESIGN.md section 5).

use std::sync::Arc;

use saga::log::{DefinitionSnapshot, Entry, Record};
use saga::prelude::*;
use saga::store::{MemoryStore, Store};
use saga::{Error, RecoveryReport, SagaId};

/// The fingerprint the saga below had before the input type was part of
/// it, as saga wrote it into logs until 2026-12-05 (printed by that
/// version).
const BEFORE_INPUT_TYPES: u64 = 0x4c6b_5add_bde1_08e4;

/// The first version: the input is a number.
pub mod v1 {
    use super::*;
    /// A payment.
    pub struct Pay;
    #[saga(input = u32, name = "Pay")]
    impl Pay {
        #[step(compensate = unreserve)]
        async fn reserve(&self, input: &u32) -> Result<u32, StepError> {
            Ok(*input)
        }
        async fn unreserve(&self) -> Result<(), StepError> {
            Ok(())
        }
        #[step(pivot)]
        async fn confirm(&self, reserve: &u32) -> Result<u32, StepError> {
            Ok(*reserve + 1)
        }
    }
}

/// The next: the input is a string.
pub mod v2 {
    use super::*;
    /// A payment.
    pub struct Pay;
    /// The same steps; the input is now a string.
    #[saga(input = String, name = "Pay")]
    impl Pay {
        #[step(compensate = unreserve)]
        async fn reserve(&self, input: &str) -> Result<u32, StepError> {
            Ok(input.len() as u32)
        }
        async fn unreserve(&self) -> Result<(), StepError> {
            Ok(())
        }
        #[step(pivot)]
        async fn confirm(&self, reserve: &u32) -> Result<u32, StepError> {
            Ok(*reserve + 1)
        }
    }
}

/// A log of a `Pay` saga that crashed right after it was created, carrying
/// `fingerprint`, with input `7` (a `u32`, as `v1` takes).
async fn created_with(fingerprint: u64) -> (MemoryStore, SagaId) {
    let store = MemoryStore::new();
    let id = SagaId::new();
    let created = Entry::Created {
        saga: "Pay".into(),
        fingerprint,
        input: serde_json::json!(7),
        definition: DefinitionSnapshot::of(v1::Pay::definition()),
        retry: Vec::new(),
        deadline_ms: None,
    };
    store
        .append(vec![Record::new(id, 0, created)])
        .await
        .unwrap();
    (store, id)
}

async fn recover<S: Saga>(store: &MemoryStore, saga: S) -> RecoveryReport {
    let runtime = Runtime::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    runtime.register(Arc::new(saga));
    runtime.recover().await.unwrap()
}

#[tokio::test]
async fn a_change_of_input_type_is_a_change_of_definition() {
    assert_ne!(
        v1::Pay::definition().fingerprint(),
        v2::Pay::definition().fingerprint()
    );
    let (store, id) = created_with(v1::Pay::definition().fingerprint()).await;
    let before = store.record_count();
    let report = recover(&store, v2::Pay).await;
    match &report.failed[..] {
        [(failed, Error::DefinitionChanged { name: "Pay", .. })] => assert_eq!(*failed, id),
        other => panic!("expected a changed definition, got {other:?}"),
    }
    assert_eq!(store.record_count(), before);
}

#[tokio::test]
async fn a_log_written_before_input_types_were_fingerprinted_still_recovers() {
    assert!(v1::Pay::definition().wrote(BEFORE_INPUT_TYPES));
    let (store, _) = created_with(BEFORE_INPUT_TYPES).await;
    let report = recover(&store, v1::Pay).await;
    assert_eq!(
        (report.completed, report.failed.len()),
        (1, 0),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_log_from_another_definition_is_refused_whatever_its_age() {
    assert!(!v1::Pay::definition().wrote(BEFORE_INPUT_TYPES ^ 1));
    let (store, _) = created_with(BEFORE_INPUT_TYPES ^ 1).await;
    let report = recover(&store, v1::Pay).await;
    assert!(
        matches!(&report.failed[..], [(_, Error::DefinitionChanged { .. })]),
        "{report:?}"
    );
}
