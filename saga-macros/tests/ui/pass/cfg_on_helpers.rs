//! `#[cfg]` on a method that is neither a step nor a compensation is kept
//! as written, and so is a `#[cfg_attr]` on a step that adds neither
//! `#[step]` nor `#[cfg]` (such as a conditional lint or `instrument`).

use std::sync::Arc;

use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[cfg(unix)]
    fn fee(&self) -> u32 {
        1
    }
    #[cfg(not(unix))]
    fn fee(&self) -> u32 {
        1
    }
    #[cfg(any())]
    async fn never_built(&self) -> Result<(), StepError> {
        Ok(())
    }

    #[step(compensate = release)]
    #[cfg_attr(debug_assertions, allow(clippy::unused_async))]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input + self.fee())
    }
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = Runtime::builder().build().await.unwrap();
        runtime.register(Arc::new(Transfer));
        let outputs = runtime
            .run::<Transfer>(2)
            .await
            .unwrap()
            .completed()
            .expect("completes");
        assert_eq!(outputs.capture, 3);
    });
}
