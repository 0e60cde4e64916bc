//! The SQLite store on its own: group commit, schema versions, conflicts,
//! damaged records, pruning.

mod support;

use std::path::PathBuf;

use saga_runtime::SagaId;
use saga_runtime::log::{Entry, Record, Resumes, SagaState};
use saga_runtime::store::{ListFilter, SqliteStore, Store, StoreError};
use support::{created, started};

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("saga-test-{}", SagaId::new()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("sagas.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_transactions() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.file()).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..256 {
        let store = store.clone();
        tasks.spawn(async move {
            let id = SagaId::new();
            store.append(vec![created(id)]).await?;
            for seq in 1..4 {
                let entry = Entry::StepStarted {
                    step: "hold".into(),
                    attempt: seq as u32,
                };
                store.append(vec![Record::new(id, seq, entry)]).await?;
            }
            store
                .append(vec![Record::new(id, 4, Entry::Completed)])
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.records, 256 * 5);
    assert!(
        stats.transactions < stats.records / 2,
        "group commit should put several records in each transaction: {stats:?}"
    );
    assert!(
        (1..=stats.transactions).contains(&stats.syncs),
        "every answer waits for a flush, and one flush covers every transaction before it: {stats:?}"
    );
    let done = store
        .list(ListFilter::in_state(SagaState::Completed))
        .await
        .unwrap();
    assert_eq!(done.len(), 256);
    assert_eq!(done[0].fingerprint, u64::MAX - 1);
}

/// SQLite keeps its log next to the file a symbolic link leads to; the
/// store flushes that one, so appends through a link are answered.
#[tokio::test]
async fn a_store_opened_through_a_symbolic_link_flushes_the_log_sqlite_writes() {
    let dir = TempDir::new();
    let link = dir.0.join("link.db");
    std::os::unix::fs::symlink(dir.file(), &link).unwrap();
    let store = SqliteStore::open(&link).unwrap();
    let id = SagaId::new();
    store.append(vec![created(id)]).await.unwrap();
    assert!(store.load(id).await.unwrap().is_some());
    assert!(dir.0.join("sagas.db-wal").exists());
    assert_eq!(store.stats().syncs, 1);
}

#[tokio::test]
async fn records_survive_reopening_and_unfinished_lists_running_sagas() {
    let dir = TempDir::new();
    let (running, finished) = (SagaId::new(), SagaId::new());
    {
        let store = SqliteStore::open(dir.file()).unwrap();
        store.append(vec![created(running)]).await.unwrap();
        store
            .append(vec![
                created(finished),
                Record::new(finished, 1, Entry::Compensated),
            ])
            .await
            .unwrap();
    }
    let store = SqliteStore::open(dir.file()).unwrap();
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].summary.id, running);
    assert_eq!(unfinished[0].records.len(), 1);
    let loaded = store.load(finished).await.unwrap().unwrap();
    assert_eq!(loaded.summary.state, SagaState::Compensated);
    assert_eq!(loaded.records[1].decode().unwrap(), Entry::Compensated);
    assert!(store.load(SagaId::new()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_recovered_record_leaves_the_saga_running_across_reopening() {
    let dir = TempDir::new();
    let id = SagaId::new();
    let note = Entry::Recovered {
        resumes: Resumes::Forward,
        step: Some("hold".into()),
        running: vec!["hold".into()],
        compensating: vec![],
    };
    {
        let store = SqliteStore::open(dir.file()).unwrap();
        store
            .append(vec![created(id), started(id, 1)])
            .await
            .unwrap();
        store
            .append(vec![Record::new(id, 2, note.clone())])
            .await
            .unwrap();
    }
    let store = SqliteStore::open(dir.file()).unwrap();
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].summary.state, SagaState::Running);
    assert_eq!(unfinished[0].records[2].decode().unwrap(), note);
    store
        .append(vec![Record::new(id, 3, Entry::Completed)])
        .await
        .unwrap();
    let loaded = store.load(id).await.unwrap().unwrap();
    assert_eq!(loaded.summary.state, SagaState::Completed);
}

#[tokio::test]
async fn a_second_writer_of_the_same_record_is_refused() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.file()).unwrap();
    let id = SagaId::new();
    store.append(vec![created(id)]).await.unwrap();
    let again = Record::new(id, 1, Entry::Completed);
    store.append(vec![again.clone()]).await.unwrap();
    match store.append(vec![again]).await {
        Err(StoreError::Conflict { saga, seq: 1 }) => assert_eq!(saga, id),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The conflicting append failed alone: the store still works.
    let other = SagaId::new();
    store.append(vec![created(other)]).await.unwrap();
    assert!(store.load(other).await.unwrap().is_some());
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_the_file_left_alone() {
    let dir = TempDir::new();
    drop(SqliteStore::open(dir.file()).unwrap());
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    conn.execute("UPDATE saga_schema SET version = 99", [])
        .unwrap();
    drop(conn);
    match SqliteStore::open(dir.file()) {
        Err(e @ StoreError::SchemaTooNew { found: 99, .. }) => {
            assert!(
                e.to_string().contains("newer than this build supports"),
                "{e}"
            );
        }
        Err(other) => panic!("expected SchemaTooNew, got {other:?}"),
        Ok(_) => panic!("expected SchemaTooNew, got a store"),
    }
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    let version: i64 = conn
        .query_row("SELECT version FROM saga_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99);
}

#[tokio::test]
async fn an_empty_file_is_migrated_to_the_current_schema() {
    let dir = TempDir::new();
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    conn.execute_batch("CREATE TABLE unrelated (x INTEGER);")
        .unwrap();
    drop(conn);
    let store = SqliteStore::open(dir.file()).unwrap();
    let id = SagaId::new();
    store.append(vec![created(id)]).await.unwrap();
    assert_eq!(store.unfinished().await.unwrap().len(), 1);
}

#[tokio::test]
async fn unfinished_sagas_are_read_a_page_at_a_time_in_id_order() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.file()).unwrap();
    let mut running = Vec::new();
    for i in 0..7 {
        let id = SagaId::new();
        store.append(vec![created(id)]).await.unwrap();
        let started = Entry::StepStarted {
            step: "hold".into(),
            attempt: 1,
        };
        store
            .append(vec![Record::new(id, 1, started)])
            .await
            .unwrap();
        if i % 3 == 1 {
            store
                .append(vec![Record::new(id, 2, Entry::Completed)])
                .await
                .unwrap();
        } else {
            running.push(id);
        }
    }
    running.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.unfinished_page(after, 2).await.unwrap();
        assert!(page.len() <= 2);
        for saga in &page {
            let seqs: Vec<u64> = saga.records.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, [0, 1], "saga {}", saga.summary.id);
            assert_eq!(saga.summary.state, SagaState::Running);
            seen.push(saga.summary.id);
        }
        match page.last() {
            Some(last) if page.len() == 2 => after = Some(last.summary.id),
            _ => break,
        }
    }
    assert_eq!(seen, running);
    let all: Vec<SagaId> = store
        .unfinished()
        .await
        .unwrap()
        .iter()
        .map(|s| s.summary.id)
        .collect();
    assert_eq!(all, running);
}

/// A file as version 1 of the schema wrote it: records clustered by saga.
const VERSION_1: &str = "
    CREATE TABLE saga_schema (version INTEGER NOT NULL);
    INSERT INTO saga_schema (version) VALUES (1);
    CREATE TABLE sagas (
        id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, fingerprint INTEGER NOT NULL,
        state TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sagas_by_state ON sagas (state, updated_ms);
    CREATE TABLE records (
        saga_id TEXT NOT NULL, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL,
        body TEXT NOT NULL, PRIMARY KEY (saga_id, seq)
    ) WITHOUT ROWID;";

#[tokio::test]
async fn a_version_1_file_is_migrated_with_every_record_kept() {
    let dir = TempDir::new();
    let id = SagaId::new();
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    conn.execute_batch(VERSION_1).unwrap();
    conn.execute(
        "INSERT INTO sagas VALUES (?1, 'Transfer', 7, 'running', 1000, 1001)",
        [id.to_string()],
    )
    .unwrap();
    let bodies = [
        serde_json::to_string(&created(id).entry).unwrap(),
        r#"{"event":"step_started","step":"hold","attempt":1}"#.to_string(),
    ];
    for (seq, body) in bodies.iter().enumerate() {
        conn.execute(
            "INSERT INTO records VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![id.to_string(), seq as i64, 1000 + seq as i64, body],
        )
        .unwrap();
    }
    drop(conn);

    let store = SqliteStore::open(dir.file()).unwrap();
    let saga = store.load(id).await.unwrap().expect("the saga survives");
    assert_eq!(saga.summary.state, SagaState::Running);
    let seqs: Vec<u64> = saga.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [0, 1]);
    assert_eq!(saga.records[1].body, bodies[1]);
    assert_eq!(saga.records[1].at_ms, 1001);
    // The migrated file takes appends and still refuses a duplicate record.
    let next = Entry::StepStarted {
        step: "hold".into(),
        attempt: 2,
    };
    store
        .append(vec![Record::new(id, 2, next.clone())])
        .await
        .unwrap();
    let again = store.append(vec![Record::new(id, 2, next)]).await;
    assert!(
        matches!(again, Err(StoreError::Conflict { seq: 2, .. })),
        "{again:?}"
    );
    drop(store);
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    let version: i64 = conn
        .query_row("SELECT version FROM saga_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

#[tokio::test]
async fn a_damaged_record_is_returned_undecoded_for_its_saga_alone() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.file()).unwrap();
    let (damaged, healthy) = (SagaId::new(), SagaId::new());
    store.append(vec![created(damaged)]).await.unwrap();
    store.append(vec![created(healthy)]).await.unwrap();
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    conn.execute(
        "UPDATE records SET body = '{\"event\": \"crea' WHERE saga_id = ?1",
        [damaged.as_uuid().as_bytes()],
    )
    .unwrap();
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 2);
    for saga in unfinished {
        let decoded = saga.records[0].decode();
        assert_eq!(decoded.is_err(), saga.summary.id == damaged);
    }
}

#[tokio::test]
async fn prune_removes_only_old_finished_sagas() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.file()).unwrap();
    let (done, running) = (SagaId::new(), SagaId::new());
    store
        .append(vec![created(done), Record::new(done, 1, Entry::Completed)])
        .await
        .unwrap();
    store.append(vec![created(running)]).await.unwrap();
    assert_eq!(
        store.prune(0).await.unwrap(),
        0,
        "nothing is older than the epoch"
    );
    assert_eq!(store.prune(u64::MAX / 2).await.unwrap(), 1);
    assert!(store.load(done).await.unwrap().is_none());
    assert!(store.load(running).await.unwrap().is_some());
}

#[tokio::test]
async fn a_truncated_file_is_refused_with_an_error_naming_it() {
    let dir = TempDir::new();
    {
        let store = SqliteStore::open(dir.file()).unwrap();
        for _ in 0..50 {
            store.append(vec![created(SagaId::new())]).await.unwrap();
        }
    }
    // Checkpointed into the main file on close; cut it in the middle.
    let len = std::fs::metadata(dir.file()).unwrap().len();
    assert!(len > 4096, "the file holds the records: {len} bytes");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.file())
        .unwrap();
    file.set_len(len / 2 + 100).unwrap();
    drop(file);
    let _ = std::fs::remove_file(dir.0.join("sagas.db-wal"));
    let _ = std::fs::remove_file(dir.0.join("sagas.db-shm"));
    let outcome = match SqliteStore::open(dir.file()) {
        Err(e) => Err(e),
        Ok(store) => store.unfinished().await.map(|sagas| sagas.len()),
    };
    match outcome {
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("malformed") || text.contains("not a database"),
                "{text}"
            );
            assert!(text.contains("sagas.db"), "{text}");
        }
        Ok(n) => panic!("a truncated file read back {n} sagas without complaint"),
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_with_an_error_naming_it() {
    let dir = TempDir::new();
    std::fs::write(dir.file(), b"these are not the records you are looking for").unwrap();
    match SqliteStore::open(dir.file()) {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(&dir.file().display().to_string()), "{text}");
            assert!(text.contains("not a database"), "{text}");
        }
        Ok(_) => panic!("opened a text file as a saga store"),
    }
}

/// Asserts that `opened` failed because another store of this process
/// holds the log at `path`, with an error that says so.
fn assert_in_use(opened: Result<SqliteStore, StoreError>, path: &std::path::Path) {
    match opened {
        Err(e @ StoreError::InUse { .. }) => {
            let StoreError::InUse { holder, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*holder, Some(std::process::id()), "{e}");
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("in use"), "{text}");
            assert!(text.contains("one runtime at a time"), "{text}");
            assert!(text.contains("PostgreSQL"), "{text}");
        }
        Err(e) => panic!("expected the log to be in use, got: {e}"),
        Ok(_) => panic!("a second store opened a log another store holds"),
    }
}

/// Two stores on one log would both recover its unfinished sagas and run
/// the same steps at once: while one holds the log, another `open` of it
/// fails, in this process as in another, and under any name of the file.
#[tokio::test]
async fn a_log_belongs_to_one_store_at_a_time() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.file()).unwrap();
    let id = SagaId::new();
    store.append(vec![created(id)]).await.unwrap();

    assert_in_use(SqliteStore::open(dir.file()), &dir.file());
    let link = dir.0.join("link.db");
    std::os::unix::fs::symlink(dir.file(), &link).unwrap();
    assert_in_use(SqliteStore::open(&link), &link);

    // The owner goes on as before, and the refused opens changed nothing.
    store
        .append(vec![Record::new(id, 1, Entry::Completed)])
        .await
        .unwrap();
    let stored = store.load(id).await.unwrap().unwrap();
    assert_eq!(stored.summary.state, SagaState::Completed);
    assert!(dir.0.join("sagas.db.lock").exists());
}

/// The lock lives as long as the store: every clone of it, the last one
/// dropped releasing it (once its writer has closed the file).
#[tokio::test]
async fn a_log_is_free_again_once_its_store_and_every_clone_are_dropped() {
    let dir = TempDir::new();
    let id = SagaId::new();
    let store = SqliteStore::open(dir.file()).unwrap();
    let clone = store.clone();
    store.append(vec![created(id)]).await.unwrap();
    drop(store);
    assert_in_use(SqliteStore::open(dir.file()), &dir.file());
    clone.append(vec![started(id, 1)]).await.unwrap();
    drop(clone);

    // The lock file stays; its lock is gone.
    assert!(dir.0.join("sagas.db.lock").exists());
    let store = SqliteStore::open(dir.file()).unwrap();
    let stored = store.load(id).await.unwrap().unwrap();
    assert_eq!(stored.records.len(), 2);
    assert_in_use(SqliteStore::open(dir.file()), &dir.file());
    drop(store);
    drop(SqliteStore::open(dir.file()).unwrap());
}

/// Inspection (`saga-inspect`, `transfer --inspect`) runs beside the
/// process that owns the log: it takes no lock, so it neither fails nor
/// keeps the owner out; it reads and prunes, but never appends.
#[tokio::test]
async fn open_existing_inspects_a_log_its_owner_holds_but_appends_nothing() {
    let dir = TempDir::new();
    let (done, running) = (SagaId::new(), SagaId::new());
    let owner = SqliteStore::open(dir.file()).unwrap();
    owner
        .append(vec![created(done), Record::new(done, 1, Entry::Completed)])
        .await
        .unwrap();
    owner.append(vec![created(running)]).await.unwrap();

    let inspector = SqliteStore::open_existing(dir.file()).unwrap();
    assert_eq!(inspector.unfinished().await.unwrap().len(), 1);
    assert!(inspector.load(done).await.unwrap().is_some());
    let refused = inspector
        .append(vec![started(running, 1)])
        .await
        .unwrap_err();
    let text = refused.to_string();
    assert!(text.contains("open_existing"), "{text}");
    assert!(text.contains("sagas.db"), "{text}");
    assert_eq!(inspector.prune(u64::MAX / 2).await.unwrap(), 1);

    // The owner sees the prune, and goes on writing.
    assert!(owner.load(done).await.unwrap().is_none());
    owner.append(vec![started(running, 1)]).await.unwrap();
    assert_eq!(
        inspector
            .load(running)
            .await
            .unwrap()
            .unwrap()
            .records
            .len(),
        2
    );

    // An inspector does not hold the log: the owner may come after it.
    drop(owner);
    let owner = SqliteStore::open(dir.file()).unwrap();
    assert!(SqliteStore::open_existing(dir.file()).is_ok());
    drop(inspector);
    assert_in_use(SqliteStore::open(dir.file()), &dir.file());
    drop(owner);
}

/// A log that cannot be opened says so naming its file once (SQLite's own
/// message ends with the path too).
#[test]
fn a_log_that_cannot_be_opened_names_its_file_once() {
    let dir = TempDir::new();
    let file = dir.0.join("no-such-dir").join("sagas.db");
    let error = match SqliteStore::open(&file) {
        Ok(_) => panic!("a log in a missing directory opened"),
        Err(e) => e.to_string(),
    };
    let shown = file.display().to_string();
    assert_eq!(error.matches(shown.as_str()).count(), 1, "{error}");
    assert!(error.contains("unable to open"), "{error}");
}

/// `open_existing` of a SQLite file that is not a saga log (a copy of
/// another application's database, in either journal mode) refuses it and
/// leaves its directory as it was: no `-wal`, no `-shm`, no lock file, and
/// the file's journal mode unchanged.
#[test]
fn open_existing_refuses_another_database_and_creates_nothing_beside_it() {
    let dir = TempDir::new();
    let listing = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    for (name, mode) in [("bank.db", "DELETE"), ("shop.db", "WAL")] {
        let other = dir.0.join(name);
        let conn = rusqlite::Connection::open(&other).unwrap();
        let set: String = conn
            .query_row(&format!("PRAGMA journal_mode = {mode}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(set.to_uppercase(), mode);
        conn.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, cents INTEGER)")
            .unwrap();
        drop(conn);
        let before = listing();
        let refused = match SqliteStore::open_existing(&other) {
            Ok(_) => panic!("{name}: another database opened as a saga log"),
            Err(e) => e.to_string(),
        };
        assert!(refused.contains("not a saga log"), "{refused}");
        assert!(refused.contains(name), "{refused}");
        assert_eq!(listing(), before, "{name}: open_existing left files behind");
    }
    // A saga log at an older schema, which older workers may still write,
    // is refused as untouched.
    let old = dir.0.join("old.db");
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE saga_schema (version INTEGER NOT NULL);
         INSERT INTO saga_schema (version) VALUES (1);",
    )
    .unwrap();
    drop(conn);
    let before = listing();
    let refused = SqliteStore::open_existing(&old).err().unwrap().to_string();
    assert!(refused.contains("schema version 1"), "{refused}");
    assert_eq!(listing(), before, "old.db: open_existing left files behind");
    // The rollback-journal file is still one (nothing turned it to WAL).
    let mode: String = rusqlite::Connection::open(dir.0.join("bank.db"))
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode.to_lowercase(), "delete");
}
