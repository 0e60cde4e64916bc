//! A saga without a pivot: every step that changes something has a
//! compensation, and a failure of the last step undoes the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use saga::prelude::*;
use saga::{Faults, StepKind};

#[derive(Default)]
pub struct Provision {
    machines: AtomicU32,
}

#[saga(input = u32)]
impl Provision {
    #[step(readonly)]
    async fn quota(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }

    #[step(compensate = destroy)]
    async fn create(&self, quota: &u32) -> Result<u32, StepError> {
        self.machines.fetch_add(*quota, Ordering::SeqCst);
        Ok(*quota)
    }
    async fn destroy(&self, create: u32) -> Result<(), StepError> {
        self.machines.fetch_sub(create, Ordering::SeqCst);
        Ok(())
    }

    #[step(compensate = unregister)]
    async fn register(&self, create: &u32) -> Result<String, StepError> {
        Ok(format!("{create} machines"))
    }
    async fn unregister(&self, register: String) -> Result<(), StepError> {
        assert_eq!(register, "3 machines");
        Ok(())
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let provision = Arc::new(Provision::default());
        let runtime = Runtime::builder().build().await.unwrap();
        runtime.register(Arc::clone(&provision));

        let outcome = runtime.run::<Provision>(3).await.unwrap();
        let outputs = outcome.completed().expect("completes");
        assert_eq!(outputs.register, "3 machines");
        assert_eq!(provision.machines.load(Ordering::SeqCst), 3);

        let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("register"));
        let outcome = runtime.run_with::<Provision>(3, options).await.unwrap();
        assert!(outcome.is_compensated(), "{outcome:?}");
        assert_eq!(provision.machines.load(Ordering::SeqCst), 3);
        assert!(
            Provision::definition()
                .steps()
                .iter()
                .all(|s| s.kind() != StepKind::Pivot)
        );
    });
}
