//! Raw identifiers name a saga, its steps and a compensation: the names
//! recorded in the definition (and the log) are the identifiers without
//! `r#`, and a parameter `r#move` receives the output of step `r#move`.

use std::sync::Arc;

use saga::Faults;
use saga::prelude::*;

#[allow(non_camel_case_types)]
pub struct r#async;

#[saga(input = u32)]
impl r#async {
    #[step(compensate = r#return)]
    async fn r#move(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input + 1)
    }
    async fn r#return(&self, r#move: u32) -> Result<(), StepError> {
        assert_eq!(r#move, 3);
        Ok(())
    }

    #[step(pivot)]
    async fn r#yield(&self, r#move: &u32) -> Result<u32, StepError> {
        Ok(*r#move * 10)
    }
}

fn main() {
    let def = r#async::definition();
    assert_eq!(def.name(), "async");
    assert_eq!(def.steps()[0].name(), "move");
    assert_eq!(def.steps()[0].compensation(), Some("return"));
    assert_eq!(def.steps()[1].name(), "yield");
    assert_eq!(def.steps()[1].dependencies(), &[0]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = Runtime::builder().build().await.unwrap();
        runtime.register(Arc::new(r#async));
        let outputs: asyncOutputs = runtime
            .run::<r#async>(2)
            .await
            .unwrap()
            .completed()
            .expect("completes");
        assert_eq!(outputs.r#move, 3);
        assert_eq!(outputs.r#yield, 30);

        let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("yield"));
        let outcome = runtime.run_with::<r#async>(2, options).await.unwrap();
        assert!(outcome.is_compensated(), "{outcome:?}");
    });
}
