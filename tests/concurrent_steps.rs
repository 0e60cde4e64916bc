//! `#[saga(concurrent)]`: consecutive steps that do not depend on each other
//! run at the same time, on the saga's own task; the pivot runs alone; a
//! failure in a group lets the other members finish the attempt they are
//! making (but start no other), then everything that completed is
//! compensated, a group's compensations at the same time too.
//! Recovery resumes a group half done.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga::prelude::*;
use saga::testing::explore_crash_points;
use saga::{Cause, Faults, Report, SagaOptions};
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

/// Books a flight and a hotel; each takes a second to cancel, and the hotel
/// refuses for good when `hotel_refuses`.
#[derive(Default)]
pub struct Rebook {
    hotel_refuses: bool,
    log: Mutex<Vec<&'static str>>,
}

#[saga(input = u32, concurrent)]
impl Rebook {
    #[step(compensate = cancel_flight)]
    async fn flight(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn cancel_flight(&self) -> Result<(), StepError> {
        self.log.lock().unwrap().push("cancelling flight");
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.log.lock().unwrap().push("flight cancelled");
        Ok(())
    }

    #[step(compensate = cancel_hotel)]
    async fn hotel(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn cancel_hotel(&self) -> Result<(), StepError> {
        self.log.lock().unwrap().push("cancelling hotel");
        tokio::time::sleep(Duration::from_secs(1)).await;
        if self.hotel_refuses {
            return Err(saga::permanent(std::io::Error::other("no refunds")));
        }
        self.log.lock().unwrap().push("hotel cancelled");
        Ok(())
    }

    #[step(pivot)]
    async fn pay(&self, flight: &u32, hotel: &u32) -> Result<u32, StepError> {
        Ok(flight + hotel)
    }
}

/// Runs a `Rebook` whose payment fails; returns its outcome, how long the
/// rollback took, and its log.
async fn rebook(hotel_refuses: bool) -> (Outcome<RebookOutputs>, Duration, Vec<&'static str>) {
    let runtime = Runtime::builder().build().await.unwrap();
    let saga = Arc::new(Rebook {
        hotel_refuses,
        ..Rebook::default()
    });
    runtime.register(Arc::clone(&saga));
    let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("pay"));
    let started = Instant::now();
    let outcome = runtime.run_with::<Rebook>(1, options).await.unwrap();
    let log = saga.log.lock().unwrap().clone();
    (outcome, started.elapsed(), log)
}

#[tokio::test(start_paused = true)]
async fn a_group_is_compensated_at_the_same_time() {
    let (outcome, took, log) = rebook(false).await;
    let report = match outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a rollback, got {other:?}"),
    };
    assert_eq!(took, Duration::from_secs(1), "the cancellations overlapped");
    assert_eq!(
        log,
        [
            "cancelling hotel",
            "cancelling flight",
            "hotel cancelled",
            "flight cancelled"
        ]
    );
    // Reported last step first, whichever finished first.
    assert_eq!(report.compensated, ["hotel", "flight"]);
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_gives_up_lets_its_group_finish_before_the_saga_is_stuck() {
    let (outcome, _, log) = rebook(true).await;
    let report = match outcome {
        Outcome::Stuck(report) => report,
        other => panic!("expected a stuck saga, got {other:?}"),
    };
    let stuck = report.stuck.expect("what is stuck");
    assert_eq!(stuck.step, "hotel");
    assert_eq!(stuck.compensation, Some("cancel_hotel"));
    // The flight's cancellation, under way beside the hotel's, finished.
    assert!(log.contains(&"flight cancelled"), "{log:?}");
    assert_eq!(report.compensated, ["flight"]);
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

#[tokio::test(start_paused = true)]
async fn every_crash_point_of_a_group_whose_compensation_gives_up_recovers_with_the_group_finished()
{
    let explored = explore_crash_points::<Rebook, _, _>(
        || async {
            Arc::new(Rebook {
                hotel_refuses: true,
                ..Rebook::default()
            })
        },
        1,
        SagaOptions::new().faults(Faults::new().fail_step_permanently("pay")),
        |rebook, case| {
            let log = rebook.log.lock().unwrap();
            match case.state {
                // Recovery runs without the injected fault: a saga that
                // crashed before its rollback was decided completes.
                Some(saga::log::SagaState::Completed) if log.is_empty() => Ok(()),
                // Wherever the crash came, the flight's cancellation ran to
                // its end before the saga was declared stuck on the hotel's.
                Some(saga::log::SagaState::Stuck) if log.contains(&"flight cancelled") => Ok(()),
                None if log.is_empty() => Ok(()),
                other => Err(format!("ended {other:?}: {log:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(explored.cases > 10, "{explored:?}");
}

/// After a crash, recovery too lets a group's compensations finish before
/// it declares the saga stuck on one that gave up. Checked in the log that
/// recovery leaves, before any operator's resume: crashed after each of its
/// records in turn, the flight's cancellation is recorded as done before
/// the saga is recorded stuck.
#[tokio::test(start_paused = true)]
async fn a_recovered_group_finishes_before_the_saga_is_stuck() {
    use saga::log::Entry;
    use saga::store::{ListFilter, MemoryStore, Store};
    use saga::testing::{CrashPoint, CrashingStore};

    let mut stuck = 0;
    for k in 0.. {
        let durable = MemoryStore::new();
        let crashing = CrashingStore::new(durable.clone(), CrashPoint::AfterDurable(k));
        let rebook = Arc::new(Rebook {
            hotel_refuses: true,
            ..Rebook::default()
        });
        let first = Runtime::builder()
            .store(crashing.clone())
            .build()
            .await
            .unwrap();
        first.register(Arc::clone(&rebook));
        let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("pay"));
        let run = async {
            let handle = first.start_with::<Rebook>(1, options).await?;
            handle.outcome().await
        };
        let crashed = tokio::select! {
            biased;
            () = crashing.wait_for_crash() => true,
            outcome = run => {
                assert!(outcome.unwrap().is_stuck());
                false
            }
        };
        if !crashed {
            break;
        }
        drop(first);
        let second = Runtime::builder()
            .store(durable.clone())
            .build()
            .await
            .unwrap();
        second.register(Arc::clone(&rebook));
        second.recover().await.unwrap();
        let sagas = durable.list(ListFilter::default()).await.unwrap();
        let Some(summary) = sagas.first() else {
            continue; // crashed before the saga was created
        };
        let log = durable.load(summary.id).await.unwrap().unwrap();
        let entries: Vec<Entry> = log.records.iter().map(|r| r.decode().unwrap()).collect();
        let Some(end) = entries
            .iter()
            .position(|e| matches!(e, Entry::Stuck { .. }))
        else {
            continue; // completed: recovery runs without the injected fault
        };
        stuck += 1;
        let flight_undone = entries[..end]
            .iter()
            .any(|e| matches!(e, Entry::CompensationSucceeded { step, .. } if step == "flight"));
        assert!(
            flight_undone,
            "crash after record {k}: stuck first: {entries:?}"
        );
    }
    assert!(stuck > 3, "only {stuck} crash points reached the rollback");
}

/// Two independent steps: `refuse` fails for good at once; `flaky` fails
/// but may be retried, 10 s apart.
#[derive(Default)]
pub struct Pair {
    attempts: Mutex<Vec<(String, Duration)>>,
    start: Mutex<Option<Instant>>,
}

impl Pair {
    fn note(&self, what: String) {
        let since = self.start.lock().unwrap().expect("started").elapsed();
        self.attempts.lock().unwrap().push((what, since));
    }
}

#[saga(input = bool, concurrent)]
impl Pair {
    /// Fails for good when the input says so, first in step order.
    #[step(compensate = undo_first)]
    async fn first(&self, input: &bool, cx: &StepContext) -> Result<u32, StepError> {
        self.note(format!("first#{}", cx.attempt()));
        if *input {
            return Err(saga::permanent(std::io::Error::other("first refuses")));
        }
        Err(saga::retryable(std::io::Error::other("first unavailable")))
    }
    async fn undo_first(&self) -> Result<(), StepError> {
        Ok(())
    }

    /// Fails for good when the input says it does not, second.
    #[step(compensate = undo_second)]
    async fn second(&self, input: &bool, cx: &StepContext) -> Result<u32, StepError> {
        self.note(format!("second#{}", cx.attempt()));
        if !*input {
            return Err(saga::permanent(std::io::Error::other("second refuses")));
        }
        Err(saga::retryable(std::io::Error::other("second unavailable")))
    }
    async fn undo_second(&self) -> Result<(), StepError> {
        Ok(())
    }

    #[step(pivot)]
    async fn join(&self, first: &u32, second: &u32) -> Result<u32, StepError> {
        Ok(first + second)
    }
}

/// Runs `Pair` with the step that fails for good chosen by `first_refuses`,
/// the other retried by `policy` every 10 s.
async fn refused_in_a_group(first_refuses: bool, policy: RetryPolicy) -> (Arc<Pair>, Report) {
    let saga = Arc::new(Pair::default());
    *saga.start.lock().unwrap() = Some(Instant::now());
    let runtime = Runtime::builder().build().await.unwrap();
    runtime.register(Arc::clone(&saga));
    let flaky = if first_refuses { "second" } else { "first" };
    let policy = policy.backoff(Backoff::fixed(Duration::from_secs(10)));
    let options = SagaOptions::new().retry(flaky, policy);
    let run = runtime.run_with::<Pair>(first_refuses, options);
    let outcome = tokio::time::timeout(Duration::from_secs(24 * 3600), run)
        .await
        .expect("the saga ends within a day")
        .unwrap();
    let Outcome::Compensated(report) = outcome else {
        panic!("expected compensated, got {outcome:?}");
    };
    (saga, report)
}

#[tokio::test(start_paused = true)]
async fn a_member_failing_for_good_stops_the_others_retrying() {
    for first_refuses in [true, false] {
        let (saga, report) = refused_in_a_group(first_refuses, RetryPolicy::attempts(5)).await;
        // The other made its one attempt, then no more: the saga rolled back
        // at once, on the failure for good.
        let attempts = saga.attempts.lock().unwrap().clone();
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert!(attempts.iter().all(|(_, at)| at.is_zero()), "{attempts:?}");
        let refused = if first_refuses { "first" } else { "second" };
        match &report.cause {
            Cause::StepFailed(failure) => assert_eq!(failure.step, refused, "{report}"),
            other => panic!("expected {refused}'s failure, got {other:?}"),
        }
        assert!(report.compensated.is_empty(), "{report}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_member_failing_for_good_ends_a_sibling_retried_forever() {
    let (saga, _) = refused_in_a_group(true, RetryPolicy::forever()).await;
    assert_eq!(saga.attempts.lock().unwrap().len(), 2);
}

/// The racing sagas' `quick`: refuses for good.
fn refused() -> StepError {
    saga::permanent(std::io::Error::other("refused"))
}

/// The racing sagas' `slow`: takes effect, then answers a second later.
async fn slow(effects: &support::Calls, input: u32) -> Result<u32, StepError> {
    effects.push(format!("slow {input}"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(input)
}

/// The racing sagas' `undo_slow`.
fn undo_slow(effects: &support::Calls, slow: u32) -> Result<(), StepError> {
    effects.push(format!("undo slow {slow}"));
    Ok(())
}

/// `quick` refuses for good at once; `slow` takes effect, then answers a
/// second later. Effects outlive a crash (they are the world's): one saga
/// serves the crashed run and the recovered one.
#[derive(Default)]
pub struct Race {
    effects: support::Calls,
}

#[saga(input = u32, concurrent)]
impl Race {
    #[step(compensate = undo_quick)]
    async fn quick(&self) -> Result<u32, StepError> {
        Err(refused())
    }
    async fn undo_quick(&self) -> Result<(), StepError> {
        Ok(())
    }
    #[step(compensate = undo_slow)]
    async fn slow(&self, input: &u32) -> Result<u32, StepError> {
        slow(&self.effects, *input).await
    }
    async fn undo_slow(&self, slow: &u32) -> Result<(), StepError> {
        undo_slow(&self.effects, *slow)
    }
    #[step(pivot)]
    async fn finish(&self, quick: &u32, slow: &u32) -> Result<u32, StepError> {
        Ok(quick + slow)
    }
}

/// A crash after one member of a group gave up but while another's attempt
/// was still running: that attempt may have acted, so recovery finds out
/// (it runs it again, same key) before rolling back, and undoes it.
#[tokio::test(start_paused = true)]
async fn a_crash_while_a_sibling_of_a_failed_member_runs_undoes_that_sibling_too() {
    // created (0), two starts (1, 2), quick gave up (3), slow succeeded (4):
    // crash before 4.
    let saga = Arc::new(Race::default());
    let (durable, _) = support::crashed_before(Arc::clone(&saga), 7, SagaOptions::new(), 4).await;
    assert_eq!(saga.effects.all(), ["slow 7"]);
    let second = support::restarted(&durable, Arc::clone(&saga)).await;
    let report = second.recover().await.unwrap();
    assert_eq!(report.compensated, 1, "{report:?}");
    let effects = saga.effects.all();
    assert!(
        effects.contains(&"undo slow 7".to_string()),
        "slow's effect was left in place: {effects:?}"
    );
}

/// `quick` refuses for good at once; `flaky` times out once, then refuses
/// for good (it gave up, its outcome flagged unknown); `slow` is running at
/// the crash.
#[derive(Default)]
pub struct Race2 {
    effects: support::Calls,
}

#[saga(input = u32, concurrent)]
impl Race2 {
    #[step(compensate = undo_quick)]
    async fn quick(&self) -> Result<u32, StepError> {
        Err(refused())
    }
    async fn undo_quick(&self) -> Result<(), StepError> {
        Ok(())
    }
    #[step(compensate = undo_flaky, retry(attempts = 2, backoff = none, timeout = "100ms"))]
    async fn flaky(&self, cx: &StepContext) -> Result<u32, StepError> {
        self.effects.push(format!("flaky attempt {}", cx.attempt()));
        let n = flaky_calls(&self.effects.all());
        if n == 1 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        if n >= 3 {
            // A third call: what a step that gave up must never get.
            return Ok(3);
        }
        Err(saga::permanent(std::io::Error::other("flaky refused")))
    }
    async fn undo_flaky(&self) -> Result<(), StepError> {
        self.effects.push("undo flaky");
        Ok(())
    }
    #[step(compensate = undo_slow)]
    async fn slow(&self, input: &u32) -> Result<u32, StepError> {
        slow(&self.effects, *input).await
    }
    async fn undo_slow(&self, slow: &u32) -> Result<(), StepError> {
        undo_slow(&self.effects, *slow)
    }
    #[step(pivot)]
    async fn finish(&self, quick: &u32, flaky: &u32, slow: &u32) -> Result<u32, StepError> {
        Ok(quick + flaky + slow)
    }
}

/// How many times `Race2::flaky` was called.
fn flaky_calls(effects: &[String]) -> usize {
    effects
        .iter()
        .filter(|s| s.starts_with("flaky attempt"))
        .count()
}

#[tokio::test(start_paused = true)]
async fn recovery_never_reruns_a_second_member_that_gave_up() {
    // created, three starts, quick gave up, flaky failed (timed out),
    // flaky started again, flaky gave up (7): crash before slow's success.
    let point: u64 = 8;
    let saga = Arc::new(Race2::default());
    let (durable, _) =
        support::crashed_before(Arc::clone(&saga), 7, SagaOptions::new(), point).await;
    let second = support::restarted(&durable, Arc::clone(&saga)).await;
    let report = second.recover().await.unwrap();
    // `slow` ran again and was undone with the rest; `flaky` was not run.
    assert_eq!(report.compensated, 1, "{report:?}");
    let effects = saga.effects.all();
    assert!(effects.contains(&"undo slow 7".to_string()), "{effects:?}");
    let flaky_calls = flaky_calls(&effects);
    assert_eq!(flaky_calls, 2, "a step that gave up ran again: {effects:?}");
}

/// A store whose append of `slow`'s success commits but answers an error
/// (a flush failed after the commit: the run must halt then).
#[derive(Clone)]
struct LostAnswer {
    inner: saga::store::MemoryStore,
}

impl saga::store::Store for LostAnswer {
    fn append(
        &self,
        records: Vec<saga::log::Record>,
    ) -> saga::store::BoxFuture<'_, Result<(), saga::store::StoreError>> {
        let lose = records.iter().any(
            |r| matches!(&r.entry, saga::log::Entry::StepSucceeded { step, .. } if step == "slow"),
        );
        let inner = self.inner.append(records);
        Box::pin(async move {
            inner.await?;
            if lose {
                return Err(saga::store::StoreError::Backend("flush failed".into()));
            }
            Ok(())
        })
    }
    fn load(
        &self,
        id: saga::SagaId,
    ) -> saga::store::BoxFuture<'_, Result<Option<saga::store::StoredSaga>, saga::store::StoreError>>
    {
        self.inner.load(id)
    }
    fn unfinished_page(
        &self,
        after: Option<saga::SagaId>,
        limit: usize,
    ) -> saga::store::BoxFuture<'_, Result<Vec<saga::store::StoredSaga>, saga::store::StoreError>>
    {
        self.inner.unfinished_page(after, limit)
    }
    fn list(
        &self,
        filter: saga::store::ListFilter,
    ) -> saga::store::BoxFuture<'_, Result<Vec<saga::store::SagaSummary>, saga::store::StoreError>>
    {
        self.inner.list(filter)
    }
    fn prune(
        &self,
        before_ms: u64,
    ) -> saga::store::BoxFuture<'_, Result<u64, saga::store::StoreError>> {
        self.inner.prune(before_ms)
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_error_in_a_recovered_rerun_halts_instead_of_rolling_back() {
    use saga::store::Store;
    let saga = Arc::new(Race::default());
    let (durable, id) = support::crashed_before(Arc::clone(&saga), 7, SagaOptions::new(), 4).await;
    let second = Runtime::builder()
        .store(LostAnswer {
            inner: durable.clone(),
        })
        .build()
        .await
        .unwrap();
    second.register(Arc::clone(&saga));
    let report = second.recover().await.unwrap();
    // The run halted on the store's error: the saga is left running, for
    // the next recovery, not rolled back past `slow`'s logged success.
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let stored = durable.load(id).await.unwrap().unwrap();
    assert_eq!(stored.summary.state, saga::log::SagaState::Running);
    let effects = saga.effects.all();
    assert!(
        !effects.iter().any(|e| e.starts_with("undo")),
        "{effects:?}"
    );
}

/// `busy` fails retryably (its outcome known) and waits to retry; `quick`
/// then refuses for good, which withdraws `busy`.
#[derive(Default)]
pub struct Race3 {
    effects: support::Calls,
}

#[saga(input = u32, concurrent)]
impl Race3 {
    #[step(compensate = undo_quick)]
    async fn quick(&self) -> Result<u32, StepError> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(refused())
    }
    async fn undo_quick(&self) -> Result<(), StepError> {
        Ok(())
    }
    #[step(compensate = undo_busy, retry(attempts = 3, backoff = fixed("1s")))]
    async fn busy(&self) -> Result<u32, StepError> {
        self.effects.push("busy");
        Err(saga::retryable(std::io::Error::other("unavailable")))
    }
    async fn undo_busy(&self) -> Result<(), StepError> {
        Ok(())
    }
    #[step(pivot)]
    async fn finish(&self, quick: &u32, busy: &u32) -> Result<u32, StepError> {
        Ok(quick + busy)
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_a_sibling_was_withdrawn_still_rolls_back() {
    use saga::store::MemoryStore;
    // Without a crash: compensated.
    {
        let rt = Runtime::builder()
            .store(MemoryStore::new())
            .build()
            .await
            .unwrap();
        let h = rt.register(Arc::new(Race3::default()));
        let outcome = h.start(7).await.unwrap().outcome().await.unwrap();
        assert!(outcome.is_compensated(), "{outcome:?}");
    }
    let saga = Arc::new(Race3::default());
    let (durable, _) = support::crashed_before(Arc::clone(&saga), 7, SagaOptions::new(), 5).await;
    let second = support::restarted(&durable, Arc::clone(&saga)).await;
    let report = second.recover().await.unwrap();
    assert_eq!(report.compensated, 1, "{report:?}");
    // `busy` answered "unavailable" and was withdrawn: not run again.
    assert_eq!(saga.effects.all().len(), 1);
}

/// `hang` times out (at first) or refuses for good (once told to); `busy`
/// always answers "unavailable": its outcome is always known.
pub struct StuckPair {
    refuse: std::sync::atomic::AtomicBool,
    calls: Mutex<Vec<&'static str>>,
}

#[saga(input = u32, concurrent)]
impl StuckPair {
    #[step(compensate = undo_hang, retry(attempts = 2, backoff = none, timeout = "100ms"))]
    async fn hang(&self) -> Result<u32, StepError> {
        self.calls.lock().unwrap().push("hang");
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(refused());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(1)
    }
    async fn undo_hang(&self) -> Result<(), StepError> {
        Ok(())
    }
    #[step(compensate = undo_busy, retry(attempts = 3, backoff = fixed("50ms")))]
    async fn busy(&self) -> Result<u32, StepError> {
        self.calls.lock().unwrap().push("busy");
        Err(saga::retryable(std::io::Error::other("unavailable")))
    }
    async fn undo_busy(&self) -> Result<(), StepError> {
        Ok(())
    }
    #[step(pivot)]
    async fn finish(&self, hang: &u32, busy: &u32) -> Result<u32, StepError> {
        Ok(hang + busy)
    }
}

/// Stuck on `hang` (no answer); the operator resumes once it refuses for
/// good: nothing is unknown any more, so the saga rolls back. `busy`, whose
/// outcome was always known, is not taken for one that may have acted.
#[tokio::test(start_paused = true)]
async fn a_resumed_group_does_not_take_a_sibling_that_answered_for_unknown() {
    use saga::store::MemoryStore;
    let store = MemoryStore::new();
    let runtime = Runtime::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let saga = Arc::new(StuckPair {
        refuse: std::sync::atomic::AtomicBool::new(false),
        calls: Mutex::new(Vec::new()),
    });
    let pair = runtime.register(Arc::clone(&saga));
    let outcome = pair.run(7).await.unwrap();
    let Outcome::Stuck(report) = outcome else {
        panic!("expected stuck, got {outcome:?}");
    };
    assert_eq!(report.stuck.as_ref().map(|f| f.step), Some("hang"));
    saga.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let before = saga.calls.lock().unwrap().len();
    let ended = runtime.resume(report.saga_id).await.unwrap();
    assert!(matches!(ended, saga::Ended::Compensated(_)), "{ended:?}");
    // `hang` refused at once; `busy`, withdrawn, made at most its one
    // attempt.
    let after: Vec<_> = saga.calls.lock().unwrap()[before..].to_vec();
    assert!(
        after.iter().filter(|c| **c == "busy").count() <= 1,
        "{after:?}"
    );
}
