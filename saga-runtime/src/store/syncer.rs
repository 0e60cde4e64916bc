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
//! later flush would not report: after one, the syncer refuses every answer
//! and the writer writes nothing more (reopen the store). What was committed
//! before is in the file, and may be read back after a restart: an append
//! that failed this way may have been written.
//!
//! Readers see a transaction once it is committed, before it is flushed.
//! So that nothing is acted on that a power loss could take back, a read
//! waits, once done, until every transaction committed before it ended is
//! on disk ([`Durability::wait_flushed`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;

use super::{Counters, StoreError};

/// What to do once the commits before it are durable (or cannot be made
/// so): answer the appends or the prune of one transaction.
pub(super) type Waiting = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// How far the log is on disk, shared by the writer, the syncer and readers.
pub(super) struct Durability {
    /// Transactions committed so far (counted by the writer after each).
    committed: AtomicU64,
    /// Transactions flushed so far, or the flush that failed.
    flushed: Mutex<Result<u64, StoreError>>,
    changed: Condvar,
}

impl Default for Durability {
    fn default() -> Durability {
        Durability {
            committed: AtomicU64::new(0),
            flushed: Mutex::new(Ok(0)),
            changed: Condvar::new(),
        }
    }
}

impl Durability {
    /// Counts a transaction the writer committed; call before handing its
    /// answers to the syncer.
    pub(super) fn committed(&self) {
        self.committed.fetch_add(1, Ordering::SeqCst);
    }

    /// The error of a failed flush, once one has failed: the writer then
    /// writes nothing more.
    pub(super) fn broken(&self) -> Option<StoreError> {
        self.lock().as_ref().err().cloned()
    }

    /// Waits until every transaction committed until now is on disk. A
    /// reader calls it after reading, so that what it read is durable.
    pub(super) fn wait_flushed(&self) -> Result<(), StoreError> {
        let target = self.committed.load(Ordering::SeqCst);
        let mut flushed = self.lock();
        loop {
            match &*flushed {
                Ok(n) if *n >= target => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.clone()),
            }
            flushed = self
                .changed
                .wait(flushed)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Result<u64, StoreError>> {
        self.flushed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, flushed: Result<u64, StoreError>) {
        let mut state = self.lock();
        if state.is_ok() {
            *state = flushed;
        }
        self.changed.notify_all();
    }
}

/// The syncer's thread and the way to it. Dropping it answers everything
/// handed over and ends the thread.
pub(super) struct Syncer {
    tx: Option<mpsc::Sender<Waiting>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the syncer of the log at `log` (SQLite's `-wal` file, which
    /// must exist: SQLite makes it when the database is first used in WAL
    /// mode).
    pub(super) fn start(
        log: &Path,
        durability: Arc<Durability>,
        stats: Arc<Counters>,
    ) -> Result<Syncer, StoreError> {
        let log = LogFile::open(log)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("saga-sqlite-sync".into())
            .spawn(move || run(&log, &rx, &durability, &stats))
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

fn run(log: &LogFile, rx: &mpsc::Receiver<Waiting>, durability: &Durability, stats: &Counters) {
    while let Ok(first) = rx.recv() {
        // Everything handed over until now was committed (and counted)
        // before this flush begins; what comes later waits for the next.
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let upto = durability.committed.load(Ordering::SeqCst);
        let synced = match durability.broken() {
            Some(e) => Err(e),
            None => log.flush(),
        };
        if synced.is_ok() {
            stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        durability.publish(synced.clone().map(|()| upto));
        for answer in waiting {
            answer(synced.clone());
        }
    }
    // The writer is gone (the store closed, or its thread panicked): no
    // reader may wait for a flush that will not come.
    durability.publish(Err(StoreError::Closed));
}

/// SQLite's write-ahead file, kept open: SQLite reuses the same file after
/// each checkpoint, and removes it only when its last connection closes.
struct LogFile {
    path: PathBuf,
    file: File,
}

impl LogFile {
    fn open(path: &Path) -> Result<LogFile, StoreError> {
        let failed = |what: &str, e: std::io::Error| {
            StoreError::Backend(format!("{what} {}: {e}", path.display()))
        };
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| failed("cannot open the log", e))?;
        // The file's name must survive a power loss too: SQLite syncs the
        // directory at its first sync of a new log, which
        // `synchronous=NORMAL` defers to the first checkpoint.
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed("cannot sync the directory of", e))?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::Backend(format!("cannot sync {}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system's temp dir.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("saga-syncer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// Hands the syncer one committed transaction; returns its answer.
    fn commit(syncer: &Syncer, durability: &Durability) -> Result<(), StoreError> {
        durability.committed();
        let (tx, rx) = mpsc::channel();
        syncer.after_commit(Box::new(move |synced| {
            tx.send(synced).expect("answer taken")
        }));
        rx.recv().expect("answered")
    }

    #[test]
    fn a_reader_waits_until_what_was_committed_before_is_flushed() {
        let dir = scratch("wait");
        let log = dir.join("sagas.db-wal");
        std::fs::write(&log, b"frames").unwrap();
        let durability = Arc::new(Durability::default());
        let stats = Arc::new(Counters::default());
        let syncer = Syncer::start(&log, Arc::clone(&durability), Arc::clone(&stats)).unwrap();
        durability.committed();
        let reader = {
            let durability = Arc::clone(&durability);
            std::thread::spawn(move || durability.wait_flushed())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!reader.is_finished(), "the reader went on before the flush");
        syncer.after_commit(Box::new(|synced| synced.expect("flushed")));
        reader.join().unwrap().expect("flushed");
        assert_eq!(stats.syncs.load(Ordering::Relaxed), 1);
        drop(syncer);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A pipe cannot be flushed (`fdatasync` refuses it): the answer fails,
    /// and so does every later one, and readers are not left waiting.
    #[test]
    fn after_a_failed_flush_every_answer_fails() {
        let dir = scratch("fail");
        let log = dir.join("sagas.db-wal");
        let made = std::process::Command::new("mkfifo").arg(&log).status();
        assert!(made.as_ref().is_ok_and(|s| s.success()), "mkfifo: {made:?}");
        let durability = Arc::new(Durability::default());
        let stats = Arc::new(Counters::default());
        let syncer = Syncer::start(&log, Arc::clone(&durability), Arc::clone(&stats)).unwrap();
        let error = commit(&syncer, &durability).unwrap_err();
        assert!(error.to_string().contains("sagas.db-wal"), "{error}");
        assert!(durability.broken().is_some());
        assert!(durability.wait_flushed().is_err());
        assert!(commit(&syncer, &durability).is_err());
        assert_eq!(stats.syncs.load(Ordering::Relaxed), 0);
        drop(syncer);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
