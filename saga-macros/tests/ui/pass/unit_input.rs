//! A saga whose input is `()`: steps simply do not name `input`.

use std::sync::Arc;

use saga::prelude::*;

pub struct Nightly;

#[saga(input = ())]
impl Nightly {
    #[step(compensate = unsnapshot)]
    async fn snapshot(&self) -> Result<u32, StepError> {
        Ok(1)
    }
    async fn unsnapshot(&self, snapshot: u32, input: &()) -> Result<(), StepError> {
        let () = *input;
        assert_eq!(snapshot, 1);
        Ok(())
    }

    #[step(pivot)]
    async fn compact(&self, snapshot: &u32) -> Result<(), StepError> {
        assert_eq!(*snapshot, 1);
        Ok(())
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = Runtime::builder().build().await.unwrap();
        runtime.register(Arc::new(Nightly));
        let outputs = runtime
            .run::<Nightly>(())
            .await
            .unwrap()
            .completed()
            .expect("completes");
        assert_eq!(outputs.snapshot, 1);
        let () = outputs.compact;
    });
}
