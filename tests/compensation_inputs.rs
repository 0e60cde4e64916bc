//! Each compensation receives its own step's output (by value or by
//! reference, as its parameter asks), and may borrow the saga input and the
//! outputs of the steps its step depended on, directly or not.

mod support;

use std::sync::{Arc, Mutex};

use saga::Faults;
use saga::prelude::*;
use serde::{Deserialize, Serialize};
use support::{Boom, runtime_with, within_a_day};

/// The saga input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Distinguishes runs.
    pub id: u32,
    /// How many items.
    pub quantity: u32,
}

/// The output of `reserve`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Names the run and the attempt that made it.
    pub code: String,
    /// How many items.
    pub quantity: u32,
}

/// What each compensation was given.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Unreserve {
        reserve: Reservation,
        input: Order,
    },
    Refund {
        charge: u64,
        reserve: Reservation,
        input: Order,
        key: String,
    },
    Unpack {
        pack: Vec<String>,
        reserve: Reservation,
    },
}

/// reserve -> charge (borrows reserve) -> pack (borrows charge) -> ship (pivot).
#[derive(Default)]
pub struct Shop {
    seen: Mutex<Vec<Seen>>,
}

#[saga(input = Order)]
impl Shop {
    #[step(compensate = unreserve, retry(attempts = 3, backoff = none))]
    async fn reserve(&self, input: &Order, cx: &StepContext) -> Result<Reservation, Boom> {
        // The first attempt fails: the compensation must see the output of
        // the attempt that succeeded.
        if cx.attempt() == 1 {
            return Err(Boom("warehouse busy"));
        }
        Ok(Reservation {
            code: format!("R{}-attempt{}", input.id, cx.attempt()),
            quantity: input.quantity,
        })
    }
    /// Takes its step's output by value.
    async fn unreserve(&self, reserve: Reservation, input: &Order) -> Result<(), Boom> {
        self.seen.lock().unwrap().push(Seen::Unreserve {
            reserve,
            input: input.clone(),
        });
        Ok(())
    }

    #[step(compensate = refund)]
    async fn charge(&self, input: &Order, reserve: &Reservation) -> Result<u64, Boom> {
        Ok(u64::from(input.id) * 1000 + u64::from(reserve.quantity))
    }
    /// Takes its step's output by reference, borrows its dependency and the
    /// input, and its context.
    async fn refund(
        &self,
        cx: &StepContext,
        input: &Order,
        reserve: &Reservation,
        charge: &u64,
    ) -> Result<(), Boom> {
        self.seen.lock().unwrap().push(Seen::Refund {
            charge: *charge,
            reserve: reserve.clone(),
            input: input.clone(),
            key: cx.idempotency_key().to_string(),
        });
        Ok(())
    }

    #[step(compensate = unpack)]
    async fn pack(&self, charge: &u64) -> Result<Vec<String>, Boom> {
        Ok(vec![format!("box-{charge}"), "label".to_string()])
    }
    /// Borrows `reserve`, an ancestor through `charge`, not a direct
    /// dependency.
    async fn unpack(&self, pack: Vec<String>, reserve: &Reservation) -> Result<(), Boom> {
        self.seen.lock().unwrap().push(Seen::Unpack {
            pack,
            reserve: reserve.clone(),
        });
        Ok(())
    }

    #[step(pivot)]
    async fn ship(&self, pack: &[String]) -> Result<usize, Boom> {
        Ok(pack.len())
    }
}

async fn roll_back(order: Order) -> (Vec<Seen>, saga::SagaId) {
    let saga = Arc::new(Shop::default());
    let runtime = runtime_with(&saga).await;
    let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("ship"));
    let handle = runtime
        .start_with::<Shop>(order, options)
        .await
        .expect("the saga starts");
    let id = handle.id();
    let outcome = within_a_day(handle.outcome()).await.expect("the saga runs");
    match &outcome {
        Outcome::Compensated(report) => {
            assert_eq!(report.compensated, ["pack", "charge", "reserve"]);
        }
        other => panic!("expected a compensated saga, got {other:?}"),
    }
    let seen = saga.seen.lock().unwrap().clone();
    (seen, id)
}

#[tokio::test(start_paused = true)]
async fn each_compensation_receives_its_steps_output_and_may_borrow_input_and_ancestors() {
    let order = Order { id: 7, quantity: 3 };
    let (seen, id) = roll_back(order.clone()).await;
    let reservation = Reservation {
        code: "R7-attempt2".to_string(),
        quantity: 3,
    };
    assert_eq!(
        seen,
        [
            Seen::Unpack {
                pack: vec!["box-7003".to_string(), "label".to_string()],
                reserve: reservation.clone(),
            },
            Seen::Refund {
                charge: 7003,
                reserve: reservation.clone(),
                input: order.clone(),
                key: format!("{id}/charge/undo"),
            },
            Seen::Unreserve {
                reserve: reservation,
                input: order,
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn compensations_see_the_outputs_of_their_own_run() {
    // Two runs of the same saga value at once, with different inputs: each
    // run's compensations see that run's outputs.
    let saga = Arc::new(Shop::default());
    let runtime = runtime_with(&saga).await;
    let options = || SagaOptions::new().faults(Faults::new().fail_step_permanently("ship"));
    let first = runtime
        .start_with::<Shop>(
            Order {
                id: 1,
                quantity: 10,
            },
            options(),
        )
        .await
        .unwrap();
    let second = runtime
        .start_with::<Shop>(
            Order {
                id: 2,
                quantity: 20,
            },
            options(),
        )
        .await
        .unwrap();
    let (a, b) = tokio::join!(first.outcome(), second.outcome());
    assert!(a.unwrap().is_compensated());
    assert!(b.unwrap().is_compensated());

    let seen = saga.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6, "{seen:?}");
    for entry in seen {
        match entry {
            Seen::Unreserve { reserve, input } => {
                assert_eq!(reserve.code, format!("R{}-attempt2", input.id));
                assert_eq!(reserve.quantity, input.quantity);
            }
            Seen::Refund {
                charge,
                reserve,
                input,
                ..
            } => {
                assert_eq!(
                    charge,
                    u64::from(input.id) * 1000 + u64::from(input.quantity)
                );
                assert_eq!(reserve.code, format!("R{}-attempt2", input.id));
            }
            Seen::Unpack { pack, reserve } => {
                let id: u64 = reserve.code[1..2].parse().unwrap();
                assert_eq!(
                    pack[0],
                    format!("box-{}", id * 1000 + u64::from(reserve.quantity))
                );
            }
        }
    }
}

/// A compensation that retries gets the same output on every attempt (it is
/// borrowed from the run, not moved out of it by the first attempt).
#[derive(Default)]
pub struct Retried {
    seen: Mutex<Vec<(u32, String)>>,
}

#[saga(input = ())]
impl Retried {
    #[step(compensate = undo_token)]
    async fn token(&self) -> Result<String, Boom> {
        Ok("token-1".to_string())
    }
    async fn undo_token(&self, token: String, cx: &StepContext) -> Result<(), Boom> {
        self.seen.lock().unwrap().push((cx.attempt(), token));
        if cx.attempt() < 3 {
            return Err(Boom("try again"));
        }
        Ok(())
    }

    #[step(pivot)]
    async fn commit(&self) -> Result<(), Boom> {
        Err(Boom("no"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_retried_compensation_receives_the_output_by_value_on_every_attempt() {
    let saga = Arc::new(Retried::default());
    let runtime = runtime_with(&saga).await;
    let options = SagaOptions::new()
        .retry("commit", RetryPolicy::once())
        .compensation_retry("undo_token", RetryPolicy::attempts(5));
    let outcome = within_a_day(runtime.run_with::<Retried>((), options))
        .await
        .unwrap();
    assert!(outcome.is_compensated(), "{outcome:?}");
    assert_eq!(
        *saga.seen.lock().unwrap(),
        [
            (1, "token-1".to_string()),
            (2, "token-1".to_string()),
            (3, "token-1".to_string()),
        ]
    );
}
