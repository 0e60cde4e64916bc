//! The transfer application: the saga, the validation of requests, and a
//! run of many transfers with its invariant check. `main.rs` is only its
//! command line; the tests drive this module directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use saga::log::Record;
use saga::log::SagaState;
use saga::prelude::*;
use saga::store::{BoxFuture, ListFilter, SagaSummary, SqliteStore, Store, StoreError, StoredSaga};
use saga::{Event, EventKind, Listener, SagaId};
use serde::{Deserialize, Serialize};

use crate::bank::{self, Bank, BankError, CreditId, HoldId};

/// Where an account is: bank `A` or `B`, and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Account {
    /// `'A'` or `'B'`.
    pub bank: char,
    /// The account number.
    pub number: u32,
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.bank, self.number)
    }
}

/// One transfer of `amount` cents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// The payer.
    pub from: Account,
    /// The payee.
    pub to: Account,
    /// Cents; positive.
    pub amount: i64,
}

/// Why a request was refused before any saga started.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Zero or negative.
    #[error("the amount must be a positive number of cents, not {0}")]
    NotPositive(i64),
    /// Larger than any balance could hold.
    #[error("the amount {0} is too large")]
    TooLarge(i64),
    /// Payer and payee are one account.
    #[error("cannot transfer from account {0} to itself")]
    SameAccount(Account),
    /// No such bank or account.
    #[error("there is no account {0}")]
    UnknownAccount(Account),
}

/// The largest amount one transfer may move: keeps every balance far from
/// overflow whatever the number of transfers.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// The two banks, the transfer saga's services.
pub struct Transfer {
    a: Bank,
    b: Bank,
}

impl Transfer {
    fn bank(&self, name: char) -> &Bank {
        if name == 'A' { &self.a } else { &self.b }
    }

    /// Checks a request against the banks before a saga is started.
    pub fn validate(&self, request: &TransferRequest) -> Result<(), Invalid> {
        if request.amount <= 0 {
            return Err(Invalid::NotPositive(request.amount));
        }
        if request.amount > MAX_AMOUNT {
            return Err(Invalid::TooLarge(request.amount));
        }
        if request.from == request.to {
            return Err(Invalid::SameAccount(request.from));
        }
        for account in [request.from, request.to] {
            let known = matches!(account.bank, 'A' | 'B')
                && self
                    .bank(account.bank)
                    .has_account(account.number)
                    .unwrap_or(false);
            if !known {
                return Err(Invalid::UnknownAccount(account));
            }
        }
        Ok(())
    }
}

// Ten attempts a bank call: a call whose reply was lost may have taken
// effect, so if every attempt after it fails the saga is stuck (it cannot
// roll back without the answer); under the fault rates the tests use, five
// attempts left about one transfer in three hundred stuck.
#[saga(input = TransferRequest, name = "transfer")]
impl Transfer {
    /// Reserve the amount at the payer's bank.
    #[step(compensate = release_hold, retry(attempts = 10, backoff = exponential("2ms", "50ms"), timeout = "100ms"))]
    async fn hold(&self, input: &TransferRequest, cx: &StepContext) -> Result<HoldId, BankError> {
        let key = cx.idempotency_key().to_string();
        self.bank(input.from.bank)
            .hold(input.from.number, input.amount, &key)
            .await
    }

    /// Release the hold.
    async fn release_hold(&self, hold: &HoldId, cx: &StepContext) -> Result<(), BankError> {
        let key = cx.idempotency_key().to_string();
        self.bank(hold.0).release(*hold, &key).await
    }

    /// Credit the payee's account.
    #[step(compensate = reverse_credit, retry(attempts = 10, backoff = exponential("2ms", "50ms"), timeout = "100ms"))]
    async fn credit(
        &self,
        input: &TransferRequest,
        hold: &HoldId,
        cx: &StepContext,
    ) -> Result<CreditId, BankError> {
        debug_assert_eq!(hold.0, input.from.bank);
        let key = cx.idempotency_key().to_string();
        self.bank(input.to.bank)
            .credit(input.to.number, input.amount, &key)
            .await
    }

    /// Take back the credit.
    async fn reverse_credit(&self, credit: &CreditId, cx: &StepContext) -> Result<(), BankError> {
        let key = cx.idempotency_key().to_string();
        self.bank(credit.0).reverse(*credit, &key).await
    }

    /// Capture the hold: the point of no return.
    #[step(pivot, retry(attempts = 10, backoff = exponential("2ms", "50ms"), timeout = "100ms"))]
    async fn capture(&self, hold: &HoldId, cx: &StepContext) -> Result<(), BankError> {
        let key = cx.idempotency_key().to_string();
        self.bank(hold.0).capture(*hold, &key).await
    }

    /// Tell the payee; retried until it succeeds.
    #[step(retry(attempts = forever, backoff = exponential("2ms", "50ms"), timeout = "100ms"))]
    async fn notify(&self, credit: &CreditId, cx: &StepContext) -> Result<(), BankError> {
        let key = cx.idempotency_key().to_string();
        self.bank(credit.0).notify(*credit, &key).await
    }
}

/// What a run does.
#[derive(Clone, Debug)]
pub struct Config {
    /// Accounts per bank.
    pub accounts: u32,
    /// Transfers to make.
    pub transfers: u64,
    /// Sagas in flight at once.
    pub concurrency: usize,
    /// Chance that a bank call fails (retryable).
    pub step_error_rate: f64,
    /// Chance that a bank call takes effect but its reply is lost (the step
    /// times out and is retried under the same key).
    pub timeout_rate: f64,
    /// Chance that a compensating call fails (retryable).
    pub compensation_error_rate: f64,
    /// Abort the process after this many durable log records.
    pub crash_after: Option<u64>,
    /// Resume an earlier run's data instead of starting afresh.
    pub recover: bool,
    /// With `recover`: after recovery, resume every stuck transfer once.
    pub resume_stuck: bool,
    /// Where the three database files live.
    pub data_dir: PathBuf,
    /// Seeds the transfers and the faults.
    pub seed: u64,
}

/// Every account opens with this many cents.
pub const OPENING_BALANCE: i64 = 100_000;

/// The most accounts a bank may have (`--accounts`): each is a row made
/// when the bank opens, so more would only make a long wait.
pub const MAX_ACCOUNTS: u32 = 1_000_000;

/// The most transfers in flight at once (`--concurrency`).
pub const MAX_CONCURRENCY: usize = 100_000;

/// Why a rate of 1 for each fault flag would never let a run end.
pub const STEP_ERRORS_FOREVER: &str =
    "every bank call would fail, and a transfer past its pivot retries its last step forever";
/// See [`STEP_ERRORS_FOREVER`].
pub const TIMEOUTS_FOREVER: &str =
    "no bank call would ever be answered, so every transfer would end stuck";
/// See [`STEP_ERRORS_FOREVER`].
pub const COMPENSATION_ERRORS_FOREVER: &str = "a compensation that always fails is retried forever";

/// `rate` if it is at least 0 and below 1; else `why` it could not be.
pub fn below_one(rate: f64, why: &str) -> Result<f64, String> {
    if (0.0..1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("`{rate}`: {why}; give a rate below 1"))
    }
}

impl Config {
    /// Refuses what the run could not do, before anything is created or
    /// deleted: counts out of range, rates that would never let it end, or
    /// a data directory that is a file.
    fn check(&self) -> Result<(), String> {
        if !(2..=MAX_ACCOUNTS).contains(&self.accounts) {
            return Err(format!(
                "--accounts must be from 2 to {MAX_ACCOUNTS}, not {}",
                self.accounts
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(format!(
                "--concurrency must be from 1 to {MAX_CONCURRENCY}, not {}",
                self.concurrency
            ));
        }
        for (flag, rate, why) in [
            (
                "--step-error-rate",
                self.step_error_rate,
                STEP_ERRORS_FOREVER,
            ),
            ("--timeout-rate", self.timeout_rate, TIMEOUTS_FOREVER),
            (
                "--compensation-error-rate",
                self.compensation_error_rate,
                COMPENSATION_ERRORS_FOREVER,
            ),
        ] {
            below_one(rate, why).map_err(|e| format!("{flag} {e}"))?;
        }
        if self.resume_stuck && !self.recover {
            return Err("--resume-stuck resumes an earlier run's stuck transfers: \
                        give it with --recover"
                .into());
        }
        let dir = &self.data_dir;
        if dir.exists() && !dir.is_dir() {
            return Err(format!(
                "--data-dir {}: not a directory (it is a file; give a directory, \
                 which is made if missing)",
                dir.display()
            ));
        }
        Ok(())
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Summary {
    /// Transfers asked for.
    pub transfers: u64,
    /// Requests refused before a saga started.
    pub rejected: u64,
    /// Sagas in the log by state.
    pub completed: u64,
    /// Compensated sagas.
    pub compensated: u64,
    /// Stuck sagas.
    pub stuck: u64,
    /// Sagas still running (zero after a full run).
    pub unfinished: u64,
    /// Sagas this process resumed from an earlier run.
    pub recovered: u64,
    /// Stuck sagas this process resumed (`--resume-stuck`).
    pub resumed_stuck: u64,
    /// One stuck saga, to inspect.
    pub stuck_example: Option<SagaId>,
    /// Failed attempts that were retried, in this process.
    pub retries: u64,
    /// Wall time of this process's work.
    pub elapsed: Duration,
    /// Sagas this process ran to an end.
    pub ran: u64,
    /// Money in both banks at the start.
    pub money_before: i64,
    /// Money in both banks at the end.
    pub money_after: i64,
    /// Holds still open at the end.
    pub open_holds: i64,
    /// One saga id, to inspect.
    pub example: Option<SagaId>,
}

impl Summary {
    /// No money created or lost, no hold open, every saga finished.
    pub fn whole(&self) -> bool {
        self.money_before == self.money_after
            && self.open_holds == 0
            && self.unfinished == 0
            && self.stuck == 0
    }
}

/// Counts retries across every saga.
struct Retries(Arc<AtomicU64>);

impl Listener for Retries {
    fn on_event(&self, event: &Event<'_>) {
        if let EventKind::StepFailed {
            will_retry: true, ..
        }
        | EventKind::CompensationFailed {
            will_retry: true, ..
        } = event.kind
        {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The saga log, aborting the process once `limit` records are durable
/// (`--crash-after`): the crash a test or a curious person asks for.
#[derive(Clone)]
struct CrashAfter {
    inner: SqliteStore,
    limit: Option<u64>,
}

impl CrashAfter {
    fn check(&self) {
        if let Some(limit) = self.limit
            && self.inner.stats().records >= limit
        {
            // Checked as each append becomes durable, so the log may have
            // passed the limit by a batch (or, at 0, by the first one);
            // what it knows is the count written, at least the limit.
            eprintln!(
                "\n--crash-after {limit}: aborting once the log holds at least {limit} records \
                 ({} written)",
                self.inner.stats().records
            );
            std::process::abort();
        }
    }
}

impl Store for CrashAfter {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>> {
        let durable = self.inner.append(records);
        Box::pin(async move {
            durable.await?;
            self.check();
            Ok(())
        })
    }
    fn load(&self, id: SagaId) -> BoxFuture<'_, Result<Option<StoredSaga>, StoreError>> {
        self.inner.load(id)
    }
    fn unfinished_page(
        &self,
        after: Option<SagaId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredSaga>, StoreError>> {
        self.inner.unfinished_page(after, limit)
    }
    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        self.inner.list(filter)
    }
    fn prune(&self, before_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.prune(before_ms)
    }
}

/// Opens (or creates) both banks of `config`.
pub fn open_banks(config: &Config) -> Result<Transfer, String> {
    let faults = bank::Faults {
        outage: config.step_error_rate,
        lost_reply: config.timeout_rate,
        compensation_outage: config.compensation_error_rate,
    };
    let open = |name: char, file: &str, salt: u64| {
        let path = config.data_dir.join(file);
        Bank::open(
            name,
            &path,
            config.accounts,
            OPENING_BALANCE,
            faults,
            config.seed ^ salt,
        )
        .map_err(|e| format!("bank {name}: {e}"))
    };
    Ok(Transfer {
        a: open('A', "bank-a.db", 0xA)?,
        b: open('B', "bank-b.db", 0xB)?,
    })
}

/// A transfer worth inspecting: one that was rolled back after a bank took
/// part (so its timeline shows compensations), else any.
async fn example(store: &SqliteStore, sagas: &[SagaSummary]) -> Option<SagaId> {
    let rolled_back = sagas.iter().filter(|s| s.state == SagaState::Compensated);
    for s in rolled_back.take(200) {
        if let Ok(Some(log)) = store.load(s.id).await
            && log
                .records
                .iter()
                .any(|r| r.body.contains("compensation_succeeded"))
        {
            return Some(s.id);
        }
    }
    sagas.first().map(|s| s.id)
}

/// The saga log's file in `dir`.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("sagas.db")
}

/// The id of transfer `n` of a run seeded with `seed`: the same on every
/// run, so a recovering run knows which transfers were already started.
pub fn transfer_id(seed: u64, n: u64) -> SagaId {
    SagaId::from_u128((u128::from(bank::hash(seed)) << 64) | u128::from(n))
}

/// Transfer `n` of a run: mostly small amounts between random accounts of
/// either bank; one in twenty asks more than an account holds (refused by
/// the bank, so rolled back); one in a hundred is invalid (refused before
/// any saga starts).
pub fn request(config: &Config, n: u64) -> TransferRequest {
    let x = bank::hash(config.seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let account = |bits: u64| Account {
        bank: if bits & 1 == 0 { 'A' } else { 'B' },
        number: ((bits >> 1) % u64::from(config.accounts.max(1))) as u32,
    };
    let from = account(x);
    let mut to = account(x >> 20);
    let amount = match x % 100 {
        0 => 0,
        1..=5 => OPENING_BALANCE * 50,
        _ => ((x >> 40) % 5_000) as i64 + 1,
    };
    if to == from && x % 100 != 1 {
        to.number = (to.number + 1) % config.accounts.max(1);
    }
    TransferRequest { from, to, amount }
}

/// What defines a run's transfers and its money: a recovery must make the
/// same, or it would start other transfers and count other money.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct RunKey {
    accounts: u32,
    transfers: u64,
    seed: u64,
}

/// Records a new run's key in its data directory, or checks that a
/// recovery's matches the run it finishes.
fn same_run(config: &Config) -> Result<(), String> {
    let path = config.data_dir.join("run.json");
    let key = RunKey {
        accounts: config.accounts,
        transfers: config.transfers,
        seed: config.seed,
    };
    let record = || {
        let text = serde_json::to_string(&key).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    if !config.recover {
        return record();
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        // A run by an earlier version of this example, which kept no key
        // (`run_announced` refused a directory with no log either):
        // trusted as the flags say.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return record(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let earlier: RunKey =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if earlier != key {
        return Err(format!(
            "the run in {} was started with --accounts {} --transfers {} --seed {}: \
             recover it with the same",
            config.data_dir.display(),
            earlier.accounts,
            earlier.transfers,
            earlier.seed
        ));
    }
    Ok(())
}

/// Opens the saga log of `config`, which takes its lock (see
/// [`SqliteStore`]) for as long as the run lasts: a second run on the same
/// directory is refused here, before it touches anything.
fn open_log(config: &Config) -> Result<SqliteStore, String> {
    let path = log_path(&config.data_dir);
    SqliteStore::open(&path).map_err(|e| match e {
        StoreError::InUse { holder, .. } => {
            let who = match holder {
                Some(pid) if pid == std::process::id() => "this process".to_string(),
                Some(pid) => format!("another run of it (pid {pid})"),
                None => "another process".to_string(),
            };
            format!(
                "{} is in use by {who}: wait for it to end, or give another --data-dir; \
                 nothing was changed",
                config.data_dir.display()
            )
        }
        e if config.recover => e.to_string(),
        // Not deleted: what cannot be read may still be wanted.
        e => format!(
            "{e}: not deleted; delete the data dir {} to start over",
            config.data_dir.display()
        ),
    })
}

/// For a fresh run: refuses a log an earlier run left with transfers
/// unfinished (a crash: `--recover` finishes them) or stuck (they need an
/// operator), then empties it of the finished ones and deletes the banks.
/// The log stays open, and locked, throughout, so no other run can start
/// on the directory between the check and the cleaning.
async fn start_afresh(config: &Config, store: &SqliteStore) -> Result<(), String> {
    let count = |state| async move {
        store
            .list(ListFilter::in_state(state))
            .await
            .map(|sagas| sagas.len())
            .map_err(|e| e.to_string())
    };
    let dir = config.data_dir.display();
    let unfinished = count(SagaState::Running).await?;
    if unfinished > 0 {
        return Err(format!(
            "{dir} has {unfinished} unfinished transfers from an earlier run: finish them with \
             --recover, or delete the data dir to start over"
        ));
    }
    let stuck = count(SagaState::Stuck).await?;
    if stuck > 0 {
        return Err(format!(
            "{dir} has {stuck} stuck transfers from an earlier run, which need an operator: \
             fix what made them stuck and finish them with --recover --resume-stuck, or delete \
             the data dir to start over"
        ));
    }
    // Every saga left is finished: the log is emptied in place, not
    // deleted, as this store holds it (and its lock).
    store
        .prune(i64::MAX as u64)
        .await
        .map_err(|e| e.to_string())?;
    for file in ["bank-a.db", "bank-b.db"] {
        for suffix in ["", "-wal", "-shm"] {
            let path = config.data_dir.join(format!("{file}{suffix}"));
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Runs `config`: opens (or, with `recover`, reopens) the banks and the
/// log, resumes what an earlier run left unfinished (and, with
/// `resume_stuck`, what it left stuck), starts every transfer not yet
/// started, and checks the invariant. `progress` is told of each saga that
/// ends.
///
/// A fresh run refuses a data directory another run is using, or whose log
/// has unfinished or stuck transfers, and then changes nothing.
#[allow(dead_code)] // the tests' entry point; `main` announces its run
pub async fn run(
    config: &Config,
    progress: impl Fn(&Summary) + Send + Sync + 'static,
) -> Result<Summary, String> {
    run_announced(config, || Ok(()), progress).await
}

/// [`run`], calling `announce` once the run is sure to go ahead: after the
/// checks that refuse it, before the first transfer.
pub async fn run_announced(
    config: &Config,
    announce: impl FnOnce() -> Result<(), String>,
    progress: impl Fn(&Summary) + Send + Sync + 'static,
) -> Result<Summary, String> {
    config.check()?;
    if config.recover {
        // Checked before the log is opened, which would make one.
        let dir = &config.data_dir;
        if !dir.join("run.json").is_file() && !log_path(dir).is_file() {
            let why = if dir.exists() {
                "no earlier run there"
            } else {
                "no such directory"
            };
            return Err(format!(
                "nothing to recover in {}: {why} (run without --recover first)",
                dir.display()
            ));
        }
    } else {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    }
    let store = open_log(config)?;
    if !config.recover {
        start_afresh(config, &store).await?;
    }
    same_run(config)?;
    announce()?;
    let transfer = Arc::new(open_banks(config)?);
    let money_before = i64::from(config.accounts) * OPENING_BALANCE * 2;

    let retries = Arc::new(AtomicU64::new(0));
    let runtime = Runtime::builder()
        .store(CrashAfter {
            inner: store.clone(),
            limit: config.crash_after,
        })
        .listener(Retries(Arc::clone(&retries)))
        .recovery_concurrency(config.concurrency)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let transfers = runtime.register(Arc::clone(&transfer));

    let started = Instant::now();
    let mut summary = Summary {
        transfers: config.transfers,
        money_before,
        ..Summary::default()
    };
    if config.recover {
        let report = runtime.recover().await.map_err(|e| e.to_string())?;
        if let Some((id, e)) = report.failed.first() {
            return Err(format!("recovery of {id} failed: {e}"));
        }
        summary.recovered = report.resumed() as u64;
    }
    // Transfers (and resumed ones) in flight at once.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(config.concurrency));
    if config.resume_stuck {
        // Every stuck transfer, tried once more: the call that went
        // unanswered is made again under the same key, so a bank that acted
        // answers as it did, and one that did not acts now.
        let stuck = store
            .list(ListFilter::in_state(SagaState::Stuck))
            .await
            .map_err(|e| e.to_string())?;
        let mut resumes = tokio::task::JoinSet::new();
        for s in stuck {
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                break;
            };
            let runtime = runtime.clone();
            resumes.spawn(async move {
                let ended = runtime.resume(s.id).await;
                drop(permit);
                ended.map_err(|e| format!("resuming stuck transfer {}: {e}", s.id))
            });
        }
        while let Some(done) = resumes.join_next().await {
            done.map_err(|e| e.to_string())??;
            summary.resumed_stuck += 1;
        }
    }

    let progress = Arc::new(progress);
    let ran = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..config.transfers {
        let request = request(config, n);
        if transfer.validate(&request).is_err() {
            rejected.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let (transfers, ran, progress, retries) = (
            transfers.clone(),
            Arc::clone(&ran),
            Arc::clone(&progress),
            Arc::clone(&retries),
        );
        let id = transfer_id(config.seed, n);
        tasks.spawn(async move {
            let result = match transfers
                .start_with(request, SagaOptions::new().id(id))
                .await
            {
                Ok(handle) => handle.outcome().await.map(drop),
                // Started by an earlier run; recovery (or --resume-stuck)
                // has taken it to an end, or left it stuck.
                Err(
                    saga::Error::AlreadyStarted { .. }
                    | saga::Error::Store(StoreError::Conflict { .. }),
                ) => Ok(()),
                Err(e) => Err(e),
            };
            drop(permit);
            let done = ran.fetch_add(1, Ordering::Relaxed) + 1;
            progress(&Summary {
                ran: done,
                retries: retries.load(Ordering::Relaxed),
                ..Summary::default()
            });
            result
        });
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    summary.elapsed = started.elapsed();
    summary.ran = ran.load(Ordering::Relaxed);
    summary.rejected = rejected.load(Ordering::Relaxed);
    summary.retries = retries.load(Ordering::Relaxed);

    let sagas = store
        .list(ListFilter::default())
        .await
        .map_err(|e| e.to_string())?;
    for s in &sagas {
        match s.state {
            SagaState::Completed => summary.completed += 1,
            SagaState::Compensated => summary.compensated += 1,
            SagaState::Stuck => {
                summary.stuck += 1;
                summary.stuck_example.get_or_insert(s.id);
            }
            SagaState::Running => summary.unfinished += 1,
        }
    }
    summary.example = example(&store, &sagas).await;
    let (a, b) = (
        transfer.a.totals().map_err(|e| e.to_string())?,
        transfer.b.totals().map_err(|e| e.to_string())?,
    );
    summary.money_after = a.0 + b.0;
    summary.open_holds = a.1 + b.1;
    Ok(summary)
}
