//! Run with: `cargo run --example quickstart`
//!
//! The smallest complete saga: reserve, charge (the pivot), confirm. It runs
//! once cleanly, then again with a fault injected into `charge`, to show the
//! rollback undo `reserve`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use saga::Faults;
use saga::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("out of stock")]
/// The warehouse has fewer items than asked for.
pub struct OutOfStock;

/// A warehouse with a single counter of free items.
pub struct Order {
    stock: AtomicI64,
}

#[saga(input = u32)]
impl Order {
    /// Reserve `input` items.
    #[step(compensate = unreserve, retry(attempts = 3, backoff = fixed("10ms")))]
    async fn reserve(&self, input: &u32, cx: &StepContext) -> Result<String, OutOfStock> {
        let n = i64::from(*input);
        if self.stock.fetch_sub(n, Ordering::SeqCst) < n {
            self.stock.fetch_add(n, Ordering::SeqCst);
            return Err(OutOfStock);
        }
        Ok(format!("reservation {}", cx.idempotency_key()))
    }

    /// Put the items back.
    async fn unreserve(&self, input: &u32, reserve: &String) -> Result<(), OutOfStock> {
        println!("  undo: {reserve}");
        self.stock.fetch_add(i64::from(*input), Ordering::SeqCst);
        Ok(())
    }

    /// Charge the card: the point of no return.
    #[step(pivot)]
    async fn charge(&self, input: &u32) -> Result<u64, StepError> {
        Ok(u64::from(*input) * 250)
    }

    /// Tell the customer; retried until it succeeds.
    #[step]
    async fn confirm(&self, charge: &u64) -> Result<(), StepError> {
        println!("  charged {charge} cents");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), saga::Error> {
    let runtime = Runtime::builder().build().await?;
    let order = Arc::new(Order {
        stock: AtomicI64::new(10),
    });
    runtime.register(Arc::clone(&order));

    println!("a clean run:");
    let outcome = runtime.start::<Order>(3).await?.outcome().await?;
    println!("  -> {outcome:?}");

    println!("a run whose charge fails:");
    let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("charge"));
    let outcome = runtime
        .start_with::<Order>(4, options)
        .await?
        .outcome()
        .await?;
    match &outcome {
        Outcome::Compensated(report) => println!("  -> {report}"),
        other => println!("  -> {other:?}"),
    }
    println!("stock left: {}", order.stock.load(Ordering::SeqCst));
    println!("\n{}", Order::definition().to_mermaid());
    Ok(())
}
