//! Every crash point of a 4-step saga with a pivot: for each record of its
//! log, crash right before it is durable and right after, recover on a fresh
//! runtime, and check that the money is whole: moved exactly once, or not
//! at all. For a clean run, a run whose pivot fails (rollback), and a run
//! whose compensation gives up (stuck, then resumed by an operator).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use saga::Faults;
use saga::log::SagaState;
use saga::prelude::*;
use saga::testing::{CrashCase, explore_crash_points};

/// Two accounts and a journal of applied operations, keyed by idempotency
/// key, so a repeated operation is recognised and not applied twice.
#[derive(Default)]
pub struct Ledger {
    books: Mutex<Books>,
}

#[derive(Default)]
struct Books {
    payer: i64,
    payee: i64,
    held: i64,
    applied: HashMap<String, i64>,
    notified: u32,
}

impl Ledger {
    fn funded() -> Arc<Ledger> {
        let ledger = Ledger::default();
        ledger.books.lock().unwrap().payer = 100;
        Arc::new(ledger)
    }

    /// Applies `f` once per key.
    fn once(&self, key: String, f: impl FnOnce(&mut Books) -> i64) -> i64 {
        let mut books = self.books.lock().unwrap();
        if let Some(&done) = books.applied.get(&key) {
            return done;
        }
        let result = f(&mut books);
        books.applied.insert(key, result);
        result
    }
}

#[saga(input = i64)]
impl Ledger {
    #[step(compensate = release, retry(attempts = 2), compensate_retry(attempts = 2))]
    async fn hold(&self, input: &i64, cx: &StepContext) -> Result<i64, StepError> {
        let amount = *input;
        Ok(self.once(cx.idempotency_key().to_string(), |b| {
            b.payer -= amount;
            b.held += amount;
            amount
        }))
    }
    async fn release(&self, hold: &i64, cx: &StepContext) -> Result<(), StepError> {
        let amount = *hold;
        self.once(cx.idempotency_key().to_string(), |b| {
            b.held -= amount;
            b.payer += amount;
            0
        });
        Ok(())
    }

    #[step(compensate = uncredit, retry(attempts = 2), compensate_retry(attempts = 2))]
    async fn credit(&self, hold: &i64, cx: &StepContext) -> Result<i64, StepError> {
        let amount = *hold;
        Ok(self.once(cx.idempotency_key().to_string(), |b| {
            b.payee += amount;
            amount
        }))
    }
    async fn uncredit(&self, credit: &i64, cx: &StepContext) -> Result<(), StepError> {
        let amount = *credit;
        self.once(cx.idempotency_key().to_string(), |b| {
            b.payee -= amount;
            0
        });
        Ok(())
    }

    #[step(pivot, retry(attempts = 2))]
    async fn capture(&self, hold: &i64, cx: &StepContext) -> Result<(), StepError> {
        let amount = *hold;
        self.once(cx.idempotency_key().to_string(), |b| {
            b.held -= amount;
            0
        });
        Ok(())
    }

    #[step]
    async fn notify(&self, cx: &StepContext) -> Result<(), StepError> {
        self.once(cx.idempotency_key().to_string(), |b| {
            b.notified += 1;
            0
        });
        Ok(())
    }
}

/// Whole: all 30 moved and notified once, or nothing moved; never a hold.
fn whole(ledger: &Arc<Ledger>, case: &CrashCase) -> Result<(), String> {
    let b = ledger.books.lock().unwrap();
    let summary = format!(
        "payer {} payee {} held {} notified {}",
        b.payer, b.payee, b.held, b.notified
    );
    if b.payer + b.payee + b.held != 100 {
        return Err(format!("money was created or lost: {summary}"));
    }
    let moved = (b.payer, b.payee, b.held, b.notified) == (70, 30, 0, 1);
    let untouched = (b.payer, b.payee, b.held, b.notified) == (100, 0, 0, 0);
    match case.state {
        Some(SagaState::Completed) if moved => Ok(()),
        Some(SagaState::Compensated) | None if untouched => Ok(()),
        state => Err(format!("saga ended {state:?} with {summary}")),
    }
}

#[tokio::test]
async fn every_crash_point_of_a_clean_run_recovers_whole() {
    let explored = explore_crash_points::<Ledger, _, _>(
        || async { Ledger::funded() },
        30,
        SagaOptions::new(),
        whole,
    )
    .await
    .unwrap_or_else(|failure| panic!("{failure}"));
    // created, 4 x (started, succeeded), completed
    assert_eq!(explored.records, 10);
    assert_eq!(explored.cases, 2 * 10 + 1);
}

#[tokio::test]
async fn every_crash_point_of_a_rollback_recovers_whole() {
    let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("capture"));
    let explored =
        explore_crash_points::<Ledger, _, _>(|| async { Ledger::funded() }, 30, options, whole)
            .await
            .unwrap_or_else(|failure| panic!("{failure}"));
    // created, 3 x (started, succeeded|failed), rollback, 2 x (started,
    // succeeded), compensated
    assert_eq!(explored.records, 13);
}

#[tokio::test]
async fn every_crash_point_of_a_stuck_compensation_recovers_whole_after_resume() {
    let options = SagaOptions::new().faults(
        Faults::new()
            .fail_step_permanently("capture")
            .fail_compensation("uncredit", 1..),
    );
    let explored =
        explore_crash_points::<Ledger, _, _>(|| async { Ledger::funded() }, 30, options, whole)
            .await
            .unwrap_or_else(|failure| panic!("{failure}"));
    // created, 3 x (started, succeeded|failed), rollback, 2 x uncredit
    // (started, failed), stuck
    assert_eq!(explored.records, 13);
}

/// A saga whose step is not idempotent breaks when a crash makes recovery
/// run it again: the explorer must say so, naming the crash point.
#[tokio::test]
async fn the_explorer_catches_a_step_that_is_not_idempotent() {
    #[derive(Default)]
    pub struct Careless {
        calls: Mutex<u32>,
    }

    #[saga(input = ())]
    impl Careless {
        #[step(pivot)]
        async fn charge(&self) -> Result<(), StepError> {
            *self.calls.lock().unwrap() += 1;
            Ok(())
        }
    }

    let failure = explore_crash_points::<Careless, _, _>(
        || async { Arc::new(Careless::default()) },
        (),
        SagaOptions::new(),
        |saga, _| match *saga.calls.lock().unwrap() {
            0 | 1 => Ok(()),
            n => Err(format!("charged {n} times")),
        },
    )
    .await
    .expect_err("a crash after the charge but before its record charges twice");
    assert_eq!(failure.message, "charged 2 times");
    let report = failure.to_string();
    assert!(
        report.contains("crash right before record 1 is durable"),
        "{report}"
    );
    assert!(report.contains("step_started"), "{report}");
}

/// A crash stops the whole process: the explorer's crashed run must not go
/// on acting on the services while, or after, recovery runs the saga. Here
/// the crashed run's first call of `slow` is still waiting when the crash
/// comes; were that run left going, it would finish the call after the
/// case was checked.
#[tokio::test]
async fn a_crashed_run_acts_no_more() {
    #[derive(Default)]
    pub struct Slow {
        calls: std::sync::atomic::AtomicU32,
        checked: std::sync::atomic::AtomicBool,
        late: std::sync::atomic::AtomicU32,
    }

    #[saga(input = ())]
    impl Slow {
        #[step(compensate = undo)]
        async fn first(&self) -> Result<(), StepError> {
            Ok(())
        }
        async fn undo(&self) -> Result<(), StepError> {
            Ok(())
        }

        #[step(pivot)]
        async fn slow(&self) -> Result<(), StepError> {
            use std::sync::atomic::Ordering::SeqCst;
            // The crashed run's call waits; recovery's does not.
            if self.calls.fetch_add(1, SeqCst) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            if self.checked.load(SeqCst) {
                self.late.fetch_add(1, SeqCst);
            }
            Ok(())
        }
    }

    let made = Arc::new(Mutex::new(Vec::<Arc<Slow>>::new()));
    let setup = || {
        let made = Arc::clone(&made);
        async move {
            let saga = Arc::new(Slow::default());
            made.lock().unwrap().push(Arc::clone(&saga));
            saga
        }
    };
    explore_crash_points::<Slow, _, _>(setup, (), SagaOptions::new(), |saga, _| {
        saga.checked
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    })
    .await
    .unwrap_or_else(|failure| panic!("{failure}"));
    // Longer than the crashed run's call waits.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let late: u32 = made
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.late.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    assert_eq!(
        late, 0,
        "a crashed run called `slow` after its case was checked"
    );
}
