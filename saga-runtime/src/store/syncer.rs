//! Makes the SQLite writer's commits durable off the writer's path.
//!
//! With `synchronous=FULL`, every commit waits for an fsync of the log
//! (SQLite's write-ahead file) before the writer can start the next
//! transaction: on a 2-core machine, a quarter of the writer's time went to
//! those waits while appends queued up behind it. Instead, the writer
//! commits with `synchronous=NORMAL` (SQLite then syncs only at
//! checkpoints, and stays consistent after a power loss, but may lose the
//! last commits) and hands whatever must be answered to the syncer. The
//! syncer takes everything handed to it so far, flushes the log file once
//! (`fdatasync`), and only then answers: an append is acknowledged after a
//! flush that began after its commit, so what is acknowledged is on disk,
//! as before. Meanwhile the writer is already writing the next transaction.
//!
//! The log is written in order, so one flush covers every commit before it.
//! A failed flush may have dropped pages the kernel could not write, which a
//! later flush would not report: the syncer refuses every answer after one
//! failure (reopen the store).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use super::{Counters, StoreError};

/// What to do once the commits before it are durable (or cannot be made
/// so): answer the appends or the prune of one transaction.
pub(super) type Waiting = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The syncer's thread and the way to it. Dropping it answers everything
/// handed over and ends the thread.
pub(super) struct Syncer {
    tx: Option<mpsc::Sender<Waiting>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the syncer of the database at `db` (its log is `db` + `-wal`).
    pub(super) fn start(db: &Path, stats: Arc<Counters>) -> Result<Syncer, StoreError> {
        let (tx, rx) = mpsc::channel();
        let mut log = LogFile::of(db);
        let thread = std::thread::Builder::new()
            .name("saga-sqlite-sync".into())
            .spawn(move || run(&mut log, &rx, &stats))
            .map_err(|e| StoreError::Backend(format!("cannot start the sync thread: {e}")))?;
        Ok(Syncer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Calls `waiting` once every transaction committed so far is durable.
    pub(super) fn after_commit(&self, waiting: Waiting) {
        let sent = match &self.tx {
            Some(tx) => tx.send(waiting).map_err(|e| e.0),
            None => Err(waiting),
        };
        if let Err(waiting) = sent {
            waiting(Err(StoreError::Closed));
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(log: &mut LogFile, rx: &mpsc::Receiver<Waiting>, stats: &Counters) {
    let mut broken: Option<StoreError> = None;
    while let Ok(first) = rx.recv() {
        // Everything handed over until now was committed before this flush
        // begins; what comes later waits for the next.
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let synced = match &broken {
            Some(e) => Err(e.clone()),
            None => log.flush(),
        };
        if let Err(e) = &synced {
            broken.get_or_insert_with(|| e.clone());
        } else {
            stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        for answer in waiting {
            answer(synced.clone());
        }
    }
}

/// SQLite's write-ahead file, opened at the first flush (SQLite makes it
/// when the database is first used in WAL mode).
struct LogFile {
    path: PathBuf,
    file: Option<File>,
}

impl LogFile {
    fn of(db: &Path) -> LogFile {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        LogFile {
            path: PathBuf::from(path),
            file: None,
        }
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let failed = |what: &str, e: std::io::Error| {
            StoreError::Backend(format!("{what} {}: {e}", self.path.display()))
        };
        if self.file.is_none() {
            let file = File::options()
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(|e| failed("cannot open the log", e))?;
            // The file's name must survive a power loss too: SQLite syncs
            // the directory at its first sync of a new log, which
            // `synchronous=NORMAL` defers to the first checkpoint.
            let dir = match self.path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| failed("cannot sync the directory of", e))?;
            self.file = Some(file);
        }
        let file = self.file.as_ref().expect("opened above");
        file.sync_data().map_err(|e| failed("cannot sync", e))
    }
}
