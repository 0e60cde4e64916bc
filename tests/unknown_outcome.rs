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
