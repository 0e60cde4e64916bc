//! A transfer-like saga using every option of `#[saga]` and `#[step]`, run
//! once cleanly and once with a failing pivot that rolls everything back.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use saga::prelude::*;
use saga::{Faults, StepKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("ledger unavailable")]
pub struct LedgerError;

#[derive(Debug, Serialize, Deserialize)]
pub struct TransferRequest {
    pub from: u32,
    pub to: u32,
    pub amount: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldId(pub String);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreditId(pub u64);

pub struct Transfer {
    held: AtomicI64,
    credited: AtomicI64,
}

#[saga(input = TransferRequest, name = "bank.transfer", outputs = TransferResult, deadline = "30s")]
impl Transfer {
    /// Look up the payer; changes nothing.
    #[step(readonly, timeout = "1s")]
    async fn lookup(&self, input: &TransferRequest) -> Result<u32, LedgerError> {
        Ok(input.from)
    }

    /// Place a hold on the payer's account.
    #[step(
        compensate = release_hold,
        retry(attempts = 5, backoff = exponential("1ms", "10ms"), jitter = 0.5, timeout = "2s"),
        compensate_retry(attempts = forever, backoff = fixed("1ms")),
    )]
    async fn hold(
        &self,
        input: &TransferRequest,
        lookup: &u32,
        cx: &StepContext,
    ) -> Result<HoldId, LedgerError> {
        self.held.fetch_add(input.amount, Ordering::SeqCst);
        Ok(HoldId(format!("{lookup}:{}", cx.idempotency_key())))
    }

    async fn release_hold(
        &self,
        input: &TransferRequest,
        hold: HoldId,
        lookup: &u32,
    ) -> Result<(), LedgerError> {
        assert!(hold.0.starts_with(&lookup.to_string()));
        self.held.fetch_sub(input.amount, Ordering::SeqCst);
        Ok(())
    }

    /// Credit the payee.
    #[step(compensate = reverse_credit, retry(attempts = 3, backoff = none))]
    async fn credit(
        &self,
        input: &TransferRequest,
        hold: &HoldId,
    ) -> Result<CreditId, LedgerError> {
        assert!(!hold.0.is_empty());
        self.credited.fetch_add(input.amount, Ordering::SeqCst);
        Ok(CreditId(u64::from(input.to)))
    }

    async fn reverse_credit(
        &self,
        input: &TransferRequest,
        credit: &CreditId,
    ) -> Result<(), LedgerError> {
        assert_eq!(credit.0, u64::from(input.to));
        self.credited.fetch_sub(input.amount, Ordering::SeqCst);
        Ok(())
    }

    /// The point of no return.
    #[step(pivot, timeout = "2s")]
    async fn capture(&self, hold: &HoldId, credit: &CreditId) -> Result<bool, LedgerError> {
        Ok(!hold.0.is_empty() && credit.0 > 0)
    }

    /// After the pivot: retried until it succeeds.
    #[step(retry(attempts = forever, backoff = fixed("1ms")))]
    async fn notify(&self, capture: &bool) -> Result<String, LedgerError> {
        Ok(format!("captured: {capture}"))
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let def = Transfer::definition();
        assert_eq!(def.name(), "bank.transfer");
        assert_eq!(def.deadline(), Some(std::time::Duration::from_secs(30)));
        let kinds: Vec<StepKind> = def.steps().iter().map(|s| s.kind()).collect();
        assert_eq!(
            kinds,
            [
                StepKind::Readonly,
                StepKind::Compensatable,
                StepKind::Compensatable,
                StepKind::Pivot,
                StepKind::Forward,
            ]
        );
        assert_eq!(def.steps()[1].compensation(), Some("release_hold"));
        assert_eq!(def.steps()[1].dependencies(), &[0]);
        assert_eq!(def.steps()[3].dependencies(), &[1, 2]);
        assert!(def.to_mermaid().contains("capture"));

        let transfer = Arc::new(Transfer {
            held: AtomicI64::new(0),
            credited: AtomicI64::new(0),
        });
        let runtime = Runtime::builder().build().await.unwrap();
        runtime.register(Arc::clone(&transfer));

        let request = TransferRequest {
            from: 7,
            to: 9,
            amount: 100,
        };
        let outputs: TransferResult = runtime
            .run::<Transfer>(request)
            .await
            .unwrap()
            .completed()
            .expect("the clean run completes");
        assert_eq!(outputs.lookup, 7);
        assert!(outputs.hold.0.starts_with("7:"));
        assert_eq!(outputs.credit, CreditId(9));
        assert!(outputs.capture);
        assert_eq!(outputs.notify, "captured: true");
        assert_eq!(transfer.held.load(Ordering::SeqCst), 100);
        assert_eq!(transfer.credited.load(Ordering::SeqCst), 100);

        let request = TransferRequest {
            from: 7,
            to: 9,
            amount: 5,
        };
        let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("capture"));
        let outcome = runtime
            .run_with::<Transfer>(request, options)
            .await
            .unwrap();
        assert!(outcome.is_compensated(), "{outcome:?}");
        assert_eq!(outcome.report().unwrap().failed_step(), Some("capture"));
        assert_eq!(transfer.held.load(Ordering::SeqCst), 100);
        assert_eq!(transfer.credited.load(Ordering::SeqCst), 100);
    });
}
