//! A compensation receives its step's output by value (the output is
//! `Clone`d, since a failed compensation is retried) or by reference.

use std::sync::Arc;
use std::sync::Mutex;

use saga::Faults;
use saga::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub seat: u32,
}

#[derive(Default)]
pub struct Booking {
    undone: Mutex<Vec<String>>,
}

#[saga(input = u32)]
impl Booking {
    #[step(compensate = cancel_seat)]
    async fn seat(&self, input: &u32) -> Result<Ticket, StepError> {
        Ok(Ticket { seat: *input })
    }
    /// By value: `Ticket` is `Clone`.
    async fn cancel_seat(&self, seat: Ticket) -> Result<(), StepError> {
        self.undone
            .lock()
            .unwrap()
            .push(format!("seat {}", seat.seat));
        Ok(())
    }

    #[step(compensate = cancel_meal)]
    async fn meal(&self, seat: &Ticket) -> Result<String, StepError> {
        Ok(format!("meal for {}", seat.seat))
    }
    /// By reference, next to an ancestor's output.
    async fn cancel_meal(&self, meal: &String, seat: &Ticket) -> Result<(), StepError> {
        self.undone
            .lock()
            .unwrap()
            .push(format!("{meal} ({})", seat.seat));
        Ok(())
    }

    #[step(pivot)]
    async fn pay(&self, meal: &String) -> Result<u64, StepError> {
        Ok(meal.len() as u64)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let booking = Arc::new(Booking::default());
        let runtime = Runtime::builder().build().await.unwrap();
        runtime.register(Arc::clone(&booking));
        let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("pay"));
        let outcome = runtime.run_with::<Booking>(12, options).await.unwrap();
        assert!(outcome.is_compensated(), "{outcome:?}");
        assert_eq!(
            *booking.undone.lock().unwrap(),
            ["meal for 12 (12)", "seat 12"],
            "compensations run in reverse dependency order"
        );
    });
}
