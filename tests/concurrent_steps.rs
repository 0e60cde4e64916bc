//! `#[saga(concurrent)]`: consecutive steps that do not depend on each other
//! run at the same time, on the saga's own task; the pivot runs alone; a
//! failure in a group lets the other members finish, then everything that
//! completed is compensated. Recovery resumes a group half done.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga::prelude::*;
use saga::testing::explore_crash_points;
use saga::{Faults, SagaOptions};
use tokio::time::Instant;

/// Books a trip: flight and hotel are independent, the payment needs both.
#[derive(Default)]
pub struct Trip {
    log: Mutex<Vec<String>>,
}

impl Trip {
    fn note(&self, what: impl Into<String>) {
        self.log.lock().unwrap().push(what.into());
    }
}

#[saga(input = u32, concurrent)]
impl Trip {
    #[step(compensate = cancel_flight)]
    async fn flight(&self, input: &u32, cx: &StepContext) -> Result<String, StepError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.note(format!("flight {}", cx.idempotency_key().step()));
        Ok(format!("F{input}"))
    }
    async fn cancel_flight(&self, flight: &String) -> Result<(), StepError> {
        self.note(format!("cancel {flight}"));
        Ok(())
    }

    #[step(compensate = cancel_hotel)]
    async fn hotel(&self, input: &u32) -> Result<String, StepError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.note("hotel");
        Ok(format!("H{input}"))
    }
    async fn cancel_hotel(&self, hotel: &String) -> Result<(), StepError> {
        self.note(format!("cancel {hotel}"));
        Ok(())
    }

    #[step(pivot)]
    async fn pay(&self, flight: &String, hotel: &String) -> Result<String, StepError> {
        self.note("pay");
        Ok(format!("{flight}+{hotel}"))
    }
}

/// The same steps, one after the other (no `concurrent`).
#[derive(Default)]
pub struct SlowTrip;

#[saga(input = u32)]
impl SlowTrip {
    #[step(compensate = undo_flight)]
    async fn flight(&self, input: &u32) -> Result<u32, StepError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(*input)
    }
    async fn undo_flight(&self) -> Result<(), StepError> {
        Ok(())
    }
    #[step(compensate = undo_hotel)]
    async fn hotel(&self, input: &u32) -> Result<u32, StepError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(*input)
    }
    async fn undo_hotel(&self) -> Result<(), StepError> {
        Ok(())
    }
    #[step(pivot)]
    async fn pay(&self, flight: &u32, hotel: &u32) -> Result<u32, StepError> {
        Ok(flight + hotel)
    }
}

#[test]
fn independent_steps_share_a_group_and_the_pivot_runs_alone() {
    let groups: Vec<usize> = Trip::definition()
        .steps()
        .iter()
        .map(|s| s.group())
        .collect();
    assert_eq!(groups, [0, 0, 2]);
    let groups: Vec<usize> = SlowTrip::definition()
        .steps()
        .iter()
        .map(|s| s.group())
        .collect();
    assert_eq!(groups, [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn independent_steps_run_at_the_same_time() {
    let runtime = Runtime::builder().build().await.unwrap();
    let trip = Arc::new(Trip::default());
    runtime.register(Arc::clone(&trip));
    runtime.register(Arc::new(SlowTrip));

    let started = Instant::now();
    let outputs = runtime.run::<Trip>(7).await.unwrap().completed().unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "flight and hotel overlapped"
    );
    assert_eq!(outputs.pay, "F7+H7");
    assert_eq!(trip.log.lock().unwrap().last().unwrap(), "pay");

    let started = Instant::now();
    assert!(runtime.run::<SlowTrip>(7).await.unwrap().is_completed());
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "without `concurrent`, one after the other"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_in_a_group_lets_the_others_finish_then_undoes_them() {
    let runtime = Runtime::builder().build().await.unwrap();
    let trip = Arc::new(Trip::default());
    runtime.register(Arc::clone(&trip));
    let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("flight"));
    let outcome = runtime.run_with::<Trip>(3, options).await.unwrap();
    let report = match outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a rollback, got {other:?}"),
    };
    assert_eq!(report.failed_step(), Some("flight"));
    assert_eq!(report.compensated, ["hotel"]);
    assert_eq!(*trip.log.lock().unwrap(), ["hotel", "cancel H3"]);
}

#[tokio::test(start_paused = true)]
async fn every_crash_point_of_a_concurrent_saga_recovers_whole() {
    let explored = explore_crash_points::<Trip, _, _>(
        || async { Arc::new(Trip::default()) },
        1,
        SagaOptions::new().faults(Faults::new().fail_step_permanently("pay")),
        |trip, case| {
            let log = trip.log.lock().unwrap();
            let booked = |what: &str| log.iter().filter(|l| l.starts_with(what)).count();
            // A compensation may run again when a crash hits between its
            // effect and its record (an idempotent service makes that
            // harmless), so count whether it ran, not how often.
            let cancelled =
                |what: &str| log.iter().any(|l| *l == format!("cancel {what}1")) as usize;
            // Recovery runs without the injected fault, so a saga that
            // crashed before its rollback completes; one that did not is
            // undone: every booking made is cancelled, none that was not.
            match case.state {
                Some(saga::log::SagaState::Completed) => {
                    if booked("pay") == 1 && cancelled("F") + cancelled("H") == 0 {
                        Ok(())
                    } else {
                        Err(format!("completed, yet: {log:?}"))
                    }
                }
                Some(saga::log::SagaState::Compensated) | None => {
                    let flights = booked("flight");
                    let hotels = booked("hotel");
                    if (flights > 0) as usize != cancelled("F")
                        || (hotels > 0) as usize != cancelled("H")
                    {
                        return Err(format!("bookings and cancellations do not match: {log:?}"));
                    }
                    Ok(())
                }
                other => Err(format!("ended {other:?}: {log:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(explored.cases > 10, "{explored:?}");
}
