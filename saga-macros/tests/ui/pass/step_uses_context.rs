//! A step and a compensation may ask for the `StepContext` with a
//! `cx: &StepContext` parameter, in any position.

use std::sync::Arc;
use std::sync::Mutex;

use saga::prelude::*;
use saga::{Faults, Phase};

#[derive(Default)]
pub struct Keys {
    seen: Mutex<Vec<String>>,
}

#[saga(input = u8)]
impl Keys {
    #[step(compensate = undo, retry(attempts = 3, backoff = none))]
    async fn first(&self, cx: &StepContext, input: &u8) -> Result<String, StepError> {
        assert_eq!(cx.phase(), Phase::Forward);
        assert_eq!(cx.step(), "first");
        assert_eq!(cx.saga_name(), "Keys");
        self.seen
            .lock()
            .unwrap()
            .push(format!("attempt {}", cx.attempt()));
        Ok(format!("{input}@{}", cx.idempotency_key()))
    }
    async fn undo(&self, first: &String, cx: &StepContext) -> Result<(), StepError> {
        assert_eq!(cx.phase(), Phase::Compensation);
        assert!(first.starts_with("4@"));
        self.seen
            .lock()
            .unwrap()
            .push(cx.idempotency_key().to_string());
        Ok(())
    }

    #[step(pivot)]
    async fn second(&self, first: &String) -> Result<(), StepError> {
        assert!(first.starts_with("4@"));
        Ok(())
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let keys = Arc::new(Keys::default());
        let runtime = Runtime::builder().build().await.unwrap();
        runtime.register(Arc::clone(&keys));
        let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("second"));
        let outcome = runtime.run_with::<Keys>(4, options).await.unwrap();
        assert!(outcome.is_compensated(), "{outcome:?}");
        let seen = keys.seen.lock().unwrap();
        assert_eq!(seen[0], "attempt 1");
        assert!(seen[1].ends_with("/first/undo"), "{seen:?}");
    });
}
