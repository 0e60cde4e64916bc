//! A step may return the saga's own type, written by its name (`Self` would
//! name the generated outputs struct), and a parameter may name it as
//! `Self`, which is the saga's type there as in the rest of the impl.

use std::sync::Arc;

use saga::prelude::*;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transfer {
    fee: u32,
}

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<Transfer, StepError> {
        Ok(Transfer {
            fee: self.fee + *input,
        })
    }
    async fn release(&self, hold: Self) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &Self) -> Result<u32, StepError> {
        Ok(hold.fee)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = Runtime::builder().build().await.unwrap();
        runtime.register(Arc::new(Transfer { fee: 1 }));
        let outputs = runtime
            .run::<Transfer>(2)
            .await
            .unwrap()
            .completed()
            .expect("completes");
        assert_eq!(outputs.hold, Transfer { fee: 3 });
        assert_eq!(outputs.capture, 3);
    });
}
