//! The shared store: PostgreSQL, for many workers on many machines.
//!
//! Every unfinished saga is owned by one worker at a time, under a lease
//! with a fencing token:
//!
//! - A worker owns the sagas it creates, and takes over a saga whose lease
//!   has expired (its worker died, or lost touch for longer than the lease)
//!   when recovery reads it ([`Store::unfinished_page`]) or when it first
//!   writes to it (an operator's [`resume`](crate::Runtime::resume), say).
//!   Taking a saga over from another worker increments its token.
//! - Every append is checked, in the statement that writes it, against the
//!   owner and the token the worker holds. A worker whose saga was taken
//!   over is refused ([`StoreError::LeaseLost`]): its run stops there, and
//!   nothing it does afterwards reaches the log, even once the saga is free
//!   again (only recovery gives it back). Statements that lock several
//!   sagas lock them in id order, so workers never deadlock each other.
//! - A background task renews the worker's leases (every third of the
//!   lease); every append renews its saga's lease too. Leases are measured
//!   by the database's clock, so the workers' clocks need not agree.
//! - A saga that completes, is compensated or becomes stuck is released.
//!
//! A worker id must be used by one process at a time. Give each worker a
//! stable id ([`PostgresBuilder::worker`]): restarted, it then takes its own
//! unfinished sagas back at once, instead of after their leases expire.
//!
//! Writes go through one connection and commit in groups, as with SQLite:
//! every append waiting when a transaction starts goes into it. Reads use a
//! second connection. A connection the server dropped (a restart, say) is
//! replaced: the writer writes its batch again on a new one, and a read
//! cut off with it is made again on a new one. While the writer cannot
//! reconnect, this worker's leases are left to lapse, so that another
//! worker takes its sagas over. A session left idle inside a transaction
//! (a frozen worker) is ended by the server after a lease.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

use super::{
    Answer, BoxFuture, CommitStats, Counters, Encoded, ListFilter, SagaSummary, Store, StoreError,
    StoredRecord, StoredSaga, answered,
};
use crate::SagaId;
use crate::log::{Record, SagaState};

/// The schema version this build writes. Older schemas are migrated on
/// connect; newer ones are refused.
const SCHEMA_VERSION: i32 = 1;

/// Statements that bring a schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE sagas (
         id          uuid PRIMARY KEY,
         name        text NOT NULL,
         fingerprint bigint NOT NULL,
         state       text NOT NULL,
         created_ms  bigint NOT NULL,
         updated_ms  bigint NOT NULL,
         owner       text,
         token       bigint NOT NULL,
         lease_until timestamptz
     );
     CREATE INDEX sagas_by_state ON sagas (state, updated_ms);
     CREATE INDEX sagas_running ON sagas (id) WHERE state = 'running';
     CREATE INDEX sagas_by_owner ON sagas (owner) WHERE state = 'running';
     CREATE TABLE records (
         saga_id uuid NOT NULL,
         seq     bigint NOT NULL,
         at_ms   bigint NOT NULL,
         body    text NOT NULL,
         PRIMARY KEY (saga_id, seq)
     );",
];

/// Taken (per transaction) while a schema is created or migrated, so that
/// workers starting together do it once.
const MIGRATION_LOCK: i64 = 0x5a6a_0001;

/// The most appends one transaction takes; the rest wait for the next.
const MAX_BATCH: usize = 1024;

const SUMMARY_COLUMNS: &str = "id, name, fingerprint, state, created_ms, updated_ms";

/// Writes a round of appends (at most one per saga) in one statement, for
/// worker `$1` under a lease of `$2` ms. Creates the sagas `$7`..`$11`
/// (id, name, fingerprint, state, first record's time), owned by this
/// worker. Updates the sagas `$3`..`$6` (id, token, new state or null, when
/// it changed): each one this worker holds (its token), or takes over first
/// if it holds none (token 0) and the saga is unfinished and free (stuck,
/// say), its own, or its lease expired; a finished saga takes no more
/// records, and a worker that was refused (token -1) writes nothing more
/// until recovery gives it the saga again. Then writes those of the records
/// `$12`..`$15` (saga, seq, time, body) whose saga was written. The sagas
/// updated are locked first, in id order, as every statement that locks
/// several does (only those that qualify, so that a refused saga's row is
/// not locked). Returns the id, the token and the owner after the write
/// (none, once the saga is stuck or finished) of each saga written; a saga
/// updated that is not returned was refused, and none of its records is
/// written.
const WRITE_ROUND: &str = "
    WITH locked AS (
        SELECT a.id, a.token, a.state, a.at
        FROM sagas s
        JOIN unnest($3::uuid[], $4::bigint[], $5::text[], $6::bigint[])
            AS a (id, token, state, at) ON a.id = s.id
        WHERE (s.owner = $1 AND s.token = a.token)
           OR (a.token = 0 AND s.state NOT IN ('completed', 'compensated')
               AND (s.owner IS NULL OR s.owner = $1 OR s.lease_until < now()))
        ORDER BY s.id
        FOR UPDATE OF s
    ), appended AS (
        UPDATE sagas s SET
            token = CASE WHEN s.owner IS DISTINCT FROM $1 THEN s.token + 1 ELSE s.token END,
            owner = CASE WHEN coalesce(a.state, s.state) = 'running' THEN $1 END,
            lease_until = now() + interval '1 millisecond' * $2::bigint,
            state = coalesce(a.state, s.state),
            updated_ms = CASE WHEN a.state IS NULL THEN s.updated_ms ELSE a.at END
        FROM locked a
        WHERE s.id = a.id
          AND ((s.owner = $1 AND s.token = a.token)
               OR (a.token = 0 AND s.state NOT IN ('completed', 'compensated')
                   AND (s.owner IS NULL OR s.owner = $1 OR s.lease_until < now())))
        RETURNING s.id, s.token, s.owner
    ), created AS (
        INSERT INTO sagas (id, name, fingerprint, state, created_ms, updated_ms,
                           owner, token, lease_until)
        SELECT c.id, c.name, c.fingerprint, c.state, c.at, c.at,
               CASE WHEN c.state = 'running' THEN $1 END, 1,
               now() + interval '1 millisecond' * $2::bigint
        FROM unnest($7::uuid[], $8::text[], $9::bigint[], $10::text[], $11::bigint[])
            AS c (id, name, fingerprint, state, at)
        RETURNING id, token, owner
    ), written AS (
        INSERT INTO records (saga_id, seq, at_ms, body)
        SELECT r.saga_id, r.seq, r.at_ms, r.body
        FROM unnest($12::uuid[], $13::bigint[], $14::bigint[], $15::text[])
            AS r (saga_id, seq, at_ms, body)
        WHERE r.saga_id IN (SELECT id FROM appended UNION ALL SELECT id FROM created)
    )
    SELECT id, token, owner FROM appended
    UNION ALL
    SELECT id, token, owner FROM created";

/// The next unfinished sagas this worker may take, in id order: free, its
/// own, or with an expired lease.
const CANDIDATES: &str = "
    SELECT id FROM sagas
    WHERE state = 'running' AND ($1::uuid IS NULL OR id > $1)
      AND (owner IS NULL OR owner = $2 OR lease_until < now())
    ORDER BY id
    LIMIT $3";

/// Takes over those of the candidates `$1` that still qualify, locking them
/// in id order (as every statement that locks several does, so that none
/// deadlocks another). A row another transaction holds is waited for, not
/// skipped (that transaction
/// may be a killed worker's last, which the server has not aborted yet: a
/// restarted worker must not pass its sagas by), then checked again (a saga
/// another worker just took is left to it).
const CLAIM: &str = "
    UPDATE sagas SET
        token = CASE WHEN owner IS DISTINCT FROM $2 THEN token + 1 ELSE token END,
        owner = $2,
        lease_until = now() + interval '1 millisecond' * $3::bigint
    WHERE id IN (SELECT id FROM sagas WHERE id = ANY($1) ORDER BY id FOR UPDATE)
      AND state = 'running'
      AND (owner IS NULL OR owner = $2 OR lease_until < now())
    RETURNING id, name, fingerprint, state, created_ms, updated_ms, token";

/// A [`Store`] in a PostgreSQL database, shared by many workers.
///
/// ```no_run
/// use std::time::Duration;
/// use saga_runtime::Runtime;
/// use saga_runtime::store::PostgresStore;
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::builder("postgres://postgres@127.0.0.1/app")
///     .schema("sagas")
///     .worker("billing-1")
///     .lease(Duration::from_secs(15))
///     .connect()
///     .await?;
/// let runtime = Runtime::builder().store(store).build().await?;
/// // Register the sagas, then finish what this worker, or a dead one, left.
/// let report = runtime.recover().await?;
/// println!("{} recovered", report.completed + report.compensated);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// Replaced by a new connection when it is found closed.
    reader: std::sync::RwLock<Arc<Client>>,
    /// Held while the reader is replaced, so that readers finding it lost
    /// at once open one new connection between them.
    reconnecting: tokio::sync::Mutex<()>,
    connector: Arc<Connector>,
    writer: mpsc::UnboundedSender<Append>,
    owner: Arc<Ownership>,
    schema: String,
    stats: Arc<Counters>,
    /// The lease renewer.
    renewer: JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The writer ends by itself once every sender is gone, after
        // writing and answering what it was sent; each connection's driver
        // ends with its client. The renewer would run forever.
        self.renewer.abort();
    }
}

/// Which sagas this worker holds, and with which token.
struct Ownership {
    worker: String,
    lease_ms: i64,
    holdings: Mutex<HashMap<SagaId, Holding>>,
    /// Cleared when the writer's connection is gone: leases are then left
    /// to lapse, so that another worker takes what this one cannot write.
    writing: AtomicBool,
}

/// What this worker knows of one saga's lease.
#[derive(Clone, Copy, Default)]
struct Holding {
    /// The token this worker's runs of the saga write under; `None` once a
    /// write was refused: a run fenced off stays so.
    token: Option<i64>,
    /// A token recovery took while a run of the saga here held another (it
    /// was taken over since, or fenced off): that run may still be live,
    /// with a view of the log that is out of date, so the token waits until
    /// the runtime runs the saga anew ([`Store::resuming`]).
    pending: Option<i64>,
}

/// The token sent for a saga fenced off: it matches none and, not being
/// 0 (which asks for the saga), takes nothing over either.
const FENCED: i64 = -1;

impl Ownership {
    fn holdings(&self) -> std::sync::MutexGuard<'_, HashMap<SagaId, Holding>> {
        self.holdings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token to write saga `id` under: 0 asks for it.
    fn token(&self, id: SagaId) -> i64 {
        self.holdings()
            .get(&id)
            .map_or(0, |h| h.token.unwrap_or(FENCED))
    }

    fn hold(&self, id: SagaId, token: i64) {
        self.holdings().entry(id).or_default().token = Some(token);
    }

    fn fence(&self, id: SagaId) {
        self.holdings().entry(id).or_default().token = None;
    }

    fn release(&self, id: SagaId) {
        self.holdings().remove(&id);
    }

    /// Recovery took saga `id` under `token`.
    fn claimed(&self, id: SagaId, token: i64) {
        let mut holdings = self.holdings();
        let holding = holdings.entry(id).or_insert(Holding {
            token: Some(token),
            pending: None,
        });
        if holding.token != Some(token) {
            holding.pending = Some(token);
        }
    }

    /// A new run of saga `id` starts in this process, and no other is live.
    fn resuming(&self, id: SagaId) {
        let mut holdings = self.holdings();
        let Some(holding) = holdings.get_mut(&id) else {
            return;
        };
        match holding.pending.take() {
            Some(token) => holding.token = Some(token),
            // Fenced off, and not taken since: the new run asks for the
            // saga on its first write (it gets it if nobody else holds it).
            None if holding.token.is_none() => {
                holdings.remove(&id);
            }
            None => {}
        }
    }

    /// The sagas this worker holds (not those fenced off), in id order.
    fn held(&self) -> Vec<uuid::Uuid> {
        let mut ids: Vec<uuid::Uuid> = self
            .holdings()
            .iter()
            .filter(|(_, h)| h.token.is_some())
            .map(|(id, _)| id.as_uuid())
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// Configures a [`PostgresStore`]; see [`PostgresStore::builder`].
#[derive(Clone, Debug)]
pub struct PostgresBuilder {
    url: String,
    schema: String,
    worker: Option<String>,
    lease: Duration,
    create: bool,
}

impl PostgresBuilder {
    /// The schema that holds the store's tables (created if missing;
    /// default `saga`). Letters, digits and `_` only.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// This worker's id (default: a new random one per store). Use a
    /// stable id per worker, and one process per id at a time.
    pub fn worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    /// Whether to create the schema and its tables if missing, or upgrade
    /// them if older (default true). A tool that only reads a log sets it
    /// false, so that a mistyped schema is an error instead of an empty new
    /// log, and a log older workers still write is left as it is.
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// How long a saga stays this worker's without a renewal (default 15
    /// s). Shorter, a dead worker's sagas are taken over sooner; longer, a
    /// worker survives longer pauses without losing its sagas.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Connects (two connections: one writes, one reads), creates or
    /// migrates the schema, and starts renewing this worker's leases.
    /// Needs a tokio runtime.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        if self.schema.is_empty()
            || !self
                .schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::Backend(format!(
                "invalid PostgreSQL schema name `{}`: use letters, digits and `_`",
                self.schema
            )));
        }
        let lease_ms = i64::try_from(self.lease.as_millis())
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "invalid lease {:?}: it must be at least 1 ms",
                    self.lease
                ))
            })?;
        let worker = self
            .worker
            .unwrap_or_else(|| format!("worker-{}", uuid::Uuid::new_v4()));
        let connector = Arc::new(Connector {
            url: self.url,
            schema: self.schema.clone(),
            name: format!("saga {worker}"),
            // PostgreSQL takes at most i32::MAX ms (24.8 days).
            idle_in_transaction_ms: lease_ms.clamp(MIN_IDLE_IN_TRANSACTION_MS, i32::MAX.into()),
        });
        let mut write_conn = connector.open().await?;
        migrate(&mut write_conn, &self.schema, self.create).await?;
        let reader = connector.open().await?;
        let owner = Arc::new(Ownership {
            worker,
            lease_ms,
            holdings: Mutex::new(HashMap::new()),
            writing: AtomicBool::new(true),
        });
        let stats = Arc::new(Counters::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let statements = Writer::prepare(write_conn, Arc::clone(&connector)).await?;
        tokio::spawn(writer(
            statements,
            rx,
            Arc::clone(&owner),
            Arc::clone(&stats),
        ));
        let renew_conn = connector.open().await?;
        let renewer = tokio::spawn(renew(
            renew_conn,
            Arc::clone(&connector),
            Arc::clone(&owner),
        ));
        Ok(PostgresStore {
            shared: Arc::new(Shared {
                reader: std::sync::RwLock::new(Arc::new(reader)),
                reconnecting: tokio::sync::Mutex::new(()),
                connector,
                writer: tx,
                owner,
                schema: self.schema,
                stats,
                renewer,
            }),
        })
    }
}

/// One append: its records, encoded, and what it changes in the summary.
struct Append {
    id: SagaId,
    seqs: Vec<i64>,
    at_ms: Vec<i64>,
    bodies: Vec<String>,
    created: Option<(String, i64)>,
    state: Option<(SagaState, i64)>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The error as the caller sees it.
fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("PostgreSQL: {}", describe(&e)))
}

/// What went wrong, in full: tokio-postgres's own text is a bare label
/// ("db error", "error connecting to server"), with the server's message or
/// the cause in its source.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        // The server's own rendering (severity, message, detail, hint),
        // after its error code.
        return format!("[{}] {db}", db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether `e` says the connection is gone: closed, or ended by the server
/// (an administrator, a shutdown, a restart, an idle timeout). The same
/// statement may then succeed on a new connection.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|code| {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
                || *code == SqlState::IDLE_SESSION_TIMEOUT
        })
}

impl PostgresStore {
    /// Configures a store on the database at `url` (a `postgres://` URL or
    /// a `key=value` connection string).
    pub fn builder(url: impl Into<String>) -> PostgresBuilder {
        PostgresBuilder {
            url: url.into(),
            schema: "saga".into(),
            worker: None,
            lease: Duration::from_secs(15),
            create: true,
        }
    }

    /// This worker's id.
    pub fn worker(&self) -> &str {
        &self.shared.owner.worker
    }

    /// The schema that holds the store's tables.
    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// Records and transactions written since the store was connected.
    pub fn stats(&self) -> CommitStats {
        self.shared.stats.read()
    }

    /// Encodes `records` and hands them to the writer; the receiver answers
    /// once they are durable.
    fn enqueue(&self, records: Vec<Record>) -> Result<Option<Answer>, StoreError> {
        let Some(encoded) = Encoded::of(&records)? else {
            return Ok(None);
        };
        let n = encoded.records.len();
        let (mut seqs, mut at_ms, mut bodies) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (seq, at, body) in encoded.records {
            seqs.push(seq);
            at_ms.push(at);
            bodies.push(body);
        }
        let (reply, answer) = oneshot::channel();
        self.shared
            .writer
            .send(Append {
                id: encoded.id,
                seqs,
                at_ms,
                bodies,
                created: encoded.created,
                state: encoded.state,
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        Ok(Some(answer))
    }

    /// Runs one statement on the reading connection and, if that
    /// connection was lost under it (the server restarted, an administrator
    /// ended it), once more on a new one, instead of failing the caller.
    /// Every statement run here may run twice: reads, claims (a second
    /// claim only renews the first) and releases (a second matches nothing).
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let reader = self.reader().await?;
        match reader.query(sql, params).await {
            Err(e) if connection_lost(&e) => {
                let reader = self.replace_reader(&reader).await?;
                reader.query(sql, params).await.map_err(backend)
            }
            rows => rows.map_err(backend),
        }
    }

    /// The reading connection, replaced by a new one if it is known to be
    /// lost.
    async fn reader(&self) -> Result<Arc<Client>, StoreError> {
        let current = {
            let reader = self.shared.reader.read().unwrap_or_else(|p| p.into_inner());
            Arc::clone(&reader)
        };
        if current.is_closed() {
            return self.replace_reader(&current).await;
        }
        Ok(current)
    }

    /// Replaces the reading connection `lost` with a new one, unless
    /// another caller did meanwhile, and returns the current one.
    async fn replace_reader(&self, lost: &Arc<Client>) -> Result<Arc<Client>, StoreError> {
        let _one_at_a_time = self.shared.reconnecting.lock().await;
        let current = {
            let reader = self.shared.reader.read().unwrap_or_else(|p| p.into_inner());
            Arc::clone(&reader)
        };
        if !Arc::ptr_eq(&current, lost) {
            return Ok(current);
        }
        let fresh = Arc::new(self.shared.connector.open().await?);
        let mut reader = self
            .shared
            .reader
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *reader = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// The records of the sagas `ids`, grouped by saga, each in `seq` order.
    async fn records_of(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<HashMap<uuid::Uuid, Vec<StoredRecord>>, StoreError> {
        let rows = self
            .query(
                "SELECT saga_id, seq, at_ms, body FROM records
                 WHERE saga_id = ANY($1) ORDER BY saga_id, seq",
                &[&ids],
            )
            .await?;
        let mut by_saga: HashMap<uuid::Uuid, Vec<StoredRecord>> = HashMap::new();
        for row in rows {
            by_saga.entry(row.get(0)).or_default().push(StoredRecord {
                seq: row.get::<_, i64>(1) as u64,
                at_ms: row.get::<_, i64>(2) as u64,
                body: row.get(3),
            });
        }
        Ok(by_saga)
    }
}

/// Opens connections to the store's database, each working in its schema
/// and named after the worker (`application_name`, as `pg_stat_activity`
/// shows it).
///
/// The server ends a session of this store that stays idle inside a
/// transaction for as long as a lease (`idle_in_transaction_ms`): a worker
/// frozen or cut off from the network mid-transaction would otherwise hold
/// its row locks until TCP gave up on it (hours), and every other worker's
/// claim of those sagas would wait as long. The store's own transactions
/// send their statements back to back and are never idle that long.
struct Connector {
    url: String,
    schema: String,
    name: String,
    idle_in_transaction_ms: i64,
}

/// The shortest idle-in-transaction limit, whatever the lease: a loaded
/// machine may be slow between a transaction's statements for some
/// milliseconds, and must not lose its session for it.
const MIN_IDLE_IN_TRANSACTION_MS: i64 = 1_000;

impl Connector {
    /// A new connection (its driver runs on a task of its own, until the
    /// client is dropped).
    async fn open(&self) -> Result<Client, StoreError> {
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
        config.application_name(&self.name);
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            StoreError::Backend(format!("cannot connect to PostgreSQL: {}", describe(&e)))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(error = %e, "saga store: PostgreSQL connection failed");
            }
        });
        client
            .batch_execute(&format!(
                "SET search_path TO \"{}\"; SET idle_in_transaction_session_timeout = {}",
                self.schema, self.idle_in_transaction_ms
            ))
            .await
            .map_err(backend)?;
        Ok(client)
    }
}

/// Creates or migrates the store's tables in `schema`; with `create`
/// false, refuses a schema that holds no saga log instead.
async fn migrate(client: &mut Client, schema: &str, create: bool) -> Result<(), StoreError> {
    if !create {
        let found = client
            .query_opt(
                "SELECT 1 FROM information_schema.tables
                 WHERE table_schema = $1 AND table_name = 'saga_schema'",
                &[&schema],
            )
            .await
            .map_err(backend)?;
        if found.is_none() {
            return Err(StoreError::Backend(format!(
                "PostgreSQL schema `{schema}` holds no saga log"
            )));
        }
    }
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         CREATE TABLE IF NOT EXISTS saga_schema (version integer NOT NULL)"
    ))
    .await
    .map_err(backend)?;
    let found: i32 = tx
        .query_opt("SELECT version FROM saga_schema", &[])
        .await
        .map_err(backend)?
        .map_or(0, |row| row.get(0));
    if found > SCHEMA_VERSION {
        // Ended here, not when dropped (which only queues the rollback), so
        // that the lock is free by the time the error reaches the caller.
        tx.rollback().await.map_err(backend)?;
        return Err(StoreError::SchemaTooNew {
            path: format!("PostgreSQL schema `{schema}`"),
            found: i64::from(found),
            supported: i64::from(SCHEMA_VERSION),
        });
    }
    if found == SCHEMA_VERSION {
        return tx.commit().await.map_err(backend);
    }
    if !create {
        // A tool that reads logs does not upgrade one that older workers
        // may still be writing.
        tx.rollback().await.map_err(backend)?;
        return Err(StoreError::Backend(format!(
            "PostgreSQL schema `{schema}` holds a saga log at schema version {found}, older than \
             this version's {SCHEMA_VERSION}: a worker of this version upgrades it when it \
             connects, once every worker writing it runs this version"
        )));
    }
    let Ok(from) = usize::try_from(found) else {
        tx.rollback().await.map_err(backend)?;
        return Err(StoreError::Backend(format!(
            "PostgreSQL schema `{schema}`: invalid schema version {found}"
        )));
    };
    for step in &MIGRATIONS[from..] {
        tx.batch_execute(step).await.map_err(backend)?;
    }
    tx.execute("DELETE FROM saga_schema", &[])
        .await
        .map_err(backend)?;
    tx.execute(
        "INSERT INTO saga_schema (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(backend)?;
    tx.commit().await.map_err(backend)
}

/// Renews this worker's leases every third of the lease: those of the
/// sagas it holds (not every saga it owns: one recovery took but could not
/// run is left to lapse), locked in id order. While the writer's
/// connection is down nothing is renewed, so that another worker takes
/// what this one cannot write.
async fn renew(mut client: Client, connector: Arc<Connector>, owner: Arc<Ownership>) {
    let every = Duration::from_millis((owner.lease_ms / 3).max(1) as u64);
    loop {
        tokio::time::sleep(every).await;
        if !owner.writing.load(Ordering::Relaxed) {
            continue;
        }
        let held = owner.held();
        if held.is_empty() {
            continue;
        }
        if client.is_closed() {
            match connector.open().await {
                Ok(fresh) => client = fresh,
                Err(e) => {
                    tracing::warn!(error = %e, "saga store: cannot reconnect to renew leases");
                    continue;
                }
            }
        }
        let renewed = client
            .execute(
                "UPDATE sagas SET lease_until = now() + interval '1 millisecond' * $3::bigint
                 WHERE id IN (SELECT id FROM sagas WHERE id = ANY($1) ORDER BY id FOR UPDATE)
                   AND owner = $2 AND state = 'running'",
                &[&held, &owner.worker, &owner.lease_ms],
            )
            .await;
        if let Err(e) = renewed {
            tracing::warn!(error = %e, worker = %owner.worker, "saga store: cannot renew leases");
        }
    }
}

/// The writer's connection, and its statements, prepared once per
/// connection.
struct Writer {
    client: Client,
    round: tokio_postgres::Statement,
    connector: Arc<Connector>,
}

impl Writer {
    async fn prepare(client: Client, connector: Arc<Connector>) -> Result<Writer, StoreError> {
        Ok(Writer {
            round: client.prepare(WRITE_ROUND).await.map_err(backend)?,
            client,
            connector,
        })
    }

    /// Replaces a lost connection.
    async fn reconnect(&mut self) -> Result<(), StoreError> {
        let client = self.connector.open().await?;
        let connector = Arc::clone(&self.connector);
        *self = Writer::prepare(client, connector).await?;
        Ok(())
    }
}

/// The writer: takes every append waiting, writes them in one transaction,
/// then answers each.
async fn writer(
    mut client: Writer,
    mut rx: mpsc::UnboundedReceiver<Append>,
    owner: Arc<Ownership>,
    stats: Arc<Counters>,
) {
    // After a failed reconnect, tried again every third of a lease even
    // with nothing to write: the leases of the sagas this worker runs are
    // renewed only while it can write, and would otherwise lapse for good
    // after an outage however soon the server is back.
    let retry_every = Duration::from_millis((owner.lease_ms / 3).max(1) as u64);
    loop {
        let first = if owner.writing.load(Ordering::Relaxed) {
            rx.recv().await
        } else {
            match tokio::time::timeout(retry_every, rx.recv()).await {
                Ok(first) => first,
                Err(_) => {
                    if client.reconnect().await.is_ok() {
                        owner.writing.store(true, Ordering::Relaxed);
                    }
                    continue;
                }
            }
        };
        let Some(first) = first else {
            break;
        };
        let mut appends = vec![first];
        while appends.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(append) => appends.push(append),
                Err(_) => break,
            }
        }
        // In saga order (stable: each saga's appends keep theirs), so that
        // concurrent transactions lock rows in one order and never deadlock.
        // All commit together, so their order across sagas does not matter.
        appends.sort_by_key(|a| a.id);
        if client.client.is_closed()
            && let Err(e) = client.reconnect().await
        {
            // Leases lapse meanwhile, so that another worker takes what
            // this one cannot write.
            owner.writing.store(false, Ordering::Relaxed);
            for append in appends {
                let _ = append.reply.send(Err(e.clone()));
            }
            continue;
        }
        owner.writing.store(true, Ordering::Relaxed);
        write_appends(&mut client, appends, &owner, &stats).await;
    }
    owner.writing.store(false, Ordering::Relaxed);
}

async fn write_appends(
    client: &mut Writer,
    appends: Vec<Append>,
    owner: &Ownership,
    stats: &Counters,
) {
    // The fast path writes every append in one transaction, with one
    // statement per round (one append per saga each). If that fails (an
    // append with a conflicting record aborts it), the batch is written
    // again with one statement per append: an append that fails there
    // aborts the transaction, and the batch is then written again
    // without the failed ones, so one bad append fails alone. An append
    // refused for want of a lease writes nothing and aborts nothing. A
    // deadlock or serialization failure is nobody's fault: the batch is
    // written again as it was, a few times.
    let mut failed: Vec<Option<StoreError>> = appends.iter().map(|_| None).collect();
    let mut by_round = true;
    let mut retries = 0;
    let outcome = loop {
        let rounds = Round::split(&appends, &failed, owner, by_round);
        match write_rounds(client, &appends, &rounds, owner).await {
            Ok(done) => break Ok(done),
            Err(BatchError::Statement(_, e) | BatchError::Transaction(e))
                if transient(&e) && retries < 5 =>
            {
                retries += 1;
            }
            // The connection was lost (the server restarted, say): the
            // batch is written again on a new one. If its commit had
            // reached the server, its records are there, and the second
            // try fails as a conflict: nothing is lost or written twice.
            Err(BatchError::Statement(_, e) | BatchError::Transaction(e))
                if connection_lost(&e) && retries < 5 =>
            {
                retries += 1;
                if let Err(e) = client.reconnect().await {
                    break Err(e);
                }
            }
            // Some append is wrong; which one, the per-append path finds.
            Err(BatchError::Statement(_, e)) if by_round => {
                tracing::debug!(error = %describe(&e), "saga store: batch written again per append");
                by_round = false;
            }
            Err(BatchError::Statement(i, e)) => {
                failed[i] = Some(conflict_or_backend(&appends[i], e));
            }
            Err(BatchError::Transaction(e)) => break Err(backend(e)),
        }
    };
    match outcome {
        Ok(tokens) => {
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            let mut written = 0;
            for ((append, failure), token) in appends.into_iter().zip(failed).zip(tokens) {
                let result = match (failure, token) {
                    (Some(e), _) => Err(e),
                    (None, Some((token, holder))) => {
                        written += append.seqs.len() as u64;
                        // Held on only while the saga stays this worker's
                        // (a stuck saga is nobody's).
                        if holder.as_deref() == Some(owner.worker.as_str()) {
                            owner.hold(append.id, token);
                        } else {
                            owner.release(append.id);
                        }
                        Ok(())
                    }
                    (None, None) => {
                        owner.fence(append.id);
                        Err(StoreError::LeaseLost { saga: append.id })
                    }
                };
                let _ = append.reply.send(result);
            }
            stats.records.fetch_add(written, Ordering::Relaxed);
        }
        Err(error) => {
            for append in appends {
                let _ = append.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Awaits every future at once, returning their outputs in order.
async fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

enum BatchError {
    /// The statement of the round whose first append is `i` failed (for
    /// one of its appends, or all; for append `i` if it is the round's
    /// only one); the transaction was rolled back.
    Statement(usize, tokio_postgres::Error),
    /// The transaction itself failed.
    Transaction(tokio_postgres::Error),
}

/// Per append, the token it was written under and the saga's owner after
/// it (`None` if refused or skipped).
type Written = Vec<Option<(i64, Option<String>)>>;

/// One round's statement, and the rows it returned.
type RoundStatement<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// One [`WRITE_ROUND`] statement: its appends, and its parameters.
#[derive(Default)]
struct Round<'a> {
    /// The indexes of its appends in the batch, in saga order.
    appends: Vec<usize>,
    /// The sagas appended to: id, token, new state, when it changed.
    ids: Vec<uuid::Uuid>,
    tokens: Vec<i64>,
    states: Vec<Option<&'a str>>,
    changed_at: Vec<i64>,
    /// The sagas created: id, name, fingerprint, state, first record's time.
    created: Vec<uuid::Uuid>,
    names: Vec<&'a str>,
    fingerprints: Vec<i64>,
    created_states: Vec<&'a str>,
    created_at: Vec<i64>,
    /// Every record of the round: its saga, seq, time and body.
    record_sagas: Vec<uuid::Uuid>,
    seqs: Vec<i64>,
    at_ms: Vec<i64>,
    bodies: Vec<&'a str>,
}

impl<'a> Round<'a> {
    /// Splits a batch (in saga order) into statements, leaving out the
    /// appends marked failed: by round, round `k` holding the `k`-th append
    /// of each saga, or one append per statement. Every append is written
    /// under the token this worker held when the batch started.
    fn split(
        appends: &'a [Append],
        failed: &[Option<StoreError>],
        owner: &Ownership,
        by_round: bool,
    ) -> Vec<Round<'a>> {
        let mut rounds: Vec<Round<'a>> = Vec::new();
        let mut previous: Option<SagaId> = None;
        let mut k = 0;
        for (i, a) in appends.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            k = if !by_round {
                rounds.len()
            } else if previous == Some(a.id) {
                k + 1
            } else {
                0
            };
            previous = Some(a.id);
            if rounds.len() == k {
                rounds.push(Round::default());
            }
            rounds[k].push(i, a, owner.token(a.id));
        }
        rounds
    }

    fn push(&mut self, i: usize, a: &'a Append, token: i64) {
        let id = a.id.as_uuid();
        self.appends.push(i);
        match &a.created {
            Some((name, fingerprint)) => {
                self.created.push(id);
                self.names.push(name);
                self.fingerprints.push(*fingerprint);
                self.created_states
                    .push(a.state.map_or("running", |(s, _)| s.as_str()));
                self.created_at.push(a.at_ms.first().copied().unwrap_or(0));
            }
            None => {
                self.ids.push(id);
                self.tokens.push(token);
                self.states.push(a.state.map(|(s, _)| s.as_str()));
                self.changed_at.push(a.state.map_or(0, |(_, at)| at));
            }
        }
        self.record_sagas
            .extend(std::iter::repeat_n(id, a.seqs.len()));
        self.seqs.extend_from_slice(&a.seqs);
        self.at_ms.extend_from_slice(&a.at_ms);
        self.bodies.extend(a.bodies.iter().map(String::as_str));
    }
}

/// Writes `rounds` in one transaction, in order, so that every append is
/// checked and written as its own statement would have done it. Returns,
/// per append, the token it was written under and the saga's owner after
/// it (`None` if refused or left out); a statement that fails (a
/// conflicting record, say) fails the whole batch.
async fn write_rounds(
    writer: &mut Writer,
    appends: &[Append],
    rounds: &[Round<'_>],
    owner: &Ownership,
) -> Result<Written, BatchError> {
    let tx = writer
        .client
        .transaction()
        .await
        .map_err(BatchError::Transaction)?;
    let (shared_tx, statement) = (&tx, &writer.round);
    // Every statement is sent before the first answer is awaited: they go
    // out pipelined on the one connection, one round trip for the batch.
    let statements: Vec<RoundStatement<'_>> = rounds
        .iter()
        .map(|r| -> RoundStatement<'_> {
            Box::pin(async move {
                shared_tx
                    .query(
                        statement,
                        &[
                            &owner.worker,
                            &owner.lease_ms,
                            &r.ids,
                            &r.tokens,
                            &r.states,
                            &r.changed_at,
                            &r.created,
                            &r.names,
                            &r.fingerprints,
                            &r.created_states,
                            &r.created_at,
                            &r.record_sagas,
                            &r.seqs,
                            &r.at_ms,
                            &r.bodies,
                        ],
                    )
                    .await
            })
        })
        .collect();
    let mut written = vec![None; appends.len()];
    // After a failed statement the transaction refuses the rest ("in
    // failed SQL transaction"): the first failure is the cause.
    for (round, rows) in rounds.iter().zip(join_all(statements).await) {
        // Dropping the transaction rolls it back.
        let rows = rows.map_err(|e| BatchError::Statement(round.appends[0], e))?;
        for row in rows {
            let id: uuid::Uuid = row.get(0);
            // A round's sagas are distinct and in order.
            if let Ok(at) = round
                .appends
                .binary_search_by_key(&id, |&i| appends[i].id.as_uuid())
            {
                written[round.appends[at]] = Some((row.get(1), row.get(2)));
            }
        }
    }
    tx.commit().await.map_err(BatchError::Transaction)?;
    Ok(written)
}

/// Whether `e` says "try again" rather than "this append is wrong":
/// a deadlock, a serialization failure.
fn transient(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

fn conflict_or_backend(append: &Append, e: tokio_postgres::Error) -> StoreError {
    match (e.code(), append.seqs.first()) {
        (Some(code), Some(seq)) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict {
            saga: append.id,
            seq: *seq as u64,
        },
        _ => backend(e),
    }
}

fn summary(row: &Row) -> Result<SagaSummary, StoreError> {
    let id: uuid::Uuid = row.get(0);
    let state: String = row.get(3);
    Ok(SagaSummary {
        id: SagaId::from(id),
        name: row.get(1),
        fingerprint: row.get::<_, i64>(2) as u64,
        state: SagaState::parse(&state).ok_or_else(|| {
            StoreError::Backend(format!("saga {id} has an invalid state `{state}`"))
        })?,
        created_ms: row.get::<_, i64>(4) as u64,
        updated_ms: row.get::<_, i64>(5) as u64,
    })
}

impl Store for PostgresStore {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>> {
        answered(self.enqueue(records))
    }

    fn load(&self, id: SagaId) -> BoxFuture<'_, Result<Option<StoredSaga>, StoreError>> {
        Box::pin(async move {
            // One statement, so the summary and the records agree.
            let rows = self
                .query(
                    "SELECT s.id, s.name, s.fingerprint, s.state, s.created_ms, s.updated_ms,
                            r.seq, r.at_ms, r.body
                     FROM sagas s LEFT JOIN records r ON r.saga_id = s.id
                     WHERE s.id = $1 ORDER BY r.seq",
                    &[&id.as_uuid()],
                )
                .await?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            let summary = summary(first)?;
            let records = rows
                .iter()
                .filter_map(|row| {
                    let seq: Option<i64> = row.get(6);
                    Some(StoredRecord {
                        seq: seq? as u64,
                        at_ms: row.get::<_, i64>(7) as u64,
                        body: row.get(8),
                    })
                })
                .collect();
            Ok(Some(StoredSaga { summary, records }))
        })
    }

    /// The unfinished sagas this worker takes: those that are free, its
    /// own, or whose lease expired, in id order. A saga another worker
    /// holds under a live lease is not listed (that worker runs it).
    fn unfinished_page(
        &self,
        after: Option<SagaId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>> {
        Box::pin(async move {
            let owner = &self.shared.owner;
            let mut cursor = after.map(|id| id.as_uuid());
            let mut sagas = Vec::new();
            // Until the page is full or no candidate follows: a candidate
            // taken by another worker meanwhile leaves a gap, and a page
            // short of `limit` must mean that none follows.
            while sagas.len() < limit {
                let wanted = limit - sagas.len();
                let candidates: Vec<uuid::Uuid> = self
                    .query(
                        CANDIDATES,
                        &[
                            &cursor,
                            &owner.worker,
                            &i64::try_from(wanted).unwrap_or(i64::MAX),
                        ],
                    )
                    .await?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                let Some(&last) = candidates.last() else {
                    break;
                };
                let claimed = self
                    .query(CLAIM, &[&candidates, &owner.worker, &owner.lease_ms])
                    .await?;
                for row in &claimed {
                    let summary = summary(row)?;
                    owner.claimed(summary.id, row.get(6));
                    sagas.push(summary);
                }
                if candidates.len() < wanted {
                    break;
                }
                cursor = Some(last);
            }
            sagas.sort_by_key(|s| s.id);
            let ids: Vec<uuid::Uuid> = sagas.iter().map(|s| s.id.as_uuid()).collect();
            let mut records = self.records_of(&ids).await?;
            Ok(sagas
                .into_iter()
                .map(|summary| StoredSaga {
                    records: records.remove(&summary.id.as_uuid()).unwrap_or_default(),
                    summary,
                })
                .collect())
        })
    }

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        Box::pin(async move {
            let state = filter.state.map(|s| s.as_str());
            let created_after = filter.created_after_ms.map(|t| t as i64);
            let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
            let rows = self
                .query(
                    &format!(
                        "SELECT {SUMMARY_COLUMNS} FROM sagas
                         WHERE ($1::text IS NULL OR state = $1)
                           AND ($2::text IS NULL OR name = $2)
                           AND ($3::bigint IS NULL OR created_ms >= $3)
                         ORDER BY created_ms DESC, id DESC
                         LIMIT $4"
                    ),
                    &[&state, &filter.name, &created_after, &limit],
                )
                .await?;
            rows.iter().map(summary).collect()
        })
    }

    fn prune(&self, before_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
            // Not through `query`: a delete that committed before its
            // connection was lost would count nothing the second time.
            let rows = self
                .reader()
                .await?
                .query(
                    "WITH gone AS (
                         DELETE FROM sagas
                         WHERE state IN ('completed', 'compensated') AND updated_ms < $1
                         RETURNING id
                     ), records_gone AS (
                         DELETE FROM records WHERE saga_id IN (SELECT id FROM gone)
                     )
                     SELECT count(*) FROM gone",
                    &[&before],
                )
                .await
                .map_err(backend)?;
            Ok(rows.first().map_or(0, |row| row.get::<_, i64>(0) as u64))
        })
    }

    fn resuming(&self, id: SagaId) {
        self.shared.owner.resuming(id);
    }

    fn release(&self, id: SagaId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let owner = &self.shared.owner;
            let token = owner.token(id);
            owner.release(id);
            self.query(
                "UPDATE sagas SET owner = NULL, lease_until = NULL
                 WHERE id = $1 AND owner = $2 AND token = $3",
                &[&id.as_uuid(), &owner.worker, &token],
            )
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session of the store left idle inside a transaction (its worker
    /// frozen, or cut off from the network) is ended by the server, which
    /// frees the rows it locked. Uses the server at `DATABASE_URL`.
    #[tokio::test]
    async fn a_session_left_idle_in_a_transaction_is_ended_by_the_server() {
        let connector = Connector {
            url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".into()),
            schema: "public".into(),
            name: "saga idle-in-transaction test".into(),
            idle_in_transaction_ms: 200,
        };
        let client = connector.open().await.expect("PostgreSQL at DATABASE_URL");
        client.batch_execute("BEGIN; SELECT 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let after = client.batch_execute("SELECT 1").await;
        assert!(
            after.as_ref().is_err_and(connection_lost) && client.is_closed(),
            "the session outlived its idle transaction: {after:?}"
        );
    }
}
