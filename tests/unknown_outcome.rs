//! An attempt cut off by its timeout (or by a crash) may have taken effect.
//! Such a step is retried under the same key; if its attempts run out with
//! no answer, the saga is stuck, for a person to find out whether the effect
//! happened: rolling back without the step's output would orphan an effect
//! nobody could compensate.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga::prelude::*;
use saga::{Faults, SagaOptions};

/// A service that applies its effect, then answers only after `slow_for`
/// attempts' worth of delay (the reply is lost to the timeout).
pub struct SlowReply {
    slow_attempts: u32,
    applied: Mutex<Vec<String>>,
    released: Mutex<Vec<String>>,
}

#[saga(input = ())]
impl SlowReply {
    #[step(compensate = release, retry(attempts = 2, backoff = fixed("10ms"), timeout = "100ms"))]
    async fn hold(&self, cx: &StepContext) -> Result<String, StepError> {
        let key = cx.idempotency_key().to_string();
        {
            let mut applied = self.applied.lock().unwrap();
            if !applied.contains(&key) {
                applied.push(key.clone());
            }
        }
        if cx.attempt() <= self.slow_attempts {
            tokio::time::sleep(Duration::from_secs(1)).await; // the reply is lost
        }
        Ok(key)
    }
    async fn release(&self, hold: &str) -> Result<(), StepError> {
        self.released.lock().unwrap().push(hold.to_string());
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &String) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }
}

impl SlowReply {
    /// Its first `slow_attempts` attempts lose their reply.
    fn new(slow_attempts: u32) -> Arc<SlowReply> {
        Arc::new(SlowReply {
            slow_attempts,
            applied: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
        })
    }
}

async fn run(slow_attempts: u32, faults: Faults) -> (Arc<SlowReply>, Outcome<SlowReplyOutputs>) {
    let saga = SlowReply::new(slow_attempts);
    let runtime = support::runtime_with(&saga).await;
    let outcome = runtime
        .run_with::<SlowReply>((), SagaOptions::new().faults(faults))
        .await
        .unwrap();
    (saga, outcome)
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_reply_was_lost_is_retried_under_the_same_key_and_answers() {
    let (saga, outcome) = run(1, Faults::new()).await;
    let outputs = outcome.completed().expect("completed once `hold` answered");
    assert_eq!(
        *saga.applied.lock().unwrap(),
        std::slice::from_ref(&outputs.hold)
    );
    assert!(saga.released.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_replies_time_out_past_its_attempts_leaves_the_saga_stuck() {
    let (saga, outcome) = run(5, Faults::new()).await;
    let Outcome::Stuck(report) = outcome else {
        panic!("expected stuck, got {outcome:?}");
    };
    let stuck = report.stuck.as_ref().expect("what gave up");
    assert_eq!((stuck.step, stuck.attempts), ("hold", 2));
    // Not rolled back: `release` needs the output `hold` never gave.
    assert!(report.compensated.is_empty(), "{report}");
    assert!(saga.released.lock().unwrap().is_empty());
    assert_eq!(saga.applied.lock().unwrap().len(), 1, "one key, one effect");
}

#[tokio::test(start_paused = true)]
async fn an_effect_whose_reply_was_lost_is_compensated_when_the_saga_rolls_back() {
    let (saga, outcome) = run(1, Faults::new().fail_step_permanently("capture")).await;
    let report = match outcome {
        Outcome::Compensated(report) => report,
        other => panic!("expected a rollback, got {other:?}"),
    };
    assert_eq!(report.compensated, ["hold"]);
    assert_eq!(
        *saga.released.lock().unwrap(),
        *saga.applied.lock().unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_definite_error_still_ends_the_retries_at_the_policy() {
    let (saga, outcome) = run(0, Faults::new().fail_step("hold", 1..)).await;
    assert!(outcome.is_compensated(), "{outcome:?}");
    let report = outcome.report().unwrap();
    match &report.cause {
        saga::Cause::StepFailed(f) => assert_eq!((f.step, f.attempts), ("hold", 2)),
        other => panic!("{other:?}"),
    }
    assert!(saga.applied.lock().unwrap().is_empty());
}

/// A service that applies its effect on the first call and loses the
/// reply, then is unavailable for a while: the unavailability says nothing
/// about the first call, so the step must not give up on it.
pub struct FlakyAfterEffect {
    unavailable_calls: u32,
    calls: Mutex<u32>,
    applied: Mutex<Vec<String>>,
    released: Mutex<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("service unavailable")]
/// The service did not answer.
pub struct Unavailable;

#[saga(input = ())]
impl FlakyAfterEffect {
    #[step(compensate = release, retry(attempts = 2, backoff = fixed("10ms"), timeout = "100ms"))]
    async fn hold(&self, cx: &StepContext) -> Result<String, StepError> {
        let key = cx.idempotency_key().to_string();
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        if call == 1 {
            self.applied.lock().unwrap().push(key.clone());
            tokio::time::sleep(Duration::from_secs(1)).await; // the reply is lost
        } else if call <= 1 + self.unavailable_calls {
            return Err(saga::retryable(Unavailable));
        }
        Ok(key)
    }
    async fn release(&self, hold: &str) -> Result<(), StepError> {
        self.released.lock().unwrap().push(hold.to_string());
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self) -> Result<(), StepError> {
        Ok(())
    }
}

impl FlakyAfterEffect {
    /// A fresh service, unavailable for `unavailable_calls` calls after its
    /// first.
    fn new(unavailable_calls: u32) -> Arc<FlakyAfterEffect> {
        Arc::new(FlakyAfterEffect {
            unavailable_calls,
            calls: Mutex::new(0),
            applied: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
        })
    }

    /// The same service in the next process: its first call (which took
    /// effect, in the world, and whose key its journal knows) is behind it.
    fn after_first_call(unavailable_calls: u32) -> Arc<FlakyAfterEffect> {
        let service = FlakyAfterEffect::new(unavailable_calls);
        *service.calls.lock().unwrap() = 1;
        service
    }
}

#[tokio::test(start_paused = true)]
async fn a_retryable_error_after_a_lost_reply_does_not_roll_the_saga_back() {
    let saga = FlakyAfterEffect::new(4);
    let runtime = support::runtime_with(&saga).await;
    let outcome = runtime.run::<FlakyAfterEffect>(()).await.unwrap();
    // "Unavailable" says nothing of the first call, whose effect happened:
    // when the attempts run out, the saga is stuck, not rolled back.
    let Outcome::Stuck(report) = outcome else {
        panic!("expected stuck, got {outcome:?}");
    };
    assert_eq!(report.stuck.as_ref().map(|f| f.step), Some("hold"));
    assert_eq!(
        *saga.calls.lock().unwrap(),
        2,
        "1 lost reply, 1 unavailable"
    );
    assert_eq!(saga.applied.lock().unwrap().len(), 1);
    assert!(saga.released.lock().unwrap().is_empty());
}

/// Recovery: an attempt running when the process stopped may have taken
/// effect, so after the crash the step is retried under its key; with the
/// service unavailable past its single attempt the saga is stuck, not rolled
/// back, and an operator's resume, once the service is back, finishes it.
#[tokio::test(start_paused = true)]
async fn an_attempt_cut_off_by_a_crash_leaves_the_saga_stuck_until_it_answers() {
    // created (0), hold started (1), hold succeeded (2): crash before 2, so
    // the effect happened and its record is lost.
    let before = FlakyAfterEffect::new(0);
    let options = SagaOptions::new().retry("hold", saga::RetryPolicy::attempts(1));
    let (durable, _) = support::crashed_before(Arc::clone(&before), (), options, 2).await;
    assert_eq!(before.applied.lock().unwrap().len(), 1);

    // After the restart the service is unavailable once, then answers (its
    // journal knows the key).
    let after = FlakyAfterEffect::after_first_call(1);
    let second = support::restarted(&durable, Arc::clone(&after)).await;
    let report = second.recover().await.unwrap();
    assert_eq!((report.stuck, report.compensated), (1, 0), "{report:?}");
    assert!(after.released.lock().unwrap().is_empty());
    let id = handle_id(&durable).await;
    match second.resume(id).await.unwrap() {
        saga::Ended::Completed => {}
        other => panic!("expected completed, got {other:?}"),
    }
    assert_eq!(*after.calls.lock().unwrap(), 1 + 1 + 1);
    assert!(after.released.lock().unwrap().is_empty());
}

/// The one saga in `store`.
async fn handle_id(store: &saga::store::MemoryStore) -> saga::SagaId {
    use saga::store::{ListFilter, Store};
    let all = store.list(ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    all[0].id
}

/// Recovery, when the crash also caught the attempt's start record before it
/// was durable (runs do not wait for starts): the log shows the step never
/// started, yet its effect may have happened. The step that was running is
/// still treated as unanswered: when its attempts run out the saga is stuck,
/// not rolled back, which would leave that effect with nothing to undo it.
#[tokio::test(start_paused = true)]
async fn an_attempt_whose_start_record_was_lost_is_not_rolled_back() {
    use saga::store::{MemoryStore, Store};
    use saga::testing::{CrashPoint, CrashingStore};

    // created (0), hold started (1): crash before 1; the step runs anyway.
    let durable = MemoryStore::new();
    let crashing = CrashingStore::new(durable.clone(), CrashPoint::BeforeDurable(1));
    let first = support::logging_to(crashing.clone()).await;
    let before = FlakyAfterEffect::new(0);
    first.register(Arc::clone(&before));
    let handle = first.start::<FlakyAfterEffect>(()).await.unwrap();
    while before.applied.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    drop(handle);
    let log = durable.unfinished().await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].records.len(), 1, "only `created` is durable");

    // After the restart the service is unavailable three times (more than
    // the step's two attempts).
    let after = FlakyAfterEffect::after_first_call(3);
    let second = support::restarted(&durable, Arc::clone(&after)).await;
    let report = second.recover().await.unwrap();
    assert_eq!((report.stuck, report.compensated), (1, 0), "{report:?}");
    assert_eq!(*after.calls.lock().unwrap(), 1 + 2);
    assert!(after.released.lock().unwrap().is_empty());
}

/// Cancelling (or the deadline passing) while a step's outcome is unknown
/// does not roll back without its output; the step goes on within its
/// attempts, and the saga ends stuck when they run out: it never hangs.
#[tokio::test(start_paused = true)]
async fn a_cancelled_saga_whose_step_never_answers_ends_stuck() {
    let saga = SlowReply::new(u32::MAX);
    let runtime = Runtime::builder().build().await.unwrap();
    let slow = runtime.register(Arc::clone(&saga));
    let handle = slow.start(()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await; // the first attempt timed out
    handle.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(24 * 3600), handle.outcome())
        .await
        .expect("the saga ends")
        .unwrap();
    let Outcome::Stuck(report) = outcome else {
        panic!("expected stuck, got {outcome:?}");
    };
    assert_eq!(report.stuck.as_ref().map(|f| f.attempts), Some(2));
    assert!(saga.released.lock().unwrap().is_empty());
}

/// A crash after the step gave up unanswered but before the saga was
/// recorded stuck: recovery ends it stuck too, and does not roll it back.
#[tokio::test(start_paused = true)]
async fn a_crash_before_an_unanswered_step_is_recorded_stuck_recovers_stuck() {
    // created (0), hold started (1), failed (2), started (3), gave up (4),
    // stuck (5): crash before 5.
    let (durable, _) =
        support::crashed_before(SlowReply::new(u32::MAX), (), SagaOptions::new(), 5).await;
    let after = SlowReply::new(u32::MAX);
    let second = support::restarted(&durable, Arc::clone(&after)).await;
    let report = second.recover().await.unwrap();
    assert_eq!((report.stuck, report.compensated), (1, 0), "{report:?}");
    assert!(after.released.lock().unwrap().is_empty());
    assert!(
        after.applied.lock().unwrap().is_empty(),
        "nothing ran again"
    );
}

/// An operator who finds that the step that never answered had no effect
/// (or undoes it by hand) marks it compensated: the resume then rolls the
/// saga back instead of trying the step again.
#[tokio::test(start_paused = true)]
async fn an_operator_marks_an_unanswered_step_undone_and_the_saga_rolls_back() {
    use saga::store::{MemoryStore, Store};

    /// `reserve` answers; `hold` never does.
    pub struct TwoHolds {
        reserved: Mutex<Vec<String>>,
        unreserved: Mutex<Vec<String>>,
        holds: Mutex<u32>,
    }
    #[saga(input = ())]
    impl TwoHolds {
        #[step(compensate = unreserve)]
        async fn reserve(&self, cx: &StepContext) -> Result<String, StepError> {
            let key = cx.idempotency_key().to_string();
            self.reserved.lock().unwrap().push(key.clone());
            Ok(key)
        }
        async fn unreserve(&self, reserve: &str) -> Result<(), StepError> {
            self.unreserved.lock().unwrap().push(reserve.to_string());
            Ok(())
        }
        #[step(compensate = release, retry(attempts = 2, backoff = none, timeout = "100ms"))]
        async fn hold(&self) -> Result<u32, StepError> {
            *self.holds.lock().unwrap() += 1;
            std::future::pending::<()>().await; // never answers
            Ok(0)
        }
        async fn release(&self) -> Result<(), StepError> {
            panic!("`hold` never answered: there is nothing to release");
        }
        #[step(pivot)]
        async fn capture(&self) -> Result<(), StepError> {
            Ok(())
        }
    }

    let store = MemoryStore::new();
    let runtime = support::logging_to(store.clone()).await;
    let saga = Arc::new(TwoHolds {
        reserved: Mutex::new(Vec::new()),
        unreserved: Mutex::new(Vec::new()),
        holds: Mutex::new(0),
    });
    let two = runtime.register(Arc::clone(&saga));
    let outcome = two.run(()).await.unwrap();
    let Outcome::Stuck(report) = outcome else {
        panic!("expected stuck, got {outcome:?}");
    };
    let id = report.saga_id;
    assert_eq!(report.stuck.as_ref().map(|f| f.step), Some("hold"));
    // The inspector shows `hold` as unknown, not as failed.
    let view = saga::inspect::Inspection::of(&store.load(id).await.unwrap().unwrap());
    assert!(
        view.steps
            .contains(&("hold".into(), saga::inspect::StepStatus::Unknown)),
        "{:?}",
        view.steps
    );
    assert!(
        view.mermaid().contains("class s1 unknown"),
        "{}",
        view.mermaid()
    );
    // `capture` is not stuck, and never ran: it cannot be marked.
    let refused = runtime.mark_compensated(id, "capture").await.unwrap_err();
    assert!(refused.to_string().contains("no compensation"), "{refused}");

    runtime.mark_compensated(id, "hold").await.unwrap();
    match runtime.resume(id).await.unwrap() {
        // `hold` as the operator marked it, `reserve` by its compensation.
        saga::Ended::Compensated(report) => assert_eq!(report.compensated, ["hold", "reserve"]),
        other => panic!("expected compensated, got {other:?}"),
    }
    assert_eq!(
        *saga.unreserved.lock().unwrap(),
        *saga.reserved.lock().unwrap()
    );
    assert_eq!(*saga.holds.lock().unwrap(), 2, "`hold` was not tried again");
    let log = store.load(id).await.unwrap().unwrap();
    assert_eq!(log.summary.state, saga::log::SagaState::Compensated);
}

/// A step cut off by a crash (unknown from the crash, not from a timeout)
/// gives up with a plain retryable error after recovery; a second crash
/// between that give-up and the stuck record still recovers stuck: the log
/// says the outcome is unknown, not only the last error.
#[tokio::test(start_paused = true)]
async fn a_crash_cut_step_that_gives_up_and_crashes_again_recovers_stuck() {
    use saga::testing::{CrashPoint, CrashingStore};

    let before = FlakyAfterEffect::new(0);
    let options = SagaOptions::new().retry("hold", saga::RetryPolicy::attempts(1));
    let (durable, _) = support::crashed_before(Arc::clone(&before), (), options, 2).await;
    assert_eq!(before.applied.lock().unwrap().len(), 1);

    // Second process: unavailable; hold gives up (unresolved -> stuck), but
    // the process dies before `stuck` is durable (appends: started 0,
    // failed 1, stuck 2).
    let crashing2 = CrashingStore::new(durable.clone(), CrashPoint::BeforeDurable(2));
    let second = support::logging_to(crashing2.clone()).await;
    let mid = FlakyAfterEffect::after_first_call(100);
    second.register(Arc::clone(&mid));
    tokio::select! {
        () = crashing2.wait_for_crash() => {}
        r = second.recover() => panic!("should have crashed: {r:?}"),
    }
    drop(second);

    // Third process: the live run would have ended stuck.
    let after = FlakyAfterEffect::after_first_call(100);
    let third = support::restarted(&durable, Arc::clone(&after)).await;
    let report = third.recover().await.unwrap();
    assert_eq!((report.stuck, report.compensated), (1, 0), "{report:?}");
}

/// A step after the pivot whose attempts time out ends stuck (a person
/// capped them). It cannot be marked compensated into a rollback: the pivot
/// is the point of no return.
#[tokio::test(start_paused = true)]
async fn marking_a_step_after_the_pivot_does_not_roll_back_past_it() {
    use saga::store::MemoryStore;

    pub struct AfterPivot {
        unreserved: Mutex<u32>,
    }
    #[saga(input = ())]
    impl AfterPivot {
        #[step(compensate = unreserve)]
        async fn reserve(&self) -> Result<u32, StepError> {
            Ok(1)
        }
        async fn unreserve(&self, reserve: u32) -> Result<(), StepError> {
            let _ = reserve;
            *self.unreserved.lock().unwrap() += 1;
            Ok(())
        }
        #[step(pivot)]
        async fn capture(&self) -> Result<(), StepError> {
            Ok(())
        }
        #[step(retry(attempts = 2, backoff = none, timeout = "100ms"))]
        async fn notify(&self) -> Result<(), StepError> {
            std::future::pending::<()>().await;
            Ok(())
        }
    }

    let store = MemoryStore::new();
    let runtime = support::logging_to(store.clone()).await;
    let saga = Arc::new(AfterPivot {
        unreserved: Mutex::new(0),
    });
    let h = runtime.register(Arc::clone(&saga));
    let outcome = h.run(()).await.unwrap();
    assert!(matches!(outcome, Outcome::Stuck(_)), "{outcome:?}");
    let id = handle_id(&store).await;
    let marked = runtime.mark_compensated(id, "notify").await;
    let resumed = if marked.is_ok() {
        Some(runtime.resume(id).await)
    } else {
        None
    };
    assert_eq!(
        *saga.unreserved.lock().unwrap(),
        0,
        "rolled back past the pivot: mark = {marked:?}, resume = {resumed:?}"
    );
}

/// A concurrent group where the earlier member fails for good and the later
/// one gives up unanswered: live, the group is stuck (the unresolved member
/// decides). A crash before the stuck record recovers stuck too, not rolled
/// back.
pub struct GroupUnresolved {
    holds: Mutex<u32>,
    unreserved: Mutex<u32>,
}
#[saga(input = (), concurrent)]
impl GroupUnresolved {
    #[step(compensate = unrefuse)]
    async fn refuse(&self) -> Result<u32, StepError> {
        Err(saga::permanent(std::io::Error::other("refused")))
    }
    async fn unrefuse(&self) -> Result<(), StepError> {
        Ok(())
    }
    #[step(compensate = release, retry(attempts = 2, backoff = none, timeout = "100ms"))]
    async fn hold(&self) -> Result<u32, StepError> {
        *self.holds.lock().unwrap() += 1;
        std::future::pending::<()>().await;
        Ok(0)
    }
    async fn release(&self) -> Result<(), StepError> {
        *self.unreserved.lock().unwrap() += 1;
        Ok(())
    }
    #[step(pivot)]
    async fn capture(&self, refuse: &u32, hold: &u32) -> Result<(), StepError> {
        let _ = (refuse, hold);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_group_left_unresolved_recovers_as_it_ran() {
    use saga::store::{MemoryStore, Store};
    let fresh = || {
        Arc::new(GroupUnresolved {
            holds: Mutex::new(0),
            unreserved: Mutex::new(0),
        })
    };
    // Live, to completion: stuck.
    let store = MemoryStore::new();
    let rt = support::logging_to(store.clone()).await;
    let live = rt.register(fresh()).run(()).await.unwrap();
    assert!(matches!(live, Outcome::Stuck(_)), "{live:?}");
    let id = handle_id(&store).await;
    let records = store.load(id).await.unwrap().unwrap().records;
    let last = records.len() as u64 - 1;
    drop(rt);

    // Again, crashing before the stuck record.
    let (durable, _) = support::crashed_before(fresh(), (), SagaOptions::new(), last).await;
    let report = support::restarted(&durable, fresh())
        .await
        .recover()
        .await
        .unwrap();
    assert_eq!((report.stuck, report.compensated), (1, 0), "{report:?}");
}

/// Under `attempts = forever` (here a run's override) a step whose replies
/// are lost is retried until it answers: never stuck, never rolled back.
#[tokio::test(start_paused = true)]
async fn a_step_retried_forever_is_retried_until_it_answers() {
    let saga = SlowReply::new(5);
    let runtime = Runtime::builder().build().await.unwrap();
    let slow = runtime.register(Arc::clone(&saga));
    let forever = saga::RetryPolicy::forever()
        .backoff(saga::Backoff::fixed(Duration::from_millis(10)))
        .timeout(Duration::from_millis(100));
    let options = SagaOptions::new().retry("hold", forever);
    let outcome = slow.run_with((), options).await.unwrap();
    let outputs = outcome.completed().expect("completed once `hold` answered");
    assert_eq!(
        *saga.applied.lock().unwrap(),
        std::slice::from_ref(&outputs.hold)
    );
    assert!(saga.released.lock().unwrap().is_empty());
}
