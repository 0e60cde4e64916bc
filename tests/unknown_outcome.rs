//! An attempt cut off by its timeout may have taken effect. Such a step is
//! retried under the same key until it answers, even past its attempts, so
//! that rolling back never orphans an effect nobody can compensate.

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

async fn run(slow_attempts: u32, faults: Faults) -> (Arc<SlowReply>, Outcome<SlowReplyOutputs>) {
    let saga = Arc::new(SlowReply {
        slow_attempts,
        applied: Mutex::new(Vec::new()),
        released: Mutex::new(Vec::new()),
    });
    let runtime = Runtime::builder().build().await.unwrap();
    runtime.register(Arc::clone(&saga));
    let outcome = runtime
        .run_with::<SlowReply>((), SagaOptions::new().faults(faults))
        .await
        .unwrap();
    (saga, outcome)
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_replies_time_out_is_retried_past_its_attempts_until_it_answers() {
    let (saga, outcome) = run(5, Faults::new()).await;
    let outputs = outcome.completed().expect("completed once `hold` answered");
    assert_eq!(
        *saga.applied.lock().unwrap(),
        std::slice::from_ref(&outputs.hold)
    );
    assert!(saga.released.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_effect_whose_reply_was_lost_is_compensated_when_the_saga_rolls_back() {
    let (saga, outcome) = run(4, Faults::new().fail_step_permanently("capture")).await;
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

#[tokio::test(start_paused = true)]
async fn a_retryable_error_after_a_lost_reply_does_not_end_the_retries() {
    let saga = Arc::new(FlakyAfterEffect {
        unavailable_calls: 4,
        calls: Mutex::new(0),
        applied: Mutex::new(Vec::new()),
        released: Mutex::new(Vec::new()),
    });
    let runtime = Runtime::builder().build().await.unwrap();
    runtime.register(Arc::clone(&saga));
    let outcome = runtime.run::<FlakyAfterEffect>(()).await.unwrap();
    let outputs = outcome
        .completed()
        .expect("completed once the service answered");
    assert_eq!(
        *saga.calls.lock().unwrap(),
        6,
        "1 lost reply, 4 unavailable, 1 answer"
    );
    assert_eq!(*saga.applied.lock().unwrap(), [outputs.hold]);
    assert!(saga.released.lock().unwrap().is_empty());
}

/// Recovery: an attempt running when the process stopped may have taken
/// effect, so after the crash the step is retried until it answers, past
/// its single attempt, even while the service is unavailable.
#[tokio::test(start_paused = true)]
async fn an_attempt_cut_off_by_a_crash_is_retried_until_it_answers() {
    use saga::store::MemoryStore;
    use saga::testing::{CrashPoint, CrashingStore};

    let fresh = |unavailable_calls| {
        Arc::new(FlakyAfterEffect {
            unavailable_calls,
            calls: Mutex::new(0),
            applied: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
        })
    };
    // created (0), hold started (1), hold succeeded (2): crash before 2, so
    // the effect happened and its record is lost.
    let durable = MemoryStore::new();
    let crashing = CrashingStore::new(durable.clone(), CrashPoint::BeforeDurable(2));
    let first = Runtime::builder()
        .store(crashing.clone())
        .build()
        .await
        .unwrap();
    let before = fresh(0);
    first.register(Arc::clone(&before));
    let options = SagaOptions::new().retry("hold", saga::RetryPolicy::attempts(1));
    let handle = first
        .start_with::<FlakyAfterEffect>((), options)
        .await
        .unwrap();
    tokio::select! {
        () = crashing.wait_for_crash() => {}
        _ = handle.outcome() => panic!("the run should have crashed"),
    }
    assert_eq!(before.applied.lock().unwrap().len(), 1);

    // After the restart the service is unavailable three times, then
    // answers (its journal knows the key).
    let after = fresh(3);
    *after.calls.lock().unwrap() = 1;
    let second = Runtime::builder()
        .store(durable.clone())
        .build()
        .await
        .unwrap();
    second.register(Arc::clone(&after));
    let report = second.recover().await.unwrap();
    assert_eq!((report.completed, report.compensated), (1, 0), "{report:?}");
    assert_eq!(*after.calls.lock().unwrap(), 1 + 3 + 1);
    assert!(after.released.lock().unwrap().is_empty());
}

/// Recovery, when the crash also caught the attempt's start record before it
/// was durable (runs do not wait for starts): the log shows the step never
/// started, yet its effect may have happened. The step that was running is
/// still retried until it answers, not given up after its attempts, which
/// would roll back and leave that effect in place with nothing to undo it.
#[tokio::test(start_paused = true)]
async fn an_attempt_whose_start_record_was_lost_is_retried_until_it_answers() {
    use saga::store::{MemoryStore, Store};
    use saga::testing::{CrashPoint, CrashingStore};

    let fresh = |unavailable_calls| {
        Arc::new(FlakyAfterEffect {
            unavailable_calls,
            calls: Mutex::new(0),
            applied: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
        })
    };
    // created (0), hold started (1): crash before 1; the step runs anyway.
    let durable = MemoryStore::new();
    let crashing = CrashingStore::new(durable.clone(), CrashPoint::BeforeDurable(1));
    let first = Runtime::builder()
        .store(crashing.clone())
        .build()
        .await
        .unwrap();
    let before = fresh(0);
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
    // the step's two attempts), then answers.
    let after = fresh(3);
    *after.calls.lock().unwrap() = 1;
    let second = Runtime::builder()
        .store(durable.clone())
        .build()
        .await
        .unwrap();
    second.register(Arc::clone(&after));
    let report = second.recover().await.unwrap();
    assert_eq!((report.completed, report.compensated), (1, 0), "{report:?}");
    assert_eq!(*after.calls.lock().unwrap(), 1 + 3 + 1);
    assert!(after.released.lock().unwrap().is_empty());
}
