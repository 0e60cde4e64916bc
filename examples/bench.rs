//! Run with: `cargo run --release --example bench`
//!
//! Prints, in under a minute, the numbers BENCHMARKS.md records, each
//! beside its baseline: in-memory sagas against the same calls written by
//! hand (sequential and 256 in flight, completing and rolling back),
//! durable sagas on SQLite with the records each fsync carried, recovery of
//! 100,000 unfinished sagas, and heap per saga in flight and after.
//! The criterion benches (`cargo bench`) measure the first two with
//! statistics; this is the quick table. Name rows to run only those:
//! `memory`, `durable`, `recovery`, `resident`, `future`; and `postgres`
//! (only when named, built with `--features postgres`).

#[path = "../benches/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use saga::log::{DefinitionSnapshot, Entry, Record};
use saga::prelude::*;
use saga::store::{SqliteStore, Store};

use support::{Noop, by_hand, with_noop};

/// Resident memory of this process in bytes (Linux), 0 elsewhere.
fn resident() -> i64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * page)
}

const IN_FLIGHT: usize = 256;
const WINDOW: Duration = Duration::from_millis(1500);

/// Runs `batch` (which does `per_batch` sagas) repeatedly for about
/// `WINDOW`; returns sagas per second.
async fn rate<F, Fut>(per_batch: usize, mut batch: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..3 {
        batch().await;
    }
    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < WINDOW {
        batch().await;
        done += per_batch;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

async fn in_flight(runtime: &Runtime, fail: bool) {
    let noop = runtime.saga::<Noop>().expect("registered");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..IN_FLIGHT {
        let noop = noop.clone();
        set.spawn(async move { noop.run(i as u64).await });
    }
    while let Some(done) = set.join_next().await {
        let outcome = done.expect("task").expect("run");
        assert_eq!(outcome.is_completed(), !fail);
    }
}

async fn by_hand_in_flight(fail: bool) {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..IN_FLIGHT {
        set.spawn(by_hand(i as u64, fail));
    }
    while let Some(done) = set.join_next().await {
        assert_eq!(done.expect("task").is_ok(), !fail);
    }
}

fn row(what: &str, value: String, baseline: String, note: String) {
    println!("{what:<44}{value:>16}{baseline:>16}   {note}");
}

fn kilo(x: f64) -> String {
    format!("{:.0}k/s", x / 1000.0)
}

fn in_memory_rows() {
    for (label, fail) in [("complete", false), ("rollback", true)] {
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        let (saga, by_type, hand) = current.block_on(async {
            let runtime = with_noop(Runtime::builder(), fail).await;
            let noop = runtime.saga::<Noop>().expect("registered");
            let saga = rate(1000, || async {
                for i in 0..1000 {
                    let outcome = noop.run(i).await.expect("run");
                    assert_eq!(outcome.is_completed(), !fail);
                }
            })
            .await;
            let by_type = rate(1000, || async {
                for i in 0..1000 {
                    let outcome = runtime.run::<Noop>(i).await.expect("run");
                    assert_eq!(outcome.is_completed(), !fail);
                }
            })
            .await;
            let hand = rate(1000, || async {
                for i in 0..1000 {
                    assert_eq!(by_hand(i, fail).await.is_ok(), !fail);
                }
            })
            .await;
            (saga, by_type, hand)
        });
        row(
            &format!("in memory, sequential, {label}"),
            kilo(saga),
            kilo(hand),
            format!(
                "hand-written is {:.0}x faster (its steps do nothing); through the registered \
                 handle (looked up by type on each run: {})",
                hand / saga,
                kilo(by_type)
            ),
        );
        let multi = tokio::runtime::Runtime::new().expect("tokio");
        let (saga, hand) = multi.block_on(async {
            let runtime = with_noop(Runtime::builder(), fail).await;
            let saga = rate(IN_FLIGHT, || in_flight(&runtime, fail)).await;
            let hand = rate(IN_FLIGHT, || by_hand_in_flight(fail)).await;
            (saga, hand)
        });
        row(
            &format!("in memory, 256 in flight, {label}"),
            kilo(saga),
            kilo(hand),
            format!("ratio {:.2}x", hand / saga),
        );
    }
}

fn durable_row(dir: &std::path::Path) {
    let multi = tokio::runtime::Runtime::new().expect("tokio");
    let store = SqliteStore::open(dir.join("durable.db")).expect("store");
    let saga = multi.block_on(async {
        let runtime = with_noop(Runtime::builder().store(store.clone()), false).await;
        rate(IN_FLIGHT, || in_flight(&runtime, false)).await
    });
    let stats = store.stats();
    row(
        "durable (SQLite), 256 in flight",
        kilo(saga),
        "1k/s".into(),
        format!(
            "{:.0} records per fsync; baseline: one fsync per record",
            stats.records_per_sync()
        ),
    );
}

/// Durable sagas on PostgreSQL (`--features postgres`; the server at
/// `DATABASE_URL`), in a schema of their own, dropped after.
#[cfg(feature = "postgres")]
fn postgres_row() {
    use saga::store::PostgresStore;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".into());
    let schema = format!("saga_bench_{}", SagaId::random().as_uuid().simple());
    let multi = tokio::runtime::Runtime::new().expect("tokio");
    multi.block_on(async {
        let store = match PostgresStore::builder(&url).schema(&schema).connect().await {
            Ok(store) => store,
            Err(e) => {
                println!("durable (PostgreSQL): skipped, {e}");
                return;
            }
        };
        let runtime = with_noop(Runtime::builder().store(store.clone()), false).await;
        let saga = rate(IN_FLIGHT, || in_flight(&runtime, false)).await;
        let stats = store.stats();
        row(
            "durable (PostgreSQL), 256 in flight",
            kilo(saga),
            "-".into(),
            format!(
                "{:.0} records per commit; leases and fencing checked on every write",
                stats.records_per_transaction()
            ),
        );
        drop((runtime, store));
        if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await;
        }
    });
}

#[cfg(not(feature = "postgres"))]
fn postgres_row() {
    println!("durable (PostgreSQL): run with --features postgres to measure");
}

/// Writes `n` sagas stopped after their first step's output, in batches.
async fn unfinished_log(store: &SqliteStore, n: u64) {
    let def = Noop::definition();
    let chunk = 2_000;
    let mut pending = Vec::new();
    for i in 0..n {
        let id = SagaId::new();
        let created = Entry::Created {
            saga: def.name().into(),
            fingerprint: def.fingerprint(),
            input: serde_json::json!(i),
            definition: DefinitionSnapshot::of(def),
            deadline_ms: None,
            retry: Vec::new(),
        };
        let started = Entry::StepStarted {
            step: "a".into(),
            attempt: 1,
        };
        let done = Entry::StepSucceeded {
            step: "a".into(),
            attempt: 1,
            output: serde_json::json!(i),
        };
        let records = vec![
            Record::new(id, 0, created),
            Record::new(id, 1, started),
            Record::new(id, 2, done),
        ];
        pending.push(store.append(records));
        if pending.len() == chunk {
            for p in pending.drain(..) {
                p.await.expect("append");
            }
        }
    }
    for p in pending {
        p.await.expect("append");
    }
}

fn recovery_row(dir: &std::path::Path) {
    const N: u64 = 100_000;
    let multi = tokio::runtime::Runtime::new().expect("tokio");
    let path = dir.join("recovery.db");
    multi.block_on(async {
        let store = SqliteStore::open(&path).expect("store");
        unfinished_log(&store, N).await;
    });
    let store = SqliteStore::open(&path).expect("store");
    let (read, total, report) = multi.block_on(async {
        let started = Instant::now();
        let logs = store.unfinished().await.expect("unfinished");
        let read = started.elapsed();
        assert_eq!(logs.len() as u64, N);
        drop(logs);
        let builder = Runtime::builder()
            .store(store.clone())
            .recovery_concurrency(1024);
        let runtime = with_noop(builder, false).await;
        let started = Instant::now();
        let report = runtime.recover().await.expect("recover");
        (read, started.elapsed(), report)
    });
    assert_eq!(report.completed as u64, N, "{report:?}");
    row(
        "recovery of 100,000 unfinished sagas",
        format!("{:.2} s", total.as_secs_f64()),
        "2 s".into(),
        format!(
            "read back in {:.2} s, then each resumed and finished durably ({:.0} records per fsync)",
            read.as_secs_f64(),
            store.stats().records_per_sync()
        ),
    );
}

/// A saga whose second step waits on a timer, for the memory row.
pub struct Sleepy;

#[saga(input = u64)]
impl Sleepy {
    #[step(compensate = undo)]
    async fn first(&self, input: &u64) -> Result<u64, StepError> {
        Ok(*input)
    }
    async fn undo(&self) -> Result<(), StepError> {
        Ok(())
    }

    #[step(pivot)]
    async fn second(&self, first: &u64) -> Result<u64, StepError> {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(*first)
    }
}

fn memory_row() {
    const N: usize = 100_000;
    // One thread, so one malloc arena: on several, freed memory lands in
    // whichever arena freed it and the process's size swings by 100 MB
    // between identical rounds, hiding what this row measures.
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    current.block_on(async {
        let runtime = Runtime::builder().build().await.expect("runtime");
        runtime.register(Arc::new(Sleepy));
        // Baseline: a task per saga doing the same wait, without a saga.
        let base = resident();
        let mut plain = Vec::with_capacity(N);
        for i in 0..N {
            plain.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                i
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let plain_bytes = (resident() - base) as f64 / N as f64;
        for p in plain {
            p.await.expect("task");
        }

        let base = resident();
        let mut in_flight = 0.0;
        let mut after = Vec::new();
        // Three rounds: the allocator may keep what a round freed (whether
        // it gives pages back depends on which block happens to sit at the
        // top of its heap), so "nothing retained" shows as the later rounds
        // not growing the process; retention would add its bytes per saga
        // every round.
        for _ in 0..3 {
            let mut handles = Vec::with_capacity(N);
            for i in 0..N {
                handles.push(runtime.start::<Sleepy>(i as u64).await.expect("start"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if in_flight == 0.0 {
                in_flight = (resident() - base) as f64 / N as f64;
            }
            for h in handles {
                assert!(h.outcome().await.expect("outcome").is_completed());
            }
            after.push(resident() - base);
        }
        let alive = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        row(
            "resident memory per saga in flight",
            format!("{in_flight:.0} B"),
            format!("{plain_bytes:.0} B"),
            format!(
                "100,000 waiting; baseline: a bare task doing the same wait; overhead {:.0} B; after each of 3 rounds: the process {} MB from its size before the first, {alive} tasks alive (retention would add {:.0} MB a round)",
                in_flight - plain_bytes,
                after
                    .iter()
                    .map(|a| format!("{:+.1}", *a as f64 / 1e6))
                    .collect::<Vec<_>>()
                    .join(", "),
                (in_flight - plain_bytes) * N as f64 / 1e6
            ),
        );
    });
}

/// The size of a saga run's future: what a saga in flight keeps beside its
/// steps' own futures.
fn future_row() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio");
    let runtime = rt.block_on(Runtime::builder().build()).expect("runtime");
    let run = runtime.run::<Noop>(0);
    row(
        "size of a 3-step saga's future",
        format!("{} B", std::mem::size_of_val(&run)),
        "-".into(),
        "the executor's state machine, inline in the task".into(),
    );
}

fn main() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("saga-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!("{:<44}{:>16}{:>16}", "measure", "saga", "baseline");
    // `cargo run --release --example bench -- durable recovery` runs only those.
    let only: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    // First, in a fresh process: what earlier rows freed would otherwise
    // be reused by this one and hide what it measures.
    if wanted("resident") {
        memory_row();
    }
    if wanted("memory") {
        in_memory_rows();
    }
    if wanted("durable") {
        durable_row(&dir);
    }
    if only.iter().any(|o| o == "postgres") {
        postgres_row();
    }
    if wanted("recovery") {
        recovery_row(&dir);
    }
    if wanted("future") {
        future_row();
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("\n({:.0} s)", started.elapsed().as_secs_f64());
}
