//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that commits in groups: every
//! append waiting when a transaction starts goes into it. The writer does
//! not wait for the disk: a second thread flushes the log and answers each
//! caller once its records are durable, one fsync covering every
//! transaction committed before it (see [`super::syncer`]). Reads use their
//! own connections and never block the writer (WAL).
//!
//! A log belongs to one store at a time: [`SqliteStore::open`] holds an
//! exclusive lock on `<file>.lock` for as long as the store lives (see
//! [`SqliteStore`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::syncer::{Durability, Syncer};
use super::{
    Answer, BoxFuture, CommitStats, Counters, Encoded, ListFilter, SagaSummary, Store, StoreError,
    StoredRecord, StoredSaga, answered,
};
use crate::SagaId;
use crate::log::{Record, SagaState};

/// The schema version this build writes. Older files are migrated on open;
/// newer ones are refused.
const SCHEMA_VERSION: i64 = 2;

/// Statements that bring a file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE sagas (
         id          TEXT PRIMARY KEY NOT NULL,
         name        TEXT NOT NULL,
         fingerprint INTEGER NOT NULL,
         state       TEXT NOT NULL,
         created_ms  INTEGER NOT NULL,
         updated_ms  INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX sagas_by_state ON sagas (state, updated_ms);
     CREATE TABLE records (
         saga_id TEXT NOT NULL,
         seq     INTEGER NOT NULL,
         at_ms   INTEGER NOT NULL,
         body    TEXT NOT NULL,
         PRIMARY KEY (saga_id, seq)
     ) WITHOUT ROWID;",
    // 1 -> 2: saga ids as their 16 bytes instead of 36 characters, which
    // makes every key and index entry less than half as long; records in
    // the order they were written (a rowid table) found by saga through an
    // index, so appends fill the table's last pages instead of dirtying a
    // page per saga wherever its older records lie (what finishing many old
    // sagas at once, recovery, does); and a partial index of the unfinished
    // sagas, so recovery finds them without reading every finished one.
    "CREATE TABLE sagas_v2 (
         id          BLOB PRIMARY KEY NOT NULL,
         name        TEXT NOT NULL,
         fingerprint INTEGER NOT NULL,
         state       TEXT NOT NULL,
         created_ms  INTEGER NOT NULL,
         updated_ms  INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO sagas_v2 (id, name, fingerprint, state, created_ms, updated_ms)
         SELECT unhex(replace(id, '-', '')), name, fingerprint, state, created_ms, updated_ms
         FROM sagas;
     DROP TABLE sagas;
     ALTER TABLE sagas_v2 RENAME TO sagas;
     CREATE INDEX sagas_by_state ON sagas (state, updated_ms);
     CREATE INDEX sagas_running ON sagas (id) WHERE state = 'running';
     CREATE TABLE records_v2 (
         saga_id BLOB NOT NULL,
         seq     INTEGER NOT NULL,
         at_ms   INTEGER NOT NULL,
         body    TEXT NOT NULL
     );
     INSERT INTO records_v2 (saga_id, seq, at_ms, body)
         SELECT unhex(replace(saga_id, '-', '')), seq, at_ms, body FROM records;
     DROP TABLE records;
     ALTER TABLE records_v2 RENAME TO records;
     CREATE UNIQUE INDEX records_by_saga ON records (saga_id, seq);",
];

/// The most appends one transaction takes; the rest wait for the next.
const MAX_BATCH: usize = 4096;

/// A [`Store`] in one SQLite file.
///
/// # One process at a time
///
/// A log belongs to one runtime at a time. The SQLite store has no
/// ownership of sagas (unlike the PostgreSQL store's leases): a runtime
/// takes every unfinished saga in its log as its own, so a second runtime
/// on the same file would recover, and run again, the sagas the first one
/// is running, both executing the same step at once. So
/// [`open`](SqliteStore::open) takes an exclusive lock on a file next to the
/// log, `<file>.lock` (made if missing, and left in place), and holds it
/// until the store and all its clones are dropped; another `open` of the
/// same log, in another process or in this one, fails with
/// [`StoreError::InUse`] meanwhile. The lock is the operating system's
/// (`flock` on Unix): it is released when the process ends, however it
/// ends, so a log is never left locked by a process that crashed or was
/// killed. To share sagas between processes, use the PostgreSQL store.
///
/// [`open_existing`](SqliteStore::open_existing) opens a log for
/// inspection beside the runtime that owns it: it takes no lock, reads,
/// and prunes, but refuses appends.
///
/// ```
/// use saga_runtime::store::{SqliteStore, Store};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga_runtime::store::StoreError> {
/// let dir = std::env::temp_dir().join(format!("saga-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let store = SqliteStore::open(dir.join("sagas.db"))?;
/// assert!(store.unfinished().await?.is_empty());
/// // The log is this store's until it is dropped.
/// assert!(matches!(
///     SqliteStore::open(dir.join("sagas.db")),
///     Err(saga_runtime::store::StoreError::InUse { .. })
/// ));
/// drop(store);
/// assert!(SqliteStore::open(dir.join("sagas.db")).is_ok());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    stats: Arc<Counters>,
    durability: Arc<Durability>,
    /// The lock on `<file>.lock` that makes this store the log's owner
    /// (`None`: opened for inspection). Released in `drop`, once every
    /// connection to the log is closed.
    owner: Option<File>,
}

/// One append, encoded by the appending task, and whom to answer.
struct Append {
    encoded: Encoded,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

enum Request {
    Append(Append),
    Prune(i64, oneshot::Sender<Result<u64, StoreError>>),
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens the saga log at `path` only if it is one already, at this
    /// version's schema: what a tool that reads logs wants (it must not
    /// turn another file into a log, nor upgrade a log older workers still
    /// write). It never creates a log, nor changes one's schema.
    ///
    /// It opens the log for inspection beside the runtime that owns it, if
    /// one is running: it takes no lock (see [`SqliteStore`]), so it never
    /// waits for nor excludes that runtime. It reads, and prunes finished
    /// sagas (a transaction like any other, which the owner never writes
    /// to again), but refuses appends: sagas are run by the log's owner.
    ///
    /// ```
    /// use saga_runtime::store::SqliteStore;
    /// let dir = std::env::temp_dir().join(format!("saga-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let other = dir.join("other.db");
    /// rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
    /// let refused = SqliteStore::open_existing(&other).err().unwrap();
    /// assert!(refused.to_string().contains("not a saga log"), "{refused}");
    /// drop(SqliteStore::open(dir.join("sagas.db")).unwrap()); // creates one
    /// assert!(SqliteStore::open_existing(dir.join("sagas.db")).is_ok());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn open_existing(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let refuse =
            |message: String| StoreError::Backend(format!("{}: {message}", path.display()));
        let conn = check_connection(path).map_err(|e| refuse(e.to_string()))?;
        let has_schema: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'saga_schema')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| refuse(e.to_string()))?;
        if !has_schema {
            return Err(refuse(
                "not a saga log (it has no `saga_schema` table)".into(),
            ));
        }
        let found: Option<i64> = conn
            .query_row("SELECT version FROM saga_schema", [], |r| r.get(0))
            .optional()
            .map_err(|e| refuse(e.to_string()))?;
        match found {
            Some(SCHEMA_VERSION) => {}
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    path: path.display().to_string(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            found => {
                return Err(refuse(format!(
                    "a saga log at schema version {}, older than this version's {SCHEMA_VERSION}: \
                     upgrade it by opening it with the runtime (`SqliteStore::open`), once \
                     every worker writing it runs this version",
                    found.unwrap_or(0)
                )));
            }
        }
        drop(conn);
        SqliteStore::open_as(path, Role::Inspector).map_err(|e| match e {
            // SQLite readers of a WAL log share its index, `<file>-shm`,
            // which they must be able to create and write.
            StoreError::Backend(message) if cannot_write_beside(path) => {
                StoreError::Backend(format!(
                    "{message} (inspecting a SQLite log needs write access to its directory, \
                     for SQLite's WAL index `<file>-shm`)"
                ))
            }
            other => other,
        })
    }

    /// Opens (or creates) the store at `path`, migrating an older schema and
    /// refusing a newer one.
    ///
    /// The log is then this store's until it and all its clones are
    /// dropped: opening it again meanwhile, here or in another process,
    /// fails with [`StoreError::InUse`] (see [`SqliteStore`]).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_as(path.as_ref(), Role::Owner)
    }

    fn open_as(path: &Path, role: Role) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        let in_file = |e: StoreError| match e {
            StoreError::Backend(message) => {
                // SQLite names the file at the end of some messages
                // ("unable to open database file: <path>"): once is enough.
                let shown = path.display().to_string();
                let message = message
                    .strip_suffix(shown.as_str())
                    .and_then(|m| m.strip_suffix(": "))
                    .unwrap_or(&message);
                StoreError::Backend(format!("{shown}: {message}"))
            }
            other => other,
        };
        let mut conn = Connection::open(&path).map_err(|e| in_file(backend(e)))?;
        // The file SQLite opened, which is where a symbolic link leads: its
        // log is next to it, and so is the lock (so the file is locked
        // under whatever name it is opened). An in-memory database has none.
        let db = match conn.path() {
            Some(db) if !db.is_empty() => db.to_string(),
            _ => return Err(in_file(StoreError::Backend("not a file".into()))),
        };
        // Before anything is written (or read: a log another store owns is
        // not this one's to migrate).
        let owner = match role {
            Role::Owner => Some(own(Path::new(&format!("{db}.lock")), &path)?),
            Role::Inspector => None,
        };
        configure(&conn).map_err(in_file)?;
        if owner.is_some() {
            migrate(&mut conn, &path).map_err(in_file)?;
        }
        // Commits do not wait for the disk; the syncer's flush does, before
        // anyone is answered.
        conn.execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(|e| in_file(backend(e)))?;
        let log = PathBuf::from(format!("{db}-wal"));
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Counters::default());
        let durability = Arc::new(Durability::default());
        let syncer = Syncer::start(&log, Arc::clone(&durability), Arc::clone(&stats))?;
        let (thread_stats, thread_durability) = (Arc::clone(&stats), Arc::clone(&durability));
        let thread = std::thread::Builder::new()
            .name("saga-sqlite-writer".into())
            .spawn(move || writer(conn, rx, &thread_stats, &thread_durability, syncer))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                path,
                writer: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
                stats,
                durability,
                owner,
            }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Records and transactions written since the store was opened.
    pub fn stats(&self) -> CommitStats {
        self.shared.stats.read()
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        let writer = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        match writer.as_ref() {
            Some(tx) => tx.send(request).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Encodes `records` and hands them to the writer; the receiver answers
    /// once they are durable.
    fn enqueue(&self, records: Vec<Record>) -> Result<Option<Answer>, StoreError> {
        let Some(encoded) = Encoded::of(&records)? else {
            return Ok(None);
        };
        if self.shared.owner.is_none() {
            return Err(StoreError::Backend(format!(
                "{}: opened for inspection (`SqliteStore::open_existing`), which does not \
                 run sagas: the log belongs to the runtime that opens it with \
                 `SqliteStore::open`",
                self.shared.path.display()
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Append(Append { encoded, reply }))?;
        Ok(Some(answer))
    }

    /// Runs `f` with a read connection on a blocking thread.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || {
                let pooled = shared
                    .readers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop();
                let conn = match pooled {
                    Some(conn) => conn,
                    None => open_connection(&shared.path)?,
                };
                let result = f(&conn)
                    .map_err(|e| StoreError::Backend(format!("{}: {e}", shared.path.display())));
                shared
                    .readers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
                // What was read may have been committed but not yet flushed:
                // it is returned once it is on disk.
                let read = result?;
                shared.durability.wait_flushed()?;
                Ok(read)
            });
            task.await
                .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered every
        // append already sent; joining releases the file before we return.
        drop(self.writer.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
        // The log is released last, once no connection of this store is
        // left to write it.
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        drop(self.owner.take());
    }
}

/// What a store is to its log.
enum Role {
    /// It runs sagas from the log, which is its alone while it lives.
    Owner,
    /// It reads the log (and prunes it) beside its owner.
    Inspector,
}

/// A read-only connection to `path` for [`SqliteStore::open_existing`]'s
/// check that it is a saga log, which creates no file beside it.
///
/// A read-only connection to a WAL-mode database creates its `-wal` and
/// `-shm` files when they are missing, and leaves them behind: done to
/// another application's database, that is litter beside it. When neither
/// exists, no connection has the file open (an open WAL database has
/// both) and all its content is in the file itself, so it is read as
/// immutable: SQLite then opens nothing beside it. When they exist, they
/// are used as they are.
fn check_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let beside = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name).exists()
    };
    match path.to_str() {
        Some(text) if !beside("-wal") && !beside("-shm") => {
            // A URI's path: `%`, `?` and `#` would be read as its syntax.
            let mut uri = String::from("file:");
            for c in text.chars() {
                match c {
                    '%' => uri.push_str("%25"),
                    '?' => uri.push_str("%3f"),
                    '#' => uri.push_str("%23"),
                    c => uri.push(c),
                }
            }
            uri.push_str("?immutable=1");
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
        }
        _ => Connection::open_with_flags(path, flags),
    }
}

/// Whether the directory of `path` looks not writable to this process, so
/// that SQLite cannot make a WAL log's `-shm` there (only a hint for an
/// error message).
fn cannot_write_beside(path: &Path) -> bool {
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    if Path::new(&shm).exists() {
        return false;
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::metadata(dir).is_ok_and(|m| m.permissions().readonly())
}

/// Takes the lock `lock` that makes a store the owner of the log at `log`:
/// an exclusive lock on the whole file (`flock` on Unix), which the
/// operating system releases when the file is closed or the process ends,
/// however it ends. The file holds the owner's process id, for the error
/// others get.
fn own(lock: &Path, log: &Path) -> Result<File, StoreError> {
    let cannot = |what: &str, e: std::io::Error| {
        StoreError::Backend(format!(
            "{}: cannot {what} its lock file {}: {e}",
            log.display(),
            lock.display()
        ))
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock)
        .map_err(|e| cannot("open", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let holder = match file.read_to_string(&mut holder) {
                Ok(_) => holder.trim().parse().ok(),
                Err(_) => None,
            };
            return Err(StoreError::InUse {
                path: log.display().to_string(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(cannot("lock", e)),
    }
    // Only a hint for the error message: a failure to write it is no
    // reason to refuse the log.
    let _ = file
        .set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.flush());
    Ok(file)
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    configure(&conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;",
    )
    .map_err(backend)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS saga_schema (version INTEGER NOT NULL);")
        .map_err(backend)?;
    let found: Option<i64> = conn
        .query_row("SELECT version FROM saga_schema", [], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.display().to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction().map_err(backend)?;
    for step in &MIGRATIONS[found as usize..] {
        tx.execute_batch(step).map_err(backend)?;
    }
    tx.execute("DELETE FROM saga_schema", []).map_err(backend)?;
    tx.execute(
        "INSERT INTO saga_schema (version) VALUES (?1)",
        [SCHEMA_VERSION],
    )
    .map_err(backend)?;
    tx.commit().map_err(backend)
}

/// The writer thread: takes every request waiting, writes them in one
/// transaction, then hands the answers to the syncer, which gives them once
/// the transaction is durable.
fn writer(
    mut conn: Connection,
    rx: mpsc::Receiver<Request>,
    stats: &Counters,
    durability: &Durability,
    syncer: Syncer,
) {
    while let Ok(first) = rx.recv() {
        let mut appends = Vec::new();
        let mut prunes = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Append(a) => appends.push(a),
                Request::Prune(before, reply) => prunes.push((before, reply)),
            }
            if appends.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        // After a failed flush nothing more is written (see `syncer`).
        if let Some(e) = durability.broken() {
            for append in appends {
                let _ = append.reply.send(Err(e.clone()));
            }
            for (_, reply) in prunes {
                let _ = reply.send(Err(e.clone()));
            }
            continue;
        }
        if !appends.is_empty() {
            write_appends(&mut conn, appends, stats, durability, &syncer);
        }
        for (before, reply) in prunes {
            match prune(&mut conn, before) {
                Ok(removed) => {
                    stats.transactions.fetch_add(1, Ordering::Relaxed);
                    durability.committed();
                    syncer.after_commit(Box::new(move |synced| {
                        let _ = reply.send(synced.map(|()| removed));
                    }));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
    // Every answer is given before the connection closes (and SQLite, the
    // last to close, checkpoints and removes the log).
    drop(syncer);
    drop(conn);
}

fn write_appends(
    conn: &mut Connection,
    appends: Vec<Append>,
    stats: &Counters,
    durability: &Durability,
    syncer: &Syncer,
) {
    // The fast path writes every append in one transaction. An append that
    // fails (a conflicting record) aborts it; the batch is then written
    // again without the failed ones, so one bad append fails alone.
    let mut failed: Vec<Option<StoreError>> = appends.iter().map(|_| None).collect();
    let outcome = loop {
        match write_batch(conn, &appends, &failed) {
            Ok(written) => break Ok(written),
            Err(BatchError::Append(i, e)) => failed[i] = Some(conflict_or_backend(&appends[i], e)),
            Err(BatchError::Transaction(e)) => break Err(backend(e)),
        }
    };
    match outcome {
        Ok(written) => {
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            stats.records.fetch_add(written, Ordering::Relaxed);
            durability.committed();
            let answers: Vec<_> = appends
                .into_iter()
                .zip(failed)
                .map(|(append, failure)| (append.reply, failure))
                .collect();
            syncer.after_commit(Box::new(move |synced| {
                for (reply, failure) in answers {
                    let _ = reply.send(failure.map_or_else(|| synced.clone(), Err));
                }
            }));
        }
        Err(error) => {
            for append in appends {
                let _ = append.reply.send(Err(error.clone()));
            }
        }
    }
}

enum BatchError {
    /// Append `i` failed; the transaction was rolled back.
    Append(usize, rusqlite::Error),
    /// The transaction itself failed.
    Transaction(rusqlite::Error),
}

/// Writes every append not marked failed in one transaction.
fn write_batch(
    conn: &mut Connection,
    appends: &[Append],
    failed: &[Option<StoreError>],
) -> Result<u64, BatchError> {
    let tx = conn.transaction().map_err(BatchError::Transaction)?;
    let mut written = 0;
    {
        let prepare = |sql| tx.prepare_cached(sql).map_err(BatchError::Transaction);
        let mut insert =
            prepare("INSERT INTO records (saga_id, seq, at_ms, body) VALUES (?1, ?2, ?3, ?4)")?;
        let mut create = prepare(
            "INSERT INTO sagas (id, name, fingerprint, state, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, 'running', ?4, ?4)",
        )?;
        let mut update = prepare("UPDATE sagas SET state = ?2, updated_ms = ?3 WHERE id = ?1")?;
        for (i, append) in appends.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            let e = &append.encoded;
            let Some(&(_, first_at, _)) = e.records.first() else {
                continue;
            };
            let saga_id = key(e.id);
            let one = (|| -> Result<(), rusqlite::Error> {
                if let Some((name, fingerprint)) = &e.created {
                    create.execute(params![saga_id, name, fingerprint, first_at])?;
                }
                for (seq, at_ms, body) in &e.records {
                    insert.execute(params![saga_id, seq, at_ms, body])?;
                }
                if let Some((state, at)) = e.state {
                    update.execute(params![saga_id, state.as_str(), at])?;
                }
                Ok(())
            })();
            if let Err(e) = one {
                // Dropping the transaction rolls it back.
                return Err(BatchError::Append(i, e));
            }
            written += append.encoded.records.len() as u64;
        }
    }
    tx.commit().map_err(BatchError::Transaction)?;
    Ok(written)
}

fn conflict_or_backend(append: &Append, e: rusqlite::Error) -> StoreError {
    let constraint = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation
    );
    match (constraint, append.encoded.records.first()) {
        (true, Some(&(seq, _, _))) => StoreError::Conflict {
            saga: append.encoded.id,
            seq: seq as u64,
        },
        _ => backend(e),
    }
}

fn prune(conn: &mut Connection, before: i64) -> Result<u64, StoreError> {
    let tx = conn.transaction().map_err(backend)?;
    tx.execute(
        "DELETE FROM records WHERE saga_id IN (
             SELECT id FROM sagas WHERE state IN ('completed', 'compensated') AND updated_ms < ?1)",
        [before],
    )
    .map_err(backend)?;
    let removed = tx
        .execute(
            "DELETE FROM sagas WHERE state IN ('completed', 'compensated') AND updated_ms < ?1",
            [before],
        )
        .map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok(removed as u64)
}

fn summary(row: &rusqlite::Row<'_>) -> Result<SagaSummary, rusqlite::Error> {
    let id: [u8; 16] = row.get(0)?;
    let state: String = row.get(3)?;
    let bad = |what: &str, value: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("saga row has an invalid {what} `{value}`").into(),
        )
    };
    Ok(SagaSummary {
        id: SagaId::from(uuid::Uuid::from_bytes(id)),
        name: row.get(1)?,
        fingerprint: row.get::<_, i64>(2)? as u64,
        state: SagaState::parse(&state).ok_or_else(|| bad("state", &state))?,
        created_ms: row.get::<_, i64>(4)? as u64,
        updated_ms: row.get::<_, i64>(5)? as u64,
    })
}

/// How a saga id is stored: its 16 bytes (read them with `hex(id)` in
/// `sqlite3`).
fn key(id: SagaId) -> [u8; 16] {
    *id.as_uuid().as_bytes()
}

const SUMMARY_COLUMNS: &str = "id, name, fingerprint, state, created_ms, updated_ms";

fn records_of(conn: &Connection, id: [u8; 16]) -> Result<Vec<StoredRecord>, rusqlite::Error> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, at_ms, body FROM records WHERE saga_id = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([id], |r| {
        Ok(StoredRecord::from_bytes(
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            body_bytes(r, 2)?,
        ))
    })?;
    rows.collect()
}

/// A record's body as bytes: text that is not UTF-8 (a damaged file) is
/// then that record's damage, found when it is decoded, rather than an
/// error that fails every saga read with it.
fn body_bytes(row: &rusqlite::Row<'_>, i: usize) -> Result<Vec<u8>, rusqlite::Error> {
    match row.get_ref(i)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(bytes.to_vec()),
        other => Err(rusqlite::Error::InvalidColumnType(
            i,
            "body".into(),
            other.data_type(),
        )),
    }
}

impl Store for SqliteStore {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>> {
        answered(self.enqueue(records))
    }

    fn load(&self, id: SagaId) -> BoxFuture<'_, Result<Option<StoredSaga>, StoreError>> {
        self.read(move |conn| {
            let id = key(id);
            let summary = conn
                .query_row(
                    &format!("SELECT {SUMMARY_COLUMNS} FROM sagas WHERE id = ?1"),
                    [&id],
                    summary,
                )
                .optional()?;
            match summary {
                Some(summary) => Ok(Some(StoredSaga {
                    summary,
                    records: records_of(conn, id)?,
                })),
                None => Ok(None),
            }
        })
    }

    fn unfinished_page(
        &self,
        after: Option<SagaId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>> {
        self.read(move |conn| {
            // One read transaction, so the page and its records agree.
            let tx = conn.unchecked_transaction()?;
            // The partial index `sagas_running` serves the page in id
            // order, however many finished sagas the file holds. (Left to
            // itself, the planner picks `sagas_by_state` and sorts every
            // running saga for each page.)
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM sagas INDEXED BY sagas_running
                 WHERE state = 'running' AND id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            // The empty blob sorts before every id.
            let after: Vec<u8> = after.map_or_else(Vec::new, |id| key(id).to_vec());
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut sagas = stmt
                .query_map(params![after, limit], summary)?
                .map(|summary| {
                    Ok(StoredSaga {
                        summary: summary?,
                        records: Vec::new(),
                    })
                })
                .collect::<Result<Vec<_>, rusqlite::Error>>()?;
            let Some(last) = sagas.last().map(|s| key(s.summary.id)) else {
                return Ok(sagas);
            };
            // Their records in one statement, which costs far less than a
            // query per saga.
            let mut stmt = tx.prepare_cached(
                "SELECT r.saga_id, r.seq, r.at_ms, r.body
                 FROM sagas s INDEXED BY sagas_running
                 JOIN records r ON r.saga_id = s.id
                 WHERE s.state = 'running' AND s.id > ?1 AND s.id <= ?2",
            )?;
            let index: std::collections::HashMap<[u8; 16], usize> = sagas
                .iter()
                .enumerate()
                .map(|(i, s)| (key(s.summary.id), i))
                .collect();
            let mut rows = stmt.query(params![after, last])?;
            while let Some(row) = rows.next()? {
                let id: [u8; 16] = row.get(0)?;
                if let Some(&i) = index.get(&id) {
                    sagas[i].records.push(StoredRecord::from_bytes(
                        row.get::<_, i64>(1)? as u64,
                        row.get::<_, i64>(2)? as u64,
                        body_bytes(row, 3)?,
                    ));
                }
            }
            for saga in &mut sagas {
                saga.records.sort_unstable_by_key(|r| r.seq);
            }
            Ok(sagas)
        })
    }

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        self.read(move |conn| {
            let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM sagas WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(state) = filter.state {
                sql.push_str(" AND state = ?");
                args.push(state.as_str().to_string().into());
            }
            if let Some(name) = &filter.name {
                sql.push_str(" AND name = ?");
                args.push(name.clone().into());
            }
            if let Some(after) = filter.created_after_ms {
                sql.push_str(" AND created_ms >= ?");
                args.push((after as i64).into());
            }
            sql.push_str(" ORDER BY created_ms DESC, id");
            if let Some(limit) = filter.limit {
                // SQLite's limit is an i64: a larger one is no limit.
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                sql.push_str(&format!(" LIMIT {limit}"));
            }
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), summary)?;
            rows.collect()
        })
    }

    fn prune(&self, before_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.send(Request::Prune(before_ms as i64, reply))?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }
}
