//! Where the saga log lives. One trait, [`Store`], with an in-memory
//! implementation ([`MemoryStore`], for tests of durable behaviour), an
//! embedded one ([`SqliteStore`]: one file, WAL, group commit), and, with
//! the `postgres` feature, a shared one (`PostgresStore`: many workers on
//! many machines, each saga owned under a lease with a fencing token).
//!
//! The runtime appends a record for every transition and waits until the
//! store says it is durable before acting on it (the write-ahead rule). On
//! restart, [`Runtime::recover`](crate::Runtime::recover) reads every
//! unfinished saga back.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
mod syncer;

use std::future::Future;
use std::pin::Pin;

pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use self::postgres::{PostgresBuilder, PostgresStore};
pub use self::sqlite::SqliteStore;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::SagaId;
use crate::log::{Entry, Record, SagaState};

/// How much group commit is saving: records written, the transactions that
/// wrote them, and the flushes to disk that made them durable.
///
/// ```
/// use saga_runtime::store::CommitStats;
/// let stats = CommitStats { transactions: 4, syncs: 2, records: 100 };
/// assert_eq!(stats.records_per_transaction(), 25.0);
/// assert_eq!(stats.records_per_sync(), 50.0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Committed write transactions.
    pub transactions: u64,
    /// Flushes of the log to disk (fsyncs) that appends waited for. In
    /// SQLite, one makes every transaction committed before it durable, and
    /// the writer goes on while it runs, so there may be fewer than
    /// transactions. PostgreSQL counts each committed transaction here, as
    /// its server flushes at commit (with `synchronous_commit` on, grouping
    /// commits as it sees fit).
    pub syncs: u64,
    /// Records written.
    pub records: u64,
}

/// The name [`CommitStats`] had when only SQLite had them.
pub type SqliteStats = CommitStats;

impl CommitStats {
    /// Records per transaction.
    pub fn records_per_transaction(&self) -> f64 {
        per(self.records, self.transactions)
    }

    /// Records per flush of the log to disk (per fsync).
    pub fn records_per_sync(&self) -> f64 {
        per(self.records, self.syncs)
    }
}

fn per(records: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        records as f64 / of as f64
    }
}

/// The counters behind [`CommitStats`], updated by a store's writer.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) records: AtomicU64,
}

impl Counters {
    pub(crate) fn read(&self) -> CommitStats {
        CommitStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
        }
    }
}

/// What a writer answers an append with, once its records are durable.
pub(crate) type Answer = tokio::sync::oneshot::Receiver<Result<(), StoreError>>;

/// The future [`Store::append`] returns for an append handed to a writer
/// (`None`: nothing to write). Handing it over happens before, in the call
/// itself, so that appends are ordered by call whether or not the caller
/// awaits the answer.
pub(crate) fn answered(
    sent: Result<Option<Answer>, StoreError>,
) -> BoxFuture<'static, Result<(), StoreError>> {
    Box::pin(async move {
        match sent? {
            Some(answer) => answer.await.map_err(|_| StoreError::Closed)?,
            None => Ok(()),
        }
    })
}

/// A boxed future, as the object-safe [`Store`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Durable storage of saga logs.
///
/// Implementations must make `append` all-or-nothing per call and durable
/// before its future resolves, order appends by call (records of one call
/// become durable no later than those of any later call, even if nobody
/// awaits the first), keep each saga's records in `seq` order, and track
/// each saga's [`SagaState`] from the entries appended
/// ([`Entry::state_after`]).
pub trait Store: Send + Sync + 'static {
    /// Appends `records` (of one saga, in order) durably.
    ///
    /// `Ok` means they are on disk. An error means the run must not act on
    /// them, not always that they are absent: the commit may have happened
    /// before what failed (the SQLite store's flush after it, a PostgreSQL
    /// connection lost before the answer). The runtime therefore halts the
    /// run where it is and leaves it to recovery, which reads the log as it
    /// is.
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The log of saga `id`, if the store has it.
    fn load(&self, id: SagaId) -> BoxFuture<'_, Result<Option<StoredSaga>, StoreError>>;

    /// The logs of up to `limit` sagas in state [`SagaState::Running`] whose
    /// ids are greater than `after` (all, if `None`), in id order; fewer
    /// than `limit` only when no more follow. Recovery reads a large log a
    /// page at a time with it, and resumes one page while the next is read.
    fn unfinished_page(
        &self,
        after: Option<SagaId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>>;

    /// The logs of every saga in state [`SagaState::Running`], in id order.
    fn unfinished(&self) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>> {
        Box::pin(async move {
            const PAGE: usize = 4096;
            let mut all: Vec<StoredSaga> = Vec::new();
            loop {
                let after = all.last().map(|s| s.summary.id);
                let page = self.unfinished_page(after, PAGE).await?;
                let last = page.len() < PAGE;
                all.extend(page);
                if last {
                    return Ok(all);
                }
            }
        })
    }

    /// Summaries of the sagas that match `filter`, newest first.
    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>>;

    /// Deletes completed and compensated sagas last updated before
    /// `before_ms` (milliseconds since the Unix epoch); returns how many.
    fn prune(&self, before_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Gives up this worker's hold on saga `id`, which it will not run (any
    /// more): recovery could not resume it (its saga is not registered
    /// here, or its log is damaged or from another definition) or did not
    /// get to it, or its run here stopped short of an end (a store error),
    /// so that a worker that can may take it. A store that renews leases
    /// stops renewing this one even if telling the server fails. Stores
    /// without owners have nothing to do.
    fn release(&self, id: SagaId) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = id;
        Box::pin(async { Ok(()) })
    }

    /// This process is about to run saga `id` (recovery read it with
    /// [`unfinished_page`](Self::unfinished_page), or an operator resumes
    /// it), and no other run of it is live here. A store that fences
    /// workers off keeps a saga it takes over out of reach of an earlier,
    /// fenced-off run of it in this process until then. Stores without
    /// owners have nothing to do.
    fn resuming(&self, id: SagaId) {
        let _ = id;
    }
}

/// A shared store is a store: one `Arc<dyn Store>` chosen at run time (a
/// file, or a server) serves a runtime as well as the store itself.
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).append(records)
    }

    fn load(&self, id: SagaId) -> BoxFuture<'_, Result<Option<StoredSaga>, StoreError>> {
        (**self).load(id)
    }

    fn unfinished_page(
        &self,
        after: Option<SagaId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>> {
        (**self).unfinished_page(after, limit)
    }

    fn unfinished(&self) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>> {
        (**self).unfinished()
    }

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        (**self).list(filter)
    }

    fn prune(&self, before_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        (**self).prune(before_ms)
    }

    fn release(&self, id: SagaId) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).release(id)
    }

    fn resuming(&self, id: SagaId) {
        (**self).resuming(id)
    }
}

/// What a store knows of one saga without reading its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaSummary {
    /// The saga run.
    pub id: SagaId,
    /// The saga's name.
    pub name: String,
    /// Its definition's fingerprint.
    pub fingerprint: u64,
    /// Where it stands.
    pub state: SagaState,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// When its state last changed (ms since the Unix epoch).
    pub updated_ms: u64,
}

/// One saga's log as stored: records are decoded by the reader, so a
/// damaged record fails only the saga it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSaga {
    /// The summary.
    pub summary: SagaSummary,
    /// The records, in `seq` order.
    pub records: Vec<StoredRecord>,
}

/// One record as stored: its JSON body not yet decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// Position in the saga's log.
    pub seq: u64,
    /// When it was written (ms since the Unix epoch).
    pub at_ms: u64,
    /// The entry, as JSON.
    pub body: String,
}

impl StoredRecord {
    /// Decodes the entry.
    ///
    /// ```
    /// use saga_runtime::store::StoredRecord;
    /// use saga_runtime::log::Entry;
    /// let ok = StoredRecord { seq: 3, at_ms: 0, body: r#"{"event":"completed"}"#.into() };
    /// assert_eq!(ok.decode().unwrap(), Entry::Completed);
    /// let bad = StoredRecord { seq: 4, at_ms: 0, body: "{garbage".into() };
    /// assert!(bad.decode().is_err());
    /// ```
    pub fn decode(&self) -> Result<Entry, serde_json::Error> {
        if let Some(why) = self.body.strip_prefix(UNREADABLE) {
            return Err(serde::de::Error::custom(why));
        }
        serde_json::from_str(&self.body)
    }

    /// A record a store found but could not read as text (its bytes are
    /// not UTF-8, say), kept so that [`decode`](Self::decode) fails with
    /// `why` and the damage fails only its saga's recovery.
    ///
    /// ```
    /// use saga_runtime::store::StoredRecord;
    /// let damaged = StoredRecord::unreadable(2, 0, "the record is not UTF-8 text");
    /// let error = damaged.decode().unwrap_err();
    /// assert!(error.to_string().contains("not UTF-8"));
    /// ```
    pub fn unreadable(seq: u64, at_ms: u64, why: &str) -> StoredRecord {
        StoredRecord {
            seq,
            at_ms,
            body: format!("{UNREADABLE}{why}"),
        }
    }

    /// A record whose body was read as bytes: as they are if they are
    /// UTF-8 text, [`unreadable`](Self::unreadable) otherwise.
    pub fn from_bytes(seq: u64, at_ms: u64, body: Vec<u8>) -> StoredRecord {
        match String::from_utf8(body) {
            Ok(body) => StoredRecord { seq, at_ms, body },
            Err(e) => {
                let text = String::from_utf8_lossy(e.as_bytes());
                let shown: String = text.chars().take(120).collect();
                let more = if shown.len() < text.len() { "..." } else { "" };
                let why = format!(
                    "the record is not UTF-8 text (damaged from byte {}): {shown}{more}",
                    e.utf8_error().valid_up_to(),
                );
                StoredRecord::unreadable(seq, at_ms, &why)
            }
        }
    }
}

/// Begins the body of an [`StoredRecord::unreadable`] record. No JSON text
/// begins with it (JSON begins with a value or white space), so no record
/// that was written can be taken for one.
const UNREADABLE: &str = "\u{fffd}";

/// Which sagas [`Store::list`] returns.
///
/// ```
/// use saga_runtime::store::ListFilter;
/// use saga_runtime::log::SagaState;
/// let filter = ListFilter { state: Some(SagaState::Stuck), ..ListFilter::default() };
/// assert_eq!(filter.limit, None);
/// assert_eq!(filter, ListFilter::in_state(SagaState::Stuck));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only sagas in this state.
    pub state: Option<SagaState>,
    /// Only sagas of this name.
    pub name: Option<String>,
    /// Only sagas created at or after this time (ms since the Unix epoch).
    pub created_after_ms: Option<u64>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl ListFilter {
    /// Every saga in `state`, the filter most callers want.
    pub fn in_state(state: SagaState) -> ListFilter {
        ListFilter {
            state: Some(state),
            ..ListFilter::default()
        }
    }

    pub(crate) fn matches(&self, s: &SagaSummary) -> bool {
        self.state.is_none_or(|state| s.state == state)
            && self.name.as_ref().is_none_or(|n| *n == s.name)
            && self.created_after_ms.is_none_or(|t| s.created_ms >= t)
    }
}

/// An error of a store.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("saga store: {0}")]
    Backend(String),
    /// A record could not be encoded.
    #[error("saga store: cannot encode a record of saga {saga}: {message}")]
    Encode {
        /// The saga.
        saga: SagaId,
        /// What went wrong.
        message: String,
    },
    /// The file was written by a newer version of saga.
    #[error(
        "saga store {path}: schema version {found} is newer than this build supports ({supported}); upgrade saga or use another file"
    )]
    SchemaTooNew {
        /// The file.
        path: String,
        /// Its schema version.
        found: i64,
        /// The newest this build reads.
        supported: i64,
    },
    /// A record's position conflicts with one already stored: two writers
    /// are appending to the same saga.
    #[error("saga store: saga {saga} already has a record {seq}; is another process running it?")]
    Conflict {
        /// The saga.
        saga: SagaId,
        /// The position.
        seq: u64,
    },
    /// This worker no longer holds the lease of the saga (another worker
    /// took it over after the lease expired, or the saga is finished): the
    /// record was not written, and the run stops; the saga's owner carries
    /// it on.
    #[error(
        "saga store: this worker does not hold the lease of saga {saga} (another worker took it over, or it is finished); nothing was written"
    )]
    LeaseLost {
        /// The saga.
        saga: SagaId,
    },
    /// The store was closed.
    #[error("saga store is closed")]
    Closed,
    /// The SQLite log is another store's: a log belongs to one runtime at a
    /// time (it has no leases to share sagas by), and that one's store is
    /// still open, in another process or in this one.
    #[error(
        "saga store: the saga log {path} is in use by {}: a SQLite log belongs to one runtime at a time; use the PostgreSQL store to share sagas between processes",
        held_by(*.holder)
    )]
    InUse {
        /// The log.
        path: String,
        /// The process holding it, if known.
        holder: Option<u32>,
    },
}

/// Who holds a log, for [`StoreError::InUse`].
fn held_by(holder: Option<u32>) -> String {
    match holder {
        Some(pid) if pid == std::process::id() => {
            "another store in this process, opened earlier and not yet dropped with all its clones"
                .into()
        }
        Some(pid) => format!("another process (pid {pid})"),
        None => "another process".into(),
    }
}

/// The state a saga's summary should move to after `records`, if any.
/// An append made ready for a store's writer, in the appending task: its
/// records' entries as JSON, and what it changes in the saga's summary.
pub(crate) struct Encoded {
    /// The saga.
    pub(crate) id: SagaId,
    /// Per record: its position, its time and its entry as JSON.
    pub(crate) records: Vec<(i64, i64, String)>,
    /// The saga's name and fingerprint, if the append creates it.
    pub(crate) created: Option<(String, i64)>,
    /// The saga's state after the append, and when it changed, if it did.
    pub(crate) state: Option<(SagaState, i64)>,
}

impl Encoded {
    /// `None` for an empty append.
    pub(crate) fn of(records: &[Record]) -> Result<Option<Encoded>, StoreError> {
        let Some(first) = records.first() else {
            return Ok(None);
        };
        let id = first.saga_id;
        let mut encoded = Vec::with_capacity(records.len());
        for r in records {
            let body = serde_json::to_string(&r.entry).map_err(|e| StoreError::Encode {
                saga: id,
                message: e.to_string(),
            })?;
            encoded.push((r.seq as i64, r.at_ms as i64, body));
        }
        Ok(Some(Encoded {
            id,
            records: encoded,
            created: created(first).map(|(name, fp)| (name.to_string(), fp as i64)),
            state: final_state(records).map(|s| (s, records.last().map_or(0, |r| r.at_ms) as i64)),
        }))
    }
}

pub(crate) fn final_state(records: &[Record]) -> Option<SagaState> {
    records.iter().rev().find_map(|r| r.entry.state_after())
}

/// The name and fingerprint from a `Created` entry.
pub(crate) fn created(record: &Record) -> Option<(&str, u64)> {
    match &record.entry {
        Entry::Created {
            saga, fingerprint, ..
        } => Some((saga, *fingerprint)),
        _ => None,
    }
}
