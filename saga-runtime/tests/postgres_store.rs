//! The PostgreSQL store against a real server: group commit, conflicts,
//! leases and fencing between workers, recovery through the runtime.
//!
//! The server is the one at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1/test`); each test works in a schema of its
//! own, dropped at its end, so runs never collide.

mod support;

use std::sync::Arc;
use std::time::Duration;

use saga::prelude::*;
use saga_runtime::log::{DefinitionSnapshot, Entry, Record, Resumes, SagaState};
use saga_runtime::store::{ListFilter, PostgresStore, Store, StoreError};
use saga_runtime::{SagaHandle, SagaId};
use support::{created, started};

fn url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".into())
}

/// A schema of one test's own.
struct Schema {
    name: String,
}

impl Schema {
    fn new() -> Schema {
        Schema {
            name: format!("saga_test_{}", SagaId::random().as_uuid().simple()),
        }
    }

    /// A store in this schema for worker `worker`.
    async fn store(&self, worker: &str, lease: Duration) -> PostgresStore {
        PostgresStore::builder(url())
            .schema(&self.name)
            .worker(worker)
            .lease(lease)
            .connect()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot use PostgreSQL at {}: {e}\n(start it, or point DATABASE_URL at one)",
                    url()
                )
            })
    }

    /// Runs `sql` in this schema, as an operator (or a test) would.
    /// Workers a and b in this schema, and a saga a created.
    async fn a_and_b(&self) -> (PostgresStore, PostgresStore, SagaId) {
        let a = self.store("a", LONG).await;
        let b = self.store("b", LONG).await;
        let id = SagaId::new();
        a.append(vec![created(id)]).await.unwrap();
        (a, b, id)
    }

    /// Ends every lease at once, as if every worker had stalled past it.
    async fn expire_leases(&self) {
        self.sql("UPDATE sagas SET lease_until = now() - interval '1 second'")
            .await;
    }

    async fn sql(&self, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("SET search_path TO \"{}\"; {sql}", self.name))
            .await
            .expect("sql");
        drop(client);
        let _ = driver.await;
    }
}

impl Drop for Schema {
    /// Drops the schema, on a thread and runtime of its own, so that it goes
    /// whether the test passed or panicked.
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio");
            tokio.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                        ))
                        .await;
                }
            });
        })
        .join();
    }
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn records_come_back_in_order_and_each_saga_state_is_tracked() {
    let schema = Schema::new();
    let store = schema.store("a", LONG).await;
    let (running, done) = (SagaId::new(), SagaId::new());
    store.append(vec![created(running)]).await.unwrap();
    store
        .append(vec![started(running, 1), started(running, 2)])
        .await
        .unwrap();
    store.append(vec![created(done)]).await.unwrap();
    store
        .append(vec![Record::new(done, 1, Entry::Completed)])
        .await
        .unwrap();

    let loaded = store.load(running).await.unwrap().expect("saga");
    assert_eq!(loaded.summary.name, "Transfer");
    assert_eq!(loaded.summary.fingerprint, u64::MAX - 1);
    assert_eq!(loaded.summary.state, SagaState::Running);
    let seqs: Vec<u64> = loaded.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [0, 1, 2]);
    assert_eq!(
        loaded.records[2].decode().unwrap(),
        started(running, 2).entry
    );
    assert_eq!(
        store.load(done).await.unwrap().unwrap().summary.state,
        SagaState::Completed
    );
    assert!(store.load(SagaId::new()).await.unwrap().is_none());

    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].summary.id, running);
    assert_eq!(unfinished[0].records.len(), 3);

    let completed = store
        .list(ListFilter::in_state(SagaState::Completed))
        .await
        .unwrap();
    assert_eq!(completed.iter().map(|s| s.id).collect::<Vec<_>>(), [done]);
    assert_eq!(store.list(ListFilter::default()).await.unwrap().len(), 2);

    // Only finished sagas older than the cut-off go.
    assert_eq!(store.prune(0).await.unwrap(), 0);
    assert_eq!(store.prune(u64::MAX / 2).await.unwrap(), 1);
    assert!(store.load(done).await.unwrap().is_none());
    assert!(store.load(running).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_transactions() {
    let schema = Schema::new();
    let store = schema.store("a", LONG).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..256 {
        let store = store.clone();
        tasks.spawn(async move {
            let id = SagaId::new();
            store.append(vec![created(id)]).await?;
            for seq in 1..4 {
                store.append(vec![started(id, seq)]).await?;
            }
            Ok::<_, StoreError>(id)
        });
    }
    let mut ids = Vec::new();
    while let Some(done) = tasks.join_next().await {
        ids.push(done.unwrap().unwrap());
    }
    for id in ids {
        assert_eq!(store.load(id).await.unwrap().unwrap().records.len(), 4);
    }
    let stats = store.stats();
    assert_eq!(stats.records, 256 * 4);
    println!("{stats:?}");
    // 256 sagas append at once: commits carry several appends each.
    assert!(
        stats.transactions * 4 <= stats.records,
        "group commit did not group: {stats:?}"
    );
}

#[tokio::test]
async fn a_second_writer_of_the_same_record_is_refused_and_others_unaffected() {
    let schema = Schema::new();
    let store = schema.store("a", LONG).await;
    let (id, other) = (SagaId::new(), SagaId::new());
    store.append(vec![created(id)]).await.unwrap();
    store.append(vec![started(id, 1)]).await.unwrap();
    // Both in one batch: the duplicate fails alone.
    let again = store.append(vec![started(id, 1)]);
    let fine = store.append(vec![created(other)]);
    let (again, fine) = tokio::join!(again, fine);
    assert!(
        matches!(again, Err(StoreError::Conflict { saga, seq: 1 }) if saga == id),
        "{again:?}"
    );
    fine.unwrap();
    assert_eq!(store.load(id).await.unwrap().unwrap().records.len(), 2);
    // A saga created twice is a conflict too.
    assert!(matches!(
        store.append(vec![created(id)]).await,
        Err(StoreError::Conflict { seq: 0, .. })
    ));
}

#[tokio::test]
async fn a_worker_cannot_write_or_take_a_saga_another_holds() {
    let schema = Schema::new();
    let (a, b, id) = schema.a_and_b().await;

    let refused = b.append(vec![started(id, 1)]).await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { saga }) if saga == id),
        "{refused:?}"
    );
    assert!(b.unfinished().await.unwrap().is_empty());
    // The holder writes on.
    a.append(vec![started(id, 1)]).await.unwrap();
    assert_eq!(a.load(id).await.unwrap().unwrap().records.len(), 2);
}

#[tokio::test]
async fn a_saga_whose_lease_expired_is_taken_over_and_its_old_owner_fenced_off() {
    let schema = Schema::new();
    let (a, b, id) = schema.a_and_b().await;
    // Worker a stalls for longer than its lease (as if paused or cut off).
    schema.expire_leases().await;

    let taken = b.unfinished().await.unwrap();
    assert_eq!(taken.iter().map(|s| s.summary.id).collect::<Vec<_>>(), [id]);
    // Worker a wakes up and tries to go on: refused, nothing written.
    let late = a.append(vec![started(id, 1)]).await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
    b.append(vec![started(id, 1)]).await.unwrap();
    b.append(vec![Record::new(id, 2, Entry::Completed)])
        .await
        .unwrap();
    let log = b.load(id).await.unwrap().unwrap();
    assert_eq!(log.records.len(), 3);
    assert_eq!(log.summary.state, SagaState::Completed);
    // Finished, the saga takes nothing more from anyone.
    assert!(matches!(
        a.append(vec![started(id, 3)]).await,
        Err(StoreError::LeaseLost { .. })
    ));
}

#[tokio::test]
async fn leases_are_renewed_while_their_worker_lives() {
    let schema = Schema::new();
    let a = schema.store("a", Duration::from_millis(300)).await;
    let b = schema.store("b", LONG).await;
    let id = SagaId::new();
    a.append(vec![created(id)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        b.unfinished().await.unwrap().is_empty(),
        "a's lease lapsed while a was alive"
    );
    // Once a is gone, its lease runs out and b takes the saga.
    drop(a);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.unfinished().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_restarted_worker_takes_its_own_sagas_back_at_once() {
    let schema = Schema::new();
    let id = SagaId::new();
    {
        let before = schema.store("node-1", LONG).await;
        before.append(vec![created(id)]).await.unwrap();
    }
    let after = schema.store("node-1", LONG).await;
    let back = after.unfinished().await.unwrap();
    assert_eq!(back.iter().map(|s| s.summary.id).collect::<Vec<_>>(), [id]);
    after.append(vec![started(id, 1)]).await.unwrap();
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let schema = Schema::new();
    drop(schema.store("a", LONG).await);
    schema.sql("UPDATE saga_schema SET version = 99").await;
    let refused = PostgresStore::builder(url())
        .schema(&schema.name)
        .connect()
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(refused, StoreError::SchemaTooNew { found: 99, .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains(&schema.name), "{refused}");
}

#[tokio::test]
async fn a_bad_schema_name_is_refused() {
    let refused = PostgresStore::builder(url())
        .schema("x\"; DROP TABLE y; --")
        .connect()
        .await
        .err()
        .expect("refused");
    assert!(
        refused
            .to_string()
            .contains("invalid PostgreSQL schema name")
    );
}

/// Three steps; the second fails while `fail` is set.
struct Transfer {
    fail: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

impl Classify for Refused {
    fn is_retryable(&self) -> bool {
        false
    }
}

#[saga(input = u64)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u64) -> Result<u64, Refused> {
        Ok(*input)
    }
    async fn release(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(compensate = reverse)]
    async fn credit(&self, hold: &u64) -> Result<u64, Refused> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Refused);
        }
        Ok(hold + 1)
    }
    async fn reverse(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, credit: &u64) -> Result<u64, Refused> {
        Ok(credit + 1)
    }
}

async fn runtime(store: PostgresStore, fail: bool) -> Runtime {
    let runtime = Runtime::builder().store(store).build().await.unwrap();
    runtime.register(Arc::new(Transfer {
        fail: std::sync::atomic::AtomicBool::new(fail),
    }));
    runtime
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_run_durably_and_an_interrupted_one_is_recovered() {
    let schema = Schema::new();
    let store = schema.store("node-1", LONG).await;
    let rt = runtime(store.clone(), false).await;
    let done = rt.run::<Transfer>(7).await.unwrap();
    assert_eq!(done.completed().map(|o| o.capture), Some(9));
    let rt_failing = runtime(store.clone(), true).await;
    assert!(matches!(
        rt_failing.run::<Transfer>(7).await.unwrap(),
        Outcome::Compensated(_)
    ));
    let states: Vec<SagaState> = store
        .list(ListFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|s| s.state)
        .collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&SagaState::Completed));
    assert!(states.contains(&SagaState::Compensated));

    // A saga cut off after its first step by a crash of node-1 ...
    let def = Transfer::definition();
    let id = SagaId::new();
    let created = Entry::Created {
        saga: def.name().into(),
        fingerprint: def.fingerprint(),
        input: serde_json::json!(40),
        definition: DefinitionSnapshot::of(def),
        deadline_ms: None,
        retry: Vec::new(),
    };
    let records = vec![
        Record::new(id, 0, created),
        Record::new(
            id,
            1,
            Entry::StepStarted {
                step: "hold".into(),
                attempt: 1,
            },
        ),
        Record::new(
            id,
            2,
            Entry::StepSucceeded {
                step: "hold".into(),
                attempt: 1,
                output: serde_json::json!(40),
            },
        ),
    ];
    store.append(records).await.unwrap();
    drop((rt, rt_failing, store));

    // ... is finished by node-1 restarted, right away.
    let store = schema.store("node-1", LONG).await;
    let rt = runtime(store.clone(), false).await;
    let report = rt.recover().await.unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    let log = store.load(id).await.unwrap().unwrap();
    assert_eq!(log.summary.state, SagaState::Completed);
    // Its log says it was recovered, before the recovered run's records.
    assert_eq!(
        log.records[3].decode().unwrap(),
        Entry::Recovered {
            resumes: Resumes::Forward,
            step: Some("credit".into()),
            running: vec!["credit".into()],
            compensating: vec![],
        }
    );
    assert!(matches!(
        log.records[4].decode().unwrap(),
        Entry::StepStarted { step, attempt: 1 } if step == "credit"
    ));
}

#[tokio::test]
async fn a_recovered_record_leaves_the_saga_running_and_its_new_owner_s() {
    let schema = Schema::new();
    let (a, b, id) = schema.a_and_b().await;
    a.append(vec![started(id, 1)]).await.unwrap();
    // a stalls past its lease; b recovers the saga and notes it.
    schema.expire_leases().await;
    assert_eq!(b.unfinished().await.unwrap().len(), 1);
    b.resuming(id);
    let note = Entry::Recovered {
        resumes: Resumes::Forward,
        step: Some("hold".into()),
        running: vec!["hold".into()],
        compensating: vec![],
    };
    b.append(vec![Record::new(id, 2, note.clone())])
        .await
        .unwrap();
    let log = b.load(id).await.unwrap().unwrap();
    assert_eq!(log.summary.state, SagaState::Running);
    assert_eq!(log.records[2].decode().unwrap(), note);
    // Still b's, under its lease: a can neither take it nor write.
    assert!(a.unfinished().await.unwrap().is_empty());
    assert!(matches!(
        a.append(vec![started(id, 3)]).await,
        Err(StoreError::LeaseLost { .. })
    ));
    b.append(vec![Record::new(id, 3, Entry::Completed)])
        .await
        .unwrap();
    let log = b.load(id).await.unwrap().unwrap();
    assert_eq!(log.summary.state, SagaState::Completed);
    assert_eq!(log.records.len(), 4);
}

/// Three steps; the pivot waits for `gate` (if any) to open.
struct Slow {
    gate: Option<Arc<tokio::sync::Semaphore>>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

#[saga(input = u64)]
impl Slow {
    #[step(compensate = release)]
    async fn hold(&self, input: &u64) -> Result<u64, Refused> {
        Ok(*input)
    }
    async fn release(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(pivot)]
    async fn wait(&self, hold: &u64) -> Result<u64, Refused> {
        if let Some(gate) = &self.gate {
            self.waiting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _open = gate.acquire().await.expect("gate");
        }
        Ok(hold + 1)
    }

    #[step]
    async fn capture(&self, wait: &u64) -> Result<u64, Refused> {
        Ok(wait + 1)
    }
}

/// A worker on `store` that starts `n` sagas, each of which stalls inside
/// its pivot until the returned gate lets it through.
async fn stalled_worker(
    store: PostgresStore,
    n: usize,
) -> (Runtime, Arc<tokio::sync::Semaphore>, Vec<SagaHandle<Slow>>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runtime = Runtime::builder().store(store).build().await.unwrap();
    let slow = runtime.register(Arc::new(Slow {
        gate: Some(Arc::clone(&gate)),
        waiting: Arc::clone(&waiting),
    }));
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(slow.start(i as u64).await.unwrap());
    }
    while waiting.load(std::sync::atomic::Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (runtime, gate, handles)
}

/// A worker on `store` whose sagas do not stall.
async fn free_worker(store: PostgresStore) -> Runtime {
    let runtime = Runtime::builder().store(store).build().await.unwrap();
    runtime.register(Arc::new(Slow {
        gate: None,
        waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    }));
    runtime
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_is_fenced_off_while_another_finishes_its_sagas() {
    const N: usize = 10;
    let schema = Schema::new();
    // Worker a starts sagas and stalls inside their pivot.
    let (_a, gate, handles) = stalled_worker(schema.store("a", LONG).await, N).await;
    // It stays stalled past its leases ...
    schema.expire_leases().await;
    // ... so worker b takes its sagas over and finishes them.
    let b_store = schema.store("b", LONG).await;
    let b = free_worker(b_store.clone()).await;
    let report = b.recover().await.unwrap();
    assert_eq!(report.completed, N, "{report:?}");

    // Worker a wakes up: every write it tries is refused, and its runs stop.
    gate.add_permits(N);
    for handle in handles {
        let id = handle.id();
        let stopped = handle.outcome().await;
        assert!(
            matches!(&stopped, Err(saga_runtime::Error::Store(StoreError::LeaseLost { saga })) if *saga == id),
            "{stopped:?}"
        );
        let log = b_store.load(id).await.unwrap().unwrap();
        assert_eq!(log.summary.state, SagaState::Completed);
        let waits_done = log
            .records
            .iter()
            .filter(|r| {
                matches!(r.decode().unwrap(), Entry::StepSucceeded { step, .. } if step == "wait")
            })
            .count();
        assert_eq!(waits_done, 1, "only b's run of the pivot is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_a_worker_cannot_run_is_left_free_for_one_that_can() {
    let schema = Schema::new();
    // A saga of a kind worker a does not run (another service's, say).
    let other = SagaId::new();
    let writer = schema.store("writer", LONG).await;
    let created = Entry::Created {
        saga: "Invoice".into(),
        fingerprint: 1,
        input: serde_json::json!(1),
        definition: DefinitionSnapshot { steps: vec![] },
        deadline_ms: None,
        retry: Vec::new(),
    };
    writer
        .append(vec![Record::new(other, 0, created)])
        .await
        .unwrap();
    drop(writer);
    schema.expire_leases().await;

    let a = runtime(schema.store("a", LONG).await, false).await;
    let report = a.recover().await.unwrap();
    assert_eq!(
        report.failed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [other]
    );
    // Worker b, which runs invoices, finds it free at once.
    let b = schema.store("b", LONG).await;
    let free = b.unfinished().await.unwrap();
    assert_eq!(
        free.iter().map(|s| s.summary.id).collect::<Vec<_>>(),
        [other]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_waits_for_a_saga_a_dying_connection_still_locks() {
    let schema = Schema::new();
    let id = SagaId::new();
    {
        let before = schema.store("node-1", LONG).await;
        before.append(vec![created(id)]).await.unwrap();
    }
    // The killed process's last transaction, not yet aborted by the server,
    // still holds the saga's row.
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET search_path TO \"{}\"; BEGIN; UPDATE sagas SET updated_ms = updated_ms;",
            schema.name
        ))
        .await
        .unwrap();
    let after = schema.store("node-1", LONG).await;
    let recovering = tokio::spawn(async move { after.unfinished().await });
    // Once recovery waits for the lock (or has answered without waiting),
    // the old transaction ends. (Watched from a connection of its own: in
    // a transaction, pg_stat_activity is read once and then cached.)
    let (watch, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for _ in 0..500 {
        let waiting: i64 = watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE sagas%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 || recovering.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.batch_execute("ROLLBACK").await.unwrap();
    let back = recovering.await.unwrap().unwrap();
    assert_eq!(
        back.iter().map(|s| s.summary.id).collect::<Vec<_>>(),
        [id],
        "recovery skipped a saga whose row was locked for a moment"
    );
}

#[tokio::test]
async fn pages_are_full_until_no_saga_this_worker_may_take_follows() {
    let schema = Schema::new();
    let mut ids: Vec<SagaId> = (0..8).map(|_| SagaId::new()).collect();
    ids.sort();
    let writer = schema.store("writer", LONG).await;
    for &id in &ids {
        writer.append(vec![created(id)]).await.unwrap();
    }
    drop(writer);
    // The writer is gone; b holds two of its sagas under a live lease.
    schema
        .sql(&format!(
            "UPDATE sagas SET lease_until = now() - interval '1 second';
             UPDATE sagas SET owner = 'b', lease_until = now() + interval '1 hour'
             WHERE id IN ('{}', '{}')",
            ids[1], ids[4]
        ))
        .await;
    let a = schema.store("a", LONG).await;
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = a.unfinished_page(after, 3).await.unwrap();
        pages.push(page.iter().map(|s| s.summary.id).collect::<Vec<_>>());
        if page.len() < 3 {
            break;
        }
        after = page.last().map(|s| s.summary.id);
    }
    let expected: Vec<SagaId> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1 && *i != 4)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(
        pages,
        [expected[..3].to_vec(), expected[3..].to_vec(), Vec::new()]
    );
}

#[tokio::test]
async fn a_fenced_off_worker_stays_fenced_off_when_the_saga_is_free_again() {
    let schema = Schema::new();
    let (a, b, id) = schema.a_and_b().await;
    schema.expire_leases().await;
    assert_eq!(b.unfinished().await.unwrap().len(), 1);
    assert!(matches!(
        a.append(vec![started(id, 1)]).await,
        Err(StoreError::LeaseLost { .. })
    ));
    // b stalls too: the saga is free for whoever recovers it, but a's run,
    // fenced off, must not be the one to write.
    schema.expire_leases().await;
    let again = a.append(vec![started(id, 1)]).await;
    assert!(
        matches!(again, Err(StoreError::LeaseLost { .. })),
        "{again:?}"
    );
    assert_eq!(a.load(id).await.unwrap().unwrap().records.len(), 1);
    // Recovery by a takes the saga again, but the fenced-off run may still
    // be live in a: it gets nothing until a runs the saga anew.
    assert_eq!(a.unfinished().await.unwrap().len(), 1);
    let stale = a.append(vec![started(id, 1)]).await;
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { .. })),
        "{stale:?}"
    );
    a.resuming(id);
    a.append(vec![started(id, 1)]).await.unwrap();
    assert_eq!(a.load(id).await.unwrap().unwrap().records.len(), 2);
}

#[tokio::test]
async fn an_operator_marks_a_stuck_saga_compensated_and_resumes_it_on_one_worker() {
    let schema = Schema::new();
    let a = schema.store("a", LONG).await;
    let id = SagaId::new();
    a.append(vec![created(id)]).await.unwrap();
    let stuck = Entry::Stuck {
        failure: saga_runtime::log::FailureSnapshot {
            step: "hold".into(),
            compensation: Some("release".into()),
            phase: saga_runtime::Phase::Compensation,
            error: "bank down".into(),
            retryable: true,
            attempts: 3,
        },
    };
    a.append(vec![Record::new(id, 1, stuck)]).await.unwrap();
    assert_eq!(
        a.load(id).await.unwrap().unwrap().summary.state,
        SagaState::Stuck
    );
    // Stuck, the saga is nobody's: the operator's records go in from here ...
    let marked = Entry::MarkedCompensated {
        step: "hold".into(),
    };
    a.append(vec![Record::new(id, 2, marked)]).await.unwrap();
    a.append(vec![Record::new(id, 3, Entry::Resumed)])
        .await
        .unwrap();
    // ... and the resumed run's, as its owner again.
    a.append(vec![Record::new(id, 4, Entry::Compensated)])
        .await
        .unwrap();
    let log = a.load(id).await.unwrap().unwrap();
    assert_eq!(log.records.len(), 5);
    assert_eq!(log.summary.state, SagaState::Compensated);
}

#[tokio::test]
async fn a_lost_connection_is_replaced_and_nothing_is_lost() {
    let schema = Schema::new();
    let worker = format!("reconnect-{}", SagaId::random().as_uuid().simple());
    let a = schema.store(&worker, LONG).await;
    let id = SagaId::new();
    a.append(vec![created(id)]).await.unwrap();
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'saga {worker}'"
    );
    // The server drops every connection of this worker (a restart, say).
    schema.sql(&terminate).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The writer notices on its next batch, reconnects and writes it.
    a.append(vec![started(id, 1)]).await.unwrap();
    a.append(vec![started(id, 2)]).await.unwrap();
    // And when the batch comes right after the drop, before the client can
    // have noticed, the batch fails on the old connection and is written
    // again on a new one.
    for seq in 3..8 {
        schema.sql(&terminate).await;
        a.append(vec![started(id, seq)]).await.unwrap();
    }
    let log = a.load(id).await.unwrap().unwrap();
    assert_eq!(
        log.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_refused_connection_says_what_the_server_said() {
    let base = url();
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database");
    let wrong = format!("{prefix}/saga_no_such_database");
    let Err(e) = PostgresStore::builder(wrong).connect().await else {
        panic!("connected to a database that does not exist");
    };
    let text = e.to_string();
    assert!(
        text.contains("saga_no_such_database") && text.contains("3D000"),
        "{text}"
    );
}

#[tokio::test]
async fn a_read_cut_off_by_a_lost_connection_is_made_again_on_a_new_one() {
    let schema = Schema::new();
    let worker = format!("reread-{}", SagaId::random().as_uuid().simple());
    let a = schema.store(&worker, LONG).await;
    let id = SagaId::new();
    a.append(vec![created(id)]).await.unwrap();
    // Each read comes right after the server dropped the connection, before
    // the client can have noticed: the read fails on the old connection,
    // and is made again on a new one instead of failing its caller.
    for round in 0..10 {
        schema
            .sql(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'saga {worker}'"
            ))
            .await;
        let read = if round % 2 == 0 {
            a.load(id).await.map(|log| log.map(|log| log.records.len()))
        } else {
            a.list(ListFilter::in_state(SagaState::Running))
                .await
                .map(|list| Some(list.len()))
        };
        assert_eq!(read.unwrap(), Some(1), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_off_run_gets_nothing_when_its_worker_recovers_the_saga_meanwhile() {
    let schema = Schema::new();
    // Worker a's run stalls inside the pivot.
    let a_store = schema.store("a", LONG).await;
    let (a, gate, mut handles) = stalled_worker(a_store.clone(), 1).await;
    let handle = handles.remove(0);
    let id = handle.id();
    // b takes the saga over and is cut off in turn: the saga is free again,
    // and a's stalled run has not tried to write since.
    schema.expire_leases().await;
    let b = schema.store("b", LONG).await;
    assert_eq!(b.unfinished().await.unwrap().len(), 1);
    schema.expire_leases().await;
    // a recovers while its stalled run is still live: recovery leaves the
    // saga to that run, and that run, fenced off, writes nothing.
    let report = a.recover().await.unwrap();
    assert_eq!(report.completed + report.compensated, 0, "{report:?}");
    gate.add_permits(1);
    let stopped = handle.outcome().await;
    assert!(
        matches!(
            &stopped,
            Err(saga_runtime::Error::Store(StoreError::LeaseLost { .. }))
        ),
        "{stopped:?}"
    );
    // The next recovery runs the saga anew, and finishes it.
    let report = a.recover().await.unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    let log = a_store.load(id).await.unwrap().unwrap();
    assert_eq!(log.summary.state, SagaState::Completed);
}

/// A run stopped by a store error (the database refused a write) lets go
/// of its saga: its worker lives on, serving other sagas, but no longer
/// holds that one, and another worker's recovery finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_by_a_store_error_lets_another_worker_finish_its_saga() {
    const LEASE: Duration = Duration::from_millis(600);
    let schema = Schema::new();
    let (a, gate, mut handles) = stalled_worker(schema.store("a", LEASE).await, 1).await;
    let handle = handles.remove(0);
    let id = handle.id();
    // The database refuses the next record (for a moment: a full disk, an
    // operator's mistake), so the run stops with a store error.
    schema
        .sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'refused for the test'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON records
               FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await;
    gate.add_permits(1);
    let stopped = handle.outcome().await;
    assert!(
        matches!(&stopped, Err(saga_runtime::Error::Store(StoreError::Backend(m))) if m.contains("refused for the test")),
        "{stopped:?}"
    );
    schema.sql("DROP TRIGGER refuse ON records").await;
    // Worker a lives on, past two leases that it would have renewed.
    gate.add_permits(1);
    assert!(a.run::<Slow>(2).await.unwrap().is_completed());
    tokio::time::sleep(LEASE * 2).await;

    let b_store = schema.store("b", LEASE).await;
    let b = free_worker(b_store.clone()).await;
    let report = b.recover().await.unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    let log = b_store.load(id).await.unwrap().unwrap();
    assert_eq!(log.summary.state, SagaState::Completed);
    drop(a);
}

/// A database of one test's own, for what a test does to a whole database
/// (refusing connections, as a server restarting does).
struct Database {
    name: String,
}

impl Database {
    async fn new() -> Database {
        let name = format!("saga_test_{}", SagaId::random().as_uuid().simple());
        admin(&format!("CREATE DATABASE \"{name}\"")).await;
        Database { name }
    }

    /// `DATABASE_URL` with this database in place of its own.
    fn url(&self) -> String {
        let url = url();
        let (base, query) = url.split_once('?').unwrap_or((&url, ""));
        let (server, _) = base.rsplit_once('/').expect("a database URL");
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{server}/{}{query}", self.name)
    }

    async fn store(&self, worker: &str, lease: Duration) -> PostgresStore {
        PostgresStore::builder(self.url())
            .worker(worker)
            .lease(lease)
            .connect()
            .await
            .expect("a store in the test's database")
    }

    /// Refuses every connection, and ends those open (or lets them in again).
    async fn refuse_connections(&self, refuse: bool) {
        let name = &self.name;
        admin(&format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {}",
            !refuse
        ))
        .await;
        if refuse {
            admin(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ))
            .await;
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio");
            tokio.block_on(admin(&format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )));
        })
        .join();
    }
}

/// Runs one statement on the server at `DATABASE_URL`, outside any schema.
async fn admin(sql: &str) {
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await.expect("sql");
    drop(client);
    let _ = driver.await;
}

/// After an outage during which a write failed, the worker gets its
/// connection back by itself and renews its leases again, though it has
/// nothing more to write: another worker does not take its sagas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_again_after_an_outage_with_nothing_to_write() {
    const LEASE: Duration = Duration::from_millis(600);
    let db = Database::new().await;
    let a = db.store("a", LEASE).await;
    let id = SagaId::new();
    a.append(vec![created(id)]).await.unwrap();
    db.refuse_connections(true).await;
    // The write fails: the writer cannot connect again.
    assert!(a.append(vec![started(id, 1)]).await.is_err());
    db.refuse_connections(false).await;
    // Nothing more is written (the saga's step runs a long time) ...
    tokio::time::sleep(LEASE * 3).await;
    // ... and a still holds it.
    let b = db.store("b", LEASE).await;
    assert!(
        b.unfinished().await.unwrap().is_empty(),
        "a's lease lapsed after the outage though a is alive"
    );
    // It writes again, too.
    a.append(vec![started(id, 1)]).await.unwrap();
    drop((a, b));
}

/// The records of saga `id` in `store`, by seq.
async fn seqs(store: &PostgresStore, id: SagaId) -> Vec<u64> {
    let log = store.load(id).await.unwrap().expect("saga");
    log.records.iter().map(|r| r.seq).collect()
}

/// Several appends of one saga in one batch (the writer writes a batch a
/// round at a time: each saga once per statement) go in as one statement
/// each would: in order, each under the rules the ones before left.
#[tokio::test]
async fn appends_of_one_saga_in_one_batch_are_written_in_order() {
    let schema = Schema::new();
    let a = schema.store("a", LONG).await;
    let b = schema.store("b", LONG).await;
    let (x, y) = (SagaId::new(), SagaId::new());
    a.append(vec![created(y)]).await.unwrap();
    let before = a.stats().transactions;
    // Sent together, written in one batch: x is created and written to
    // twice; y is written to, completed, then written to once more.
    let x0 = a.append(vec![created(x)]);
    let x1 = a.append(vec![started(x, 1)]);
    let y1 = a.append(vec![started(y, 1)]);
    let x2 = a.append(vec![started(x, 2), started(x, 3)]);
    let y2 = a.append(vec![Record::new(y, 2, Entry::Completed)]);
    let y3 = a.append(vec![started(y, 3)]);
    let (x0, x1, y1, x2, y2, y3) = tokio::join!(x0, x1, y1, x2, y2, y3);
    assert_eq!(a.stats().transactions, before + 1, "not one batch");
    for written in [x0, x1, y1, x2, y2] {
        written.unwrap();
    }
    // Completed by the append before it, y takes nothing more.
    assert!(
        matches!(y3, Err(StoreError::LeaseLost { saga }) if saga == y),
        "{y3:?}"
    );
    assert_eq!(seqs(&a, x).await, [0, 1, 2, 3]);
    assert_eq!(seqs(&a, y).await, [0, 1, 2]);
    let y_log = a.load(y).await.unwrap().unwrap();
    assert_eq!(y_log.summary.state, SagaState::Completed);
    assert_eq!(y_log.records[1].decode().unwrap(), started(y, 1).entry);
    // x, created in the batch, is a's: a writes on, b is refused.
    assert!(matches!(
        b.append(vec![started(x, 4)]).await,
        Err(StoreError::LeaseLost { .. })
    ));
    a.append(vec![started(x, 4)]).await.unwrap();
    assert_eq!(seqs(&a, x).await, [0, 1, 2, 3, 4]);
}

/// In a batch, an append whose record is already written fails alone: the
/// other sagas' appends, and the next append of its own saga, are written.
#[tokio::test]
async fn a_conflicting_append_among_good_ones_fails_alone() {
    let schema = Schema::new();
    let a = schema.store("a", LONG).await;
    let (x, y, z) = (SagaId::new(), SagaId::new(), SagaId::new());
    a.append(vec![created(x)]).await.unwrap();
    a.append(vec![started(x, 1)]).await.unwrap();
    a.append(vec![created(y)]).await.unwrap();
    let before = a.stats().transactions;
    let y1 = a.append(vec![started(y, 1)]);
    // Seq 1 of x is written: this one collides (and would complete x).
    let clash = a.append(vec![Record::new(x, 1, Entry::Completed)]);
    let x2 = a.append(vec![started(x, 2)]);
    let z0 = a.append(vec![created(z)]);
    let y2 = a.append(vec![started(y, 2)]);
    let (y1, clash, x2, z0, y2) = tokio::join!(y1, clash, x2, z0, y2);
    assert_eq!(a.stats().transactions, before + 1, "not one batch");
    assert!(
        matches!(clash, Err(StoreError::Conflict { saga, seq: 1 }) if saga == x),
        "{clash:?}"
    );
    for written in [y1, x2, z0, y2] {
        written.unwrap();
    }
    assert_eq!(seqs(&a, x).await, [0, 1, 2]);
    assert_eq!(seqs(&a, y).await, [0, 1, 2]);
    assert_eq!(seqs(&a, z).await, [0]);
    let x_log = a.load(x).await.unwrap().unwrap();
    assert_eq!(x_log.summary.state, SagaState::Running);
    assert_eq!(x_log.records[1].decode().unwrap(), started(x, 1).entry);
    // Every saga is still a's.
    for (id, seq) in [(x, 3), (y, 3), (z, 1)] {
        a.append(vec![started(id, seq)]).await.unwrap();
    }
}

/// In a batch, the appends of a saga another worker took over are refused
/// (nothing of theirs is written) and fence the saga off; the others are
/// written, and renew their sagas' leases.
#[tokio::test]
async fn a_refused_append_among_good_ones_writes_nothing_and_others_are_written() {
    let schema = Schema::new();
    let (a, b, x) = schema.a_and_b().await;
    let (y, z) = (SagaId::new(), SagaId::new());
    a.append(vec![created(y)]).await.unwrap();
    schema.expire_leases().await;
    // b takes x over by writing to it.
    b.append(vec![started(x, 1)]).await.unwrap();
    let before = a.stats().transactions;
    let x2 = a.append(vec![started(x, 2)]);
    let y1 = a.append(vec![started(y, 1)]);
    let x3 = a.append(vec![started(x, 3)]);
    let z0 = a.append(vec![created(z)]);
    let (x2, y1, x3, z0) = tokio::join!(x2, y1, x3, z0);
    assert_eq!(a.stats().transactions, before + 1, "not one batch");
    for refused in [x2, x3] {
        assert!(
            matches!(refused, Err(StoreError::LeaseLost { saga }) if saga == x),
            "{refused:?}"
        );
    }
    y1.unwrap();
    z0.unwrap();
    assert_eq!(seqs(&a, x).await, [0, 1]);
    assert_eq!(seqs(&a, y).await, [0, 1]);
    assert_eq!(seqs(&a, z).await, [0]);
    // y's lease, expired, was renewed by a's append: b takes only x (its own).
    let taken: Vec<SagaId> = b
        .unfinished()
        .await
        .unwrap()
        .iter()
        .map(|s| s.summary.id)
        .collect();
    assert_eq!(taken, [x]);
    // a stays fenced off x, even once x is free again.
    b.release(x).await.unwrap();
    assert!(matches!(
        a.append(vec![started(x, 2)]).await,
        Err(StoreError::LeaseLost { .. })
    ));
    a.append(vec![started(y, 2)]).await.unwrap();
}
