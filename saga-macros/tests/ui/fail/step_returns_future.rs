use std::future::Future;
use std::pin::Pin;

use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    // A plain `fn` returning a future: one error, asking for `async fn`
    // with the future's output as the return type.
    #[step(compensate = release)]
    fn hold(&self, input: &u32) -> impl Future<Output = Result<u32, StepError>> + Send + '_ {
        let amount = *input;
        async move { Ok(amount) }
    }
    fn release(
        &self,
        hold: u32,
    ) -> Pin<Box<dyn Future<Output = Result<(), StepError>> + Send + '_>> {
        Box::pin(async move {
            let _ = hold;
            Ok(())
        })
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {
    // The methods and the saga still exist beside the errors.
    let _ = Transfer.hold(&1);
    let _ = Transfer::definition();
}
