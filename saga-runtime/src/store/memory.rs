//! A store in memory: for tests of durable behaviour (crash points,
//! recovery) without files.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    BoxFuture, ListFilter, SagaSummary, Store, StoreError, StoredRecord, StoredSaga, created,
    final_state,
};
use crate::SagaId;
use crate::log::{Record, SagaState};

/// A [`Store`] in memory. Clones share the same contents, so a test can
/// drop a runtime (a "crash"), keep the store, and recover from it.
///
/// ```
/// use saga_runtime::store::{MemoryStore, Store};
/// use saga_runtime::log::{Entry, Record, DefinitionSnapshot};
/// use saga_runtime::SagaId;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryStore::new();
/// let id = SagaId::new();
/// let created = Entry::Created {
///     saga: "Transfer".into(),
///     fingerprint: 7,
///     input: serde_json::json!({"amount": 5}),
///     definition: DefinitionSnapshot { steps: vec![] },
///     deadline_ms: None,
///     retry: Vec::new(),
/// };
/// store.append(vec![Record::new(id, 0, created)]).await.unwrap();
/// assert_eq!(store.unfinished().await.unwrap().len(), 1);
/// store.append(vec![Record::new(id, 1, Entry::Completed)]).await.unwrap();
/// assert!(store.unfinished().await.unwrap().is_empty());
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    sagas: Arc<Mutex<HashMap<SagaId, StoredSaga>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SagaId, StoredSaga>> {
        self.sagas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the body of record `seq` of saga `id` (for tests of damaged
    /// logs). Returns whether the record existed.
    pub fn overwrite_record(&self, id: SagaId, seq: u64, body: &str) -> bool {
        let mut sagas = self.lock();
        let Some(saga) = sagas.get_mut(&id) else {
            return false;
        };
        match saga.records.iter_mut().find(|r| r.seq == seq) {
            Some(record) => {
                record.body = body.to_string();
                true
            }
            None => false,
        }
    }

    /// The number of records stored, over all sagas.
    pub fn record_count(&self) -> usize {
        self.lock().values().map(|s| s.records.len()).sum()
    }

    fn append_now(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let id = first.saga_id;
        let mut encoded = Vec::with_capacity(records.len());
        for record in &records {
            let body = serde_json::to_string(&record.entry).map_err(|e| StoreError::Encode {
                saga: id,
                message: e.to_string(),
            })?;
            encoded.push(StoredRecord {
                seq: record.seq,
                at_ms: record.at_ms,
                body,
            });
        }
        let mut sagas = self.lock();
        let saga = match sagas.entry(id) {
            std::collections::hash_map::Entry::Occupied(saga) => saga.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let Some((name, fingerprint)) = created(first) else {
                    return Err(StoreError::Backend(format!(
                        "saga {id}: the first record must be `created`"
                    )));
                };
                slot.insert(StoredSaga {
                    summary: SagaSummary {
                        id,
                        name: name.to_string(),
                        fingerprint,
                        state: SagaState::Running,
                        created_ms: first.at_ms,
                        updated_ms: first.at_ms,
                    },
                    records: Vec::new(),
                })
            }
        };
        let next = saga.records.last().map_or(0, |r| r.seq + 1);
        if first.seq < next {
            return Err(StoreError::Conflict {
                saga: id,
                seq: first.seq,
            });
        }
        if let Some(state) = final_state(&records) {
            saga.summary.state = state;
            saga.summary.updated_ms = records.last().map_or(0, |r| r.at_ms);
        }
        saga.records.extend(encoded);
        Ok(())
    }
}

impl Store for MemoryStore {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = self.append_now(records);
        Box::pin(async move { result })
    }

    fn load(&self, id: SagaId) -> BoxFuture<'_, Result<Option<StoredSaga>, StoreError>> {
        let saga = self.lock().get(&id).cloned();
        Box::pin(async move { Ok(saga) })
    }

    fn unfinished_page(
        &self,
        after: Option<SagaId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>> {
        let mut sagas: Vec<StoredSaga> = self
            .lock()
            .values()
            .filter(|s| s.summary.state == SagaState::Running)
            .filter(|s| after.is_none_or(|after| s.summary.id > after))
            .cloned()
            .collect();
        sagas.sort_unstable_by_key(|s| s.summary.id);
        sagas.truncate(limit);
        Box::pin(async move { Ok(sagas) })
    }

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        let mut list: Vec<SagaSummary> = self
            .lock()
            .values()
            .map(|s| s.summary.clone())
            .filter(|s| filter.matches(s))
            .collect();
        list.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        if let Some(limit) = filter.limit {
            list.truncate(limit);
        }
        Box::pin(async move { Ok(list) })
    }

    fn prune(&self, before_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut sagas = self.lock();
        let before = sagas.len();
        sagas.retain(|_, s| !(s.summary.state.is_finished() && s.summary.updated_ms < before_ms));
        let removed = (before - sagas.len()) as u64;
        Box::pin(async move { Ok(removed) })
    }
}
