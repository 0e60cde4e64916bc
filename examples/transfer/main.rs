//! Run with: `cargo run --release --example transfer`
//!
//! Moves money between accounts at two banks with a saga: `hold` the amount
//! at the payer's bank, `credit` the payee's bank, `capture` the hold (the
//! pivot), then `notify`. Bank calls fail at random (retryable outages) and
//! some transfers are refused (insufficient funds, a permanent error), so
//! some sagas retry and some roll back. At the end the invariant is checked:
//! no money was created or lost, and no hold is left open.
//!
//! The banks here live in memory; every operation is idempotent under the
//! step's idempotency key, as a real bank API's would have to be.

mod bank;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use saga::prelude::*;
use saga::{Event, EventKind, Listener};
use serde::{Deserialize, Serialize};

use bank::{Bank, BankError, CreditId, HoldId};

const ACCOUNTS: u32 = 200;
const TRANSFERS: usize = 5_000;
const CONCURRENCY: usize = 64;
const OUTAGE_RATE: f64 = 0.05;
const OPENING_BALANCE: i64 = 10_000;

/// One transfer: `amount` cents from `from` at bank A to `to` at bank B.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferRequest {
    from: u32,
    to: u32,
    amount: i64,
}

/// The services a transfer needs: the payer's bank and the payee's.
pub struct Transfer {
    payer_bank: Bank,
    payee_bank: Bank,
}

#[saga(input = TransferRequest)]
impl Transfer {
    /// Reserve the amount at the payer's bank.
    #[step(compensate = release_hold, retry(attempts = 5, backoff = exponential("1ms", "20ms")))]
    async fn hold(&self, input: &TransferRequest, cx: &StepContext) -> Result<HoldId, BankError> {
        let key = cx.idempotency_key().to_string();
        self.payer_bank.hold(input.from, input.amount, &key)
    }

    async fn release_hold(&self, hold: &HoldId) -> Result<(), BankError> {
        self.payer_bank.release(hold)
    }

    /// Credit the payee's account.
    #[step(compensate = reverse_credit, retry(attempts = 5, backoff = exponential("1ms", "20ms")))]
    async fn credit(
        &self,
        input: &TransferRequest,
        cx: &StepContext,
        hold: &HoldId,
    ) -> Result<CreditId, BankError> {
        let _ = hold;
        let key = cx.idempotency_key().to_string();
        self.payee_bank.credit(input.to, input.amount, &key)
    }

    async fn reverse_credit(&self, credit: &CreditId) -> Result<(), BankError> {
        self.payee_bank.reverse(credit)
    }

    /// Take the held money: the point of no return.
    #[step(pivot, retry(attempts = 5, backoff = exponential("1ms", "20ms")))]
    async fn capture(&self, hold: &HoldId) -> Result<(), BankError> {
        self.payer_bank.capture(hold)
    }

    /// Tell the payee; retried until it succeeds.
    #[step(retry(attempts = forever, backoff = exponential("1ms", "20ms")))]
    async fn notify(&self, credit: &CreditId) -> Result<(), BankError> {
        self.payee_bank.notify(credit)
    }
}

/// Counts retries across all sagas.
#[derive(Default)]
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

#[tokio::main]
async fn main() -> Result<ExitCode, saga::Error> {
    let payer_bank = Bank::new("A", ACCOUNTS, OPENING_BALANCE, OUTAGE_RATE, 1);
    let payee_bank = Bank::new("B", ACCOUNTS, OPENING_BALANCE, OUTAGE_RATE, 2);
    let before = payer_bank.total() + payee_bank.total();

    let retries = Arc::new(AtomicU64::new(0));
    let runtime = Runtime::builder()
        .listener(Retries(Arc::clone(&retries)))
        .build()
        .await?;
    let transfer = Arc::new(Transfer {
        payer_bank,
        payee_bank,
    });
    runtime.register(Arc::clone(&transfer));

    let next = Arc::new(AtomicUsize::new(0));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (runtime, next, counts) = (runtime.clone(), Arc::clone(&next), Arc::clone(&counts));
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= TRANSFERS {
                    return Ok::<(), saga::Error>(());
                }
                let request = request(n);
                let slot = match runtime.run::<Transfer>(request).await? {
                    Outcome::Completed(_) => 0,
                    Outcome::Compensated(_) => 1,
                    Outcome::Stuck(report) => {
                        eprintln!("stuck: {report}");
                        2
                    }
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|e| saga::Error::Aborted {
            id: saga::SagaId::new(),
            reason: e.to_string(),
        })??;
    }
    let elapsed = started.elapsed();

    let after = transfer.payer_bank.total() + transfer.payee_bank.total();
    let open_holds = transfer.payer_bank.open_holds();
    let [completed, compensated, stuck] = counts
        .as_ref()
        .each_ref()
        .map(|c| c.load(Ordering::Relaxed));
    println!("transfers        {TRANSFERS:>10}");
    println!("completed        {completed:>10}");
    println!("compensated      {compensated:>10}");
    println!("stuck            {stuck:>10}");
    println!("retries          {:>10}", retries.load(Ordering::Relaxed));
    println!(
        "throughput       {:>10.0} transfers/s",
        TRANSFERS as f64 / elapsed.as_secs_f64()
    );
    println!("money before     {before:>10}");
    println!("money after      {after:>10}");
    println!("open holds       {open_holds:>10}");
    let whole = before == after && open_holds == 0 && stuck == 0;
    println!(
        "invariant        {:>10}",
        if whole { "holds" } else { "BROKEN" }
    );
    Ok(if whole {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A deterministic mix of transfers; about one in ten asks for more than any
/// account holds, so it is refused and rolled back.
fn request(n: usize) -> TransferRequest {
    let n = n as u64;
    let mix = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let amount = if mix.is_multiple_of(10) {
        OPENING_BALANCE * 100
    } else {
        (mix >> 8) as i64 % 500 + 1
    };
    TransferRequest {
        from: (mix >> 20) as u32 % ACCOUNTS,
        to: (mix >> 40) as u32 % ACCOUNTS,
        amount,
    }
}
