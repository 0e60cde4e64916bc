//! The inspector against a real log file, and a real PostgreSQL log (the
//! server at `DATABASE_URL`, default `postgres://postgres@127.0.0.1/test`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use saga_runtime::SagaId;
use saga_runtime::log::{DefinitionSnapshot, Entry, Record, Resumes, StepSnapshot};
use saga_runtime::store::{PostgresStore, SqliteStore, Store};

struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory, removed when dropped.
    fn new() -> TempDir {
        let dir = TempDir(std::env::temp_dir().join(format!("saga-inspect-{}", SagaId::new())));
        std::fs::create_dir_all(&dir.0).unwrap();
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn inspect(db: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_saga-inspect"))
        .arg(db)
        .args(args)
        .output()
        .expect("run saga-inspect")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn definition() -> DefinitionSnapshot {
    let step = |name: &str, kind: &str, comp: Option<&str>, deps: Vec<usize>| StepSnapshot {
        name: name.into(),
        kind: kind.into(),
        compensation: comp.map(str::to_string),
        deps,
        output_type: "u64".into(),
    };
    DefinitionSnapshot {
        steps: vec![
            step("hold", "compensatable", Some("release"), vec![]),
            step("credit", "compensatable", Some("reverse"), vec![0]),
            step("capture", "pivot", None, vec![0]),
        ],
    }
}

/// A transfer's `created` record.
fn created(input: serde_json::Value) -> Entry {
    Entry::Created {
        saga: "Transfer".into(),
        fingerprint: 0xabc,
        input,
        definition: definition(),
        deadline_ms: None,
        retry: Vec::new(),
    }
}

/// Appends `entries` to saga `id`'s log, one record each, from `seq`.
async fn append(store: &dyn Store, id: SagaId, seq: u64, entries: Vec<Entry>) {
    for (i, entry) in entries.into_iter().enumerate() {
        store
            .append(vec![Record::new(id, seq + i as u64, entry)])
            .await
            .unwrap();
    }
}

/// One compensated transfer and one still running.
async fn write_log(store: &dyn Store) -> (SagaId, SagaId) {
    let (undone, running) = (SagaId::new(), SagaId::new());
    for id in [undone, running] {
        let input = serde_json::json!({ "from": 1, "to": 2, "amount": 500 });
        append(store, id, 0, vec![created(input)]).await;
    }
    let entries = vec![
        Entry::StepStarted {
            step: "hold".into(),
            attempt: 1,
        },
        Entry::StepSucceeded {
            step: "hold".into(),
            attempt: 1,
            output: serde_json::json!("hold-7"),
        },
        Entry::StepStarted {
            step: "credit".into(),
            attempt: 1,
        },
        Entry::StepFailed {
            step: "credit".into(),
            attempt: 1,
            error: "bank B unavailable".into(),
            retryable: true,
            will_retry: false,
            outcome_unknown: false,
        },
        Entry::RollbackStarted {
            cause: saga_runtime::log::CauseSnapshot::Cancelled,
        },
        Entry::CompensationStarted {
            step: "hold".into(),
            attempt: 1,
        },
        Entry::CompensationSucceeded {
            step: "hold".into(),
            attempt: 1,
        },
        Entry::Compensated,
    ];
    append(store, undone, 1, entries).await;
    let started = Entry::StepStarted {
        step: "hold".into(),
        attempt: 1,
    };
    append(store, running, 1, vec![started]).await;
    (undone, running)
}

#[tokio::test]
async fn lists_shows_and_speaks_json() {
    let dir = TempDir::new();
    let db = dir.0.join("sagas.db");
    let (undone, running) = write_log(&SqliteStore::open(&db).unwrap()).await;

    let list = inspect(&db, &["list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let out = text(&list.stdout);
    assert!(
        out.contains(&undone.to_string()) && out.contains(&running.to_string()),
        "{out}"
    );
    assert!(
        out.contains("compensated") && out.contains("running"),
        "{out}"
    );

    let stuck = text(&inspect(&db, &["list", "--state", "running"]).stdout);
    assert!(
        stuck.contains(&running.to_string()) && !stuck.contains(&undone.to_string()),
        "{stuck}"
    );

    let json = text(&inspect(&db, &["list", "--json", "--since", "1h"]).stdout);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["name"] == "Transfer"));

    let show = inspect(&db, &["show", &undone.to_string()]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let out = text(&show.stdout);
    for expected in [
        "`Transfer`: compensated",
        "step_failed",
        "bank B unavailable",
        "\"hold-7\"",
        "compensation_succeeded",
        "class s0 compensated",
        "class s1 failed",
        "class s2 pending",
        "```mermaid",
    ] {
        assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
    }

    let json = inspect(&db, &["show", &running.to_string(), "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(view["state"], "running");
    assert_eq!(view["steps"][0], serde_json::json!(["hold", "running"]));
    assert_eq!(view["fingerprint"], "0000000000000abc");
    assert_eq!(view["timeline"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn shows_a_recovery_after_a_crash() {
    let dir = TempDir::new();
    let db = dir.0.join("sagas.db");
    let store = SqliteStore::open(&db).unwrap();
    let id = SagaId::new();
    let entries = vec![
        created(serde_json::json!(500)),
        Entry::StepStarted {
            step: "hold".into(),
            attempt: 1,
        },
        Entry::StepSucceeded {
            step: "hold".into(),
            attempt: 1,
            output: serde_json::json!("hold-7"),
        },
        // The process died inside `credit` before its start was durable.
        Entry::Recovered {
            resumes: Resumes::Forward,
            step: Some("credit".into()),
            running: vec!["credit".into()],
            compensating: vec![],
        },
    ];
    append(&store, id, 0, entries).await;
    drop(store);

    let show = inspect(&db, &["show", &id.to_string()]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let out = text(&show.stdout);
    for expected in [
        "recovered after a crash; goes on at `credit`; may have been running: credit",
        "%% seq 3: recovered after a crash;",
        "class s1 running",
        "```mermaid",
    ] {
        assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
    }
    let json = inspect(&db, &["show", &id.to_string(), "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(view["timeline"][3]["event"], "recovered");
    assert_eq!(view["timeline"][3]["step"], "credit");
    assert_eq!(view["steps"][1], serde_json::json!(["credit", "running"]));
}

/// An operator undoing a step by hand gets its whole output from
/// `show --json`, as the JSON value the log holds; the table cuts it short
/// and says where the whole is. A step whose compensation gave up is drawn
/// as such, not as completed.
#[tokio::test]
async fn shows_whole_outputs_in_json_and_a_compensation_that_gave_up() {
    let dir = TempDir::new();
    let db = dir.0.join("sagas.db");
    let store = SqliteStore::open(&db).unwrap();
    let id = SagaId::new();
    let output = serde_json::json!({
        "reservation": format!("reservation-1-{}", "x".repeat(120)),
        "rooms": [101, 102],
    });
    let entries = vec![
        created(serde_json::json!(500)),
        Entry::StepStarted {
            step: "hold".into(),
            attempt: 1,
        },
        Entry::StepSucceeded {
            step: "hold".into(),
            attempt: 1,
            output: output.clone(),
        },
        Entry::StepStarted {
            step: "credit".into(),
            attempt: 1,
        },
        Entry::StepFailed {
            step: "credit".into(),
            attempt: 1,
            error: "bank B unavailable".into(),
            retryable: false,
            will_retry: false,
            outcome_unknown: false,
        },
        Entry::RollbackStarted {
            cause: saga_runtime::log::CauseSnapshot::Cancelled,
        },
        Entry::CompensationStarted {
            step: "hold".into(),
            attempt: 1,
        },
        Entry::CompensationFailed {
            step: "hold".into(),
            attempt: 1,
            error: "bank A unavailable".into(),
            retryable: true,
            will_retry: false,
        },
        Entry::Stuck {
            failure: saga_runtime::log::FailureSnapshot {
                step: "hold".into(),
                compensation: Some("release".into()),
                phase: saga_runtime::Phase::Compensation,
                error: "bank A unavailable".into(),
                retryable: true,
                attempts: 1,
            },
        },
    ];
    append(&store, id, 0, entries).await;
    drop(store);

    let json = inspect(&db, &["show", &id.to_string(), "--json"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let view: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(view["timeline"][2]["event"], "step_succeeded");
    assert_eq!(view["timeline"][2]["output"], output);
    assert_eq!(view["steps"][0], serde_json::json!(["hold", "undo_failed"]));

    let show = inspect(&db, &["show", &id.to_string()]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let out = text(&show.stdout);
    for expected in [
        "{\"reservation\":\"reservation-1-xxx",
        "xxx…\n",
        &format!("… values cut short: the JSON view (`saga-inspect <log> show {id} --json`)"),
        "class s0 undo_failed",
        "classDef undo_failed ",
    ] {
        assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
    }
    assert!(!out.contains(&"x".repeat(100)), "{out}");
}

#[test]
fn refuses_a_missing_file_and_an_unknown_saga_clearly() {
    let missing = inspect(Path::new("/nonexistent/sagas.db"), &["list"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("no such file"),
        "{}",
        text(&missing.stderr)
    );

    let bad_id = inspect(Path::new("/nonexistent/sagas.db"), &["show", "not-a-uuid"]);
    assert!(!bad_id.status.success());
    assert!(
        text(&bad_id.stderr).contains("invalid value 'not-a-uuid'"),
        "{}",
        text(&bad_id.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_postgresql_log_too() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".into());
    let schema = format!("saga_inspect_{}", SagaId::random().as_uuid().simple());
    let store = PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot use PostgreSQL at {url}: {e}"));
    let (undone, running) = write_log(&store).await;
    let listed = inspect(&url, &["--schema", &schema, "list", "--json"]);
    let shown = inspect(&url, &["--schema", &schema, "show", &undone.to_string()]);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();

    let missing = inspect(&url, &["--schema", &format!("{schema}_typo"), "list"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("holds no saga log"),
        "{}",
        text(&missing.stderr)
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let lines = text(&listed.stdout);
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(lines.contains(&running.to_string()) && lines.contains("\"compensated\""));
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let table = text(&shown.stdout);
    assert!(table.contains("bank B unavailable"), "{table}");
    assert!(table.contains("mermaid"), "{table}");
}

/// Reading never writes: a file that is not a saga log is refused and left
/// as it was, and so is a log at an older schema (older workers may still
/// write it).
#[test]
fn refuses_other_files_and_older_logs_without_touching_them() {
    let dir = TempDir::new();
    let tables = |db: &Path| -> Vec<String> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };

    let bank = dir.0.join("bank.db");
    rusqlite::Connection::open(&bank)
        .unwrap()
        .execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, cents INTEGER)")
        .unwrap();
    let refused = inspect(&bank, &["list"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("not a saga log"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(tables(&bank), ["accounts"]);

    let old = dir.0.join("old.db");
    rusqlite::Connection::open(&old)
        .unwrap()
        .execute_batch(
            "CREATE TABLE saga_schema (version INTEGER NOT NULL);
             INSERT INTO saga_schema (version) VALUES (1);",
        )
        .unwrap();
    let refused = inspect(&old, &["list"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("schema version 1"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(tables(&old), ["saga_schema"]);

    let refused = inspect(&dir.0, &["list"]);
    assert!(
        text(&refused.stderr).contains("a directory"),
        "{}",
        text(&refused.stderr)
    );
}

/// An age longer than the clock has run is "everything", not a wrapped
/// number of milliseconds: pruning finished sagas older than it prunes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_age_past_the_epoch_prunes_nothing_and_lists_everything() {
    let dir = TempDir::new();
    let db = dir.0.join("sagas.db");
    let (undone, _) = write_log(&SqliteStore::open(&db).unwrap()).await;
    let huge = "18446744073709552s";
    let list = inspect(
        &db,
        &["list", "--since", huge, "--limit", "18446744073709551615"],
    );
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(text(&list.stdout).contains(&undone.to_string()));
    let prune = inspect(&db, &["prune", "--older-than", huge]);
    assert!(prune.status.success(), "{}", text(&prune.stderr));
    assert!(
        text(&prune.stdout).contains("pruned 0"),
        "{}",
        text(&prune.stdout)
    );
}

/// A reader that stops reading (`saga-inspect .. | head`) ends the
/// inspector quietly, with success: no panic on the broken pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_ends_it_quietly() {
    use std::io::Read;
    let dir = TempDir::new();
    let db = dir.0.join("sagas.db");
    let store = SqliteStore::open(&db).unwrap();
    // Enough sagas that their list outgrows a pipe's buffer (64 KiB).
    // Enqueued at once, so that they are written in a few batches.
    let appends: Vec<_> = (0..1500)
        .map(|_| {
            let record = Record::new(SagaId::new(), 0, created(serde_json::json!(1)));
            store.append(vec![record])
        })
        .collect();
    for append in appends {
        append.await.unwrap();
    }
    drop(store);
    let mut child = Command::new(env!("CARGO_BIN_EXE_saga-inspect"))
        .arg(&db)
        .args(["list", "--limit", "1500"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run saga-inspect");
    let mut first = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then gone
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        !text(&output.stderr).contains("panicked"),
        "{}",
        text(&output.stderr)
    );
}
