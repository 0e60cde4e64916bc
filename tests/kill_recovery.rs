//! A real process, killed with SIGKILL at random moments while it moves
//! money with durable sagas, restarted with recovery each time: at the end
//! every saga is completed or compensated, never half, and no money was
//! created or lost. Once with the log in SQLite, once in PostgreSQL (the
//! server at `DATABASE_URL`, default `postgres://postgres@127.0.0.1/test`,
//! in a schema of this run's own). And once with two workers sharing the
//! PostgreSQL log at the same time: one is killed, and the other takes its
//! sagas over when their leases run out, and finishes everything.
//!
//! This test runs itself as the worker (`kill_recovery --worker DIR LOG
//! [--drain] [--signal FILE]`), so it has its own `main` (`harness = false`
//! in Cargo.toml).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use saga::log::SagaState;
use saga::prelude::*;
use saga::store::{ListFilter, SqliteStore, Store, StoreError};
use saga::{Error, SagaId};
use saga_runtime::store::PostgresStore;
use serde::{Deserialize, Serialize};

const SAGAS: u64 = 1_500;
const ACCOUNTS: i64 = 20;
const OPENING: i64 = 1_000;
const KILLS: usize = 5;

/// One of this file's tests: its summary, or why it failed.
type Case = fn(&Log) -> Result<String, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--worker") {
        let dir = PathBuf::from(&args[i + 1]);
        let store = Log::parse(&args[i + 2]);
        let drain = args.iter().any(|a| a == "--drain");
        let signal = args
            .iter()
            .position(|a| a == "--signal")
            .map(|i| PathBuf::from(&args[i + 1]));
        let runtime = tokio::runtime::Runtime::new().expect("tokio");
        return match runtime.block_on(worker(&dir, &store, drain, signal)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // libtest-style output, so CI's summary counts these tests.
    let schema = || format!("saga_kill_{}", SagaId::random().as_uuid().simple());
    let cases: [(&str, Log, Case); 3] = [
        (
            "killed_workers_leave_every_saga_whole_sqlite",
            Log::Sqlite,
            killed_workers_leave_every_saga_whole,
        ),
        (
            "killed_workers_leave_every_saga_whole_postgres",
            Log::postgres(schema(), "kill-test", 15_000),
            killed_workers_leave_every_saga_whole,
        ),
        (
            "a_killed_worker_s_sagas_are_finished_by_the_other_postgres",
            Log::postgres(schema(), "w1", 1_000),
            a_killed_worker_s_sagas_are_finished_by_the_other,
        ),
    ];
    println!("\nrunning {} tests", cases.len());
    let started = Instant::now();
    let mut failed = 0;
    for (name, log, test) in &cases {
        let result = test(log);
        if let Log::Postgres { schema, .. } = log {
            drop_schema(schema);
        }
        match result {
            Ok(summary) => println!("test {name} ... ok ({summary})"),
            Err(message) => {
                failed += 1;
                println!("test {name} ... FAILED\n\n{message}\n");
            }
        }
    }
    let (word, code) = match failed {
        0 => ("ok", ExitCode::SUCCESS),
        _ => ("FAILED", ExitCode::FAILURE),
    };
    println!(
        "\ntest result: {word}. {} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        cases.len() - failed,
        started.elapsed().as_secs_f64()
    );
    code
}

/// Where the workers keep the saga log.
#[derive(Clone)]
enum Log {
    /// `sagas.db` in the run's directory.
    Sqlite,
    /// This schema of the PostgreSQL server, as this worker, with this lease.
    Postgres {
        schema: String,
        worker: String,
        lease_ms: u64,
    },
}

impl Log {
    fn postgres(schema: String, worker: &str, lease_ms: u64) -> Log {
        Log::Postgres {
            schema,
            worker: worker.into(),
            lease_ms,
        }
    }

    /// The same log, as another worker.
    fn as_worker(&self, name: &str) -> Log {
        match self {
            Log::Sqlite => Log::Sqlite,
            Log::Postgres {
                schema, lease_ms, ..
            } => Log::postgres(schema.clone(), name, *lease_ms),
        }
    }

    /// The worker's command-line form.
    fn arg(&self) -> String {
        match self {
            Log::Sqlite => "sqlite".into(),
            Log::Postgres {
                schema,
                worker,
                lease_ms,
            } => format!("postgres:{schema}:{worker}:{lease_ms}"),
        }
    }

    fn parse(arg: &str) -> Log {
        let parts: Vec<&str> = arg.split(':').collect();
        match parts.as_slice() {
            ["postgres", schema, worker, lease_ms] => {
                Log::postgres((*schema).into(), worker, lease_ms.parse().expect("lease"))
            }
            _ => Log::Sqlite,
        }
    }

    /// Opens the log. A restarted worker has the id it had, as one
    /// machine's would, so it takes its own sagas back at once.
    async fn open(&self, dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Log::Sqlite => Arc::new(SqliteStore::open(dir.join("sagas.db"))?),
            Log::Postgres {
                schema,
                worker,
                lease_ms,
            } => Arc::new(
                PostgresStore::builder(database_url())
                    .schema(schema)
                    .worker(worker.as_str())
                    .lease(Duration::from_millis(*lease_ms))
                    .connect()
                    .await?,
            ),
        })
    }
}

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".into())
}

fn drop_schema(schema: &str) {
    let Ok(tokio) = tokio::runtime::Runtime::new() else {
        return;
    };
    tokio.block_on(async {
        if let Ok((client, connection)) =
            tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await;
        }
    });
}

fn killed_workers_leave_every_saga_whole(log: &Log) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("saga-kill-{}", SagaId::new()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut seed = u64::from(std::process::id()) ^ 0x5eed;
    let mut kills = 0;
    let args = ["--worker".to_string(), dir.display().to_string(), log.arg()];
    for _ in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(&args)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the worker: {e}"))?;
        seed = next(seed);
        std::thread::sleep(Duration::from_millis(20 + seed % 300));
        if child.try_wait().map_err(|e| e.to_string())?.is_none() {
            child.kill().map_err(|e| e.to_string())?; // SIGKILL
            kills += 1;
        }
        child.wait().map_err(|e| e.to_string())?;
    }
    let status = Command::new(&exe)
        .args(&args)
        .status()
        .map_err(|e| format!("cannot start the last worker: {e}"))?;
    if !status.success() {
        return Err(format!("the last worker failed: {status}"));
    }
    let summary = check(&dir, log)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!("{kills} kills, {summary}"))
}

/// Two workers share the log and start the same sagas (each saga is
/// created by one of them); the first is killed. The second finishes its
/// own, then recovers until nothing is left running: the first's sagas
/// become its own once their leases run out.
fn a_killed_worker_s_sagas_are_finished_by_the_other(log: &Log) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("saga-kill-{}", SagaId::new()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // The accounts are opened once, before the workers race for them.
    World::open(&dir.join("world.db")).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let spawn = |log: &Log, extra: &[&str]| {
        Command::new(&exe)
            .args(["--worker", &dir.display().to_string(), &log.arg()])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))
    };
    let signal = dir.join("first-started");
    let mut first = spawn(log, &["--signal", &signal.display().to_string()])?;
    let mut second = spawn(&log.as_worker("w2"), &["--drain"])?;
    // The kill comes a little after the first worker started its first
    // saga, while it still has most of its share ahead of it: a pause timed
    // from the spawn alone could end before a slow start (a loaded machine)
    // and kill a worker that owned nothing yet.
    let waiting = Instant::now();
    while !signal.exists()
        && first.try_wait().map_err(|e| e.to_string())?.is_none()
        && waiting.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let pause = 20 + u64::from(std::process::id()) % 100;
    std::thread::sleep(Duration::from_millis(pause));
    let killed = first.try_wait().map_err(|e| e.to_string())?.is_none();
    if killed {
        first.kill().map_err(|e| e.to_string())?; // SIGKILL
    }
    first.wait().map_err(|e| e.to_string())?;
    let status = second.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the second worker failed: {status}"));
    }
    let taken: usize = std::fs::read_to_string(dir.join("taken-over"))
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    if killed && taken == 0 {
        return Err(
            "the first worker was killed, and the second took none of its sagas over".into(),
        );
    }
    let summary = check(&dir, log)?;
    let _ = std::fs::remove_dir_all(&dir);
    let how = if killed {
        "first killed"
    } else {
        "first ended before the kill"
    };
    Ok(format!(
        "{how} {pause} ms after its first saga, {taken} of its sagas taken over, {summary}"
    ))
}

fn next(x: u64) -> u64 {
    let x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB)
}

/// One transfer between two accounts of the world.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Move {
    from: i64,
    to: i64,
    amount: i64,
}

#[derive(Debug, thiserror::Error)]
enum WorldError {
    #[error("insufficient funds")]
    Insufficient,
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
}

impl Classify for WorldError {
    fn is_retryable(&self) -> bool {
        matches!(self, WorldError::Db(_))
    }
}

/// The world the sagas change: a SQLite file of balances and a journal of
/// applied operations (keyed by idempotency key, so nothing applies twice).
pub struct World {
    conn: Mutex<Connection>,
}

impl World {
    fn open(path: &Path) -> Result<World, rusqlite::Error> {
        let mut conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS balances (account INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS journal (key TEXT PRIMARY KEY, saga TEXT NOT NULL, op TEXT NOT NULL, amount INTEGER NOT NULL);",
        )?;
        // One transaction: a worker killed while opening the accounts must
        // leave all of them or none.
        let tx = conn.transaction()?;
        let count: i64 = tx.query_row("SELECT COUNT(*) FROM balances", [], |r| r.get(0))?;
        if count == 0 {
            for account in 0..ACCOUNTS {
                tx.execute(
                    "INSERT INTO balances (account, balance) VALUES (?1, ?2)",
                    params![account, OPENING],
                )?;
            }
        }
        tx.commit()?;
        Ok(World {
            conn: Mutex::new(conn),
        })
    }

    /// Applies `delta` to `account` once under `cx`'s key, atomically with
    /// its journal entry.
    fn apply(
        &self,
        cx: &StepContext,
        op: &str,
        account: i64,
        delta: i64,
    ) -> Result<(), WorldError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        let key = cx.idempotency_key().to_string();
        let done: Option<String> = tx
            .query_row("SELECT key FROM journal WHERE key = ?1", [&key], |r| {
                r.get(0)
            })
            .optional()?;
        if done.is_none() {
            let balance: i64 = tx.query_row(
                "SELECT balance FROM balances WHERE account = ?1",
                [account],
                |r| r.get(0),
            )?;
            if balance + delta < 0 {
                return Err(WorldError::Insufficient);
            }
            tx.execute(
                "UPDATE balances SET balance = balance + ?2 WHERE account = ?1",
                params![account, delta],
            )?;
            tx.execute(
                "INSERT INTO journal (key, saga, op, amount) VALUES (?1, ?2, ?3, ?4)",
                params![key, cx.saga_id().to_string(), op, delta],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[saga(input = Move)]
impl World {
    #[step(compensate = refund, retry(attempts = 3, backoff = fixed("1ms")))]
    async fn withdraw(&self, input: &Move, cx: &StepContext) -> Result<(), WorldError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.apply(cx, "withdraw", input.from, -input.amount)
    }
    async fn refund(&self, input: &Move, cx: &StepContext) -> Result<(), WorldError> {
        self.apply(cx, "refund", input.from, input.amount)
    }

    #[step(compensate = reclaim, retry(attempts = 3, backoff = fixed("1ms")))]
    async fn deposit(&self, input: &Move, cx: &StepContext) -> Result<(), WorldError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.apply(cx, "deposit", input.to, input.amount)
    }
    async fn reclaim(&self, input: &Move, cx: &StepContext) -> Result<(), WorldError> {
        self.apply(cx, "reclaim", input.to, -input.amount)
    }

    #[step(pivot)]
    async fn commit(&self, cx: &StepContext) -> Result<(), WorldError> {
        self.apply(cx, "commit", 0, 0)
    }
}

fn saga_id(n: u64) -> SagaId {
    SagaId::from_u128(uuid_from(n))
}

fn uuid_from(n: u64) -> u128 {
    (0x5a6a_0000_0000_4000_8000_0000_0000_0000u128) | u128::from(n)
}

/// Recovers what the previous worker left, then starts every saga not yet
/// in the log, and runs them all to their end. With `drain`, then recovers
/// again and again until no saga is left running (another worker's
/// included, once their leases run out).
/// `signal`, if given, is a file created once this worker's first saga is
/// durable.
async fn worker(dir: &Path, log: &Log, drain: bool, signal: Option<PathBuf>) -> Result<(), Error> {
    let store = log.open(dir).await?;
    let shared = Arc::clone(&store);
    let world = Arc::new(
        World::open(&dir.join("world.db")).map_err(|e| StoreError::Backend(e.to_string()))?,
    );
    let runtime = Runtime::builder().store(store).build().await?;
    runtime.register(Arc::clone(&world));
    let report = runtime.recover().await?;
    if let Some((id, e)) = report.failed.first() {
        eprintln!("recovery of {id} failed: {e}");
    }
    let mut tasks = tokio::task::JoinSet::new();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let signal = Arc::new(signal);
    for n in 0..SAGAS {
        let runtime = runtime.clone();
        let in_flight = Arc::clone(&in_flight);
        let signal = Arc::clone(&signal);
        tasks.spawn(async move {
            let _permit = in_flight.acquire().await;
            let x = next(n);
            let request = Move {
                from: (x % ACCOUNTS as u64) as i64,
                to: ((x >> 8) % ACCOUNTS as u64) as i64,
                amount: if x.is_multiple_of(7) {
                    OPENING * 10
                } else {
                    ((x >> 16) % 300) as i64 + 1
                },
            };
            let options = SagaOptions::new().id(saga_id(n));
            match runtime.start_with::<World>(request, options).await {
                Ok(handle) => {
                    if let Some(file) = signal.as_ref() {
                        let _ = std::fs::File::create_new(file);
                    }
                    handle.outcome().await.map(drop)
                }
                // Started by an earlier worker: recovery finished it.
                Err(Error::AlreadyStarted { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::Aborted {
            id: SagaId::new(),
            reason: e.to_string(),
        })??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut taken = 0;
    if !drain {
        return Ok(());
    }
    loop {
        let report = runtime.recover().await?;
        taken += report.completed + report.compensated + report.stuck;
        std::fs::write(dir.join("taken-over"), taken.to_string())
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let running = ListFilter::in_state(SagaState::Running);
        if shared.list(running).await?.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Store(StoreError::Backend(
                "sagas still running after 60 s of recovery".into(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Every saga completed or compensated; each completed saga withdrew,
/// deposited and committed once; each compensated one left no net change;
/// the money adds up.
fn check(dir: &Path, log: &Log) -> Result<String, String> {
    let tokio = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let summaries = tokio.block_on(async {
        let store = log.open(dir).await.map_err(|e| e.to_string())?;
        store
            .list(ListFilter::default())
            .await
            .map_err(|e| e.to_string())
    })?;
    if summaries.len() as u64 != SAGAS {
        return Err(format!(
            "{} sagas in the log, expected {SAGAS}",
            summaries.len()
        ));
    }
    let unfinished: Vec<_> = summaries
        .iter()
        .filter(|s| !s.state.is_finished())
        .map(|s| (s.id, s.state))
        .collect();
    if !unfinished.is_empty() {
        return Err(format!(
            "{} sagas did not finish, such as {:?}",
            unfinished.len(),
            &unfinished[..unfinished.len().min(3)]
        ));
    }
    let world = Connection::open(dir.join("world.db")).map_err(|e| e.to_string())?;
    let total: i64 = world
        .query_row("SELECT SUM(balance) FROM balances", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if total != ACCOUNTS * OPENING {
        return Err(format!(
            "money was created or lost: {total} != {}",
            ACCOUNTS * OPENING
        ));
    }
    let (mut completed, mut compensated) = (0, 0);
    for s in &summaries {
        let mut stmt = world
            .prepare("SELECT op, amount FROM journal WHERE saga = ?1 ORDER BY op")
            .map_err(|e| e.to_string())?;
        let ops: Vec<(String, i64)> = stmt
            .query_map([s.id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| e.to_string())?
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let names: Vec<&str> = ops.iter().map(|(op, _)| op.as_str()).collect();
        let net: i64 = ops.iter().map(|(_, a)| a).sum();
        match s.state {
            SagaState::Completed if names == ["commit", "deposit", "withdraw"] && net == 0 => {
                completed += 1
            }
            SagaState::Compensated
                if net == 0
                    && !names.contains(&"commit")
                    && names.contains(&"withdraw") == names.contains(&"refund")
                    && names.contains(&"deposit") == names.contains(&"reclaim") =>
            {
                compensated += 1
            }
            state => {
                return Err(format!(
                    "saga {} ended {state:?} with operations {names:?} (net {net})",
                    s.id
                ));
            }
        }
    }
    Ok(format!("{completed} completed, {compensated} compensated"))
}
