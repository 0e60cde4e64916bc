use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    #[cfg(not(test))]
    async fn release(&self, hold: u32) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[cfg(debug_assertions)]
    #[step(compensate = refund_fee)]
    async fn fee(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold / 100)
    }
    async fn refund_fee(&self, fee: u32) -> Result<(), StepError> {
        let _ = fee;
        Ok(())
    }

    // Two versions of one step: one error each, and nothing else.
    #[cfg(unix)]
    #[step(compensate = reverse)]
    async fn credit(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
    #[cfg(not(unix))]
    #[step(compensate = reverse)]
    async fn credit(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold + 1)
    }
    async fn reverse(&self, credit: u32) -> Result<(), StepError> {
        let _ = credit;
        Ok(())
    }

    #[cfg_attr(not(test), step(pivot))]
    async fn capture(&self, credit: &u32) -> Result<u32, StepError> {
        Ok(*credit)
    }

    #[step]
    #[cfg_attr(not(test), cfg(unix))]
    async fn notify(&self, capture: &u32) -> Result<(), StepError> {
        let _ = capture;
        Ok(())
    }
}

fn main() {
    // The saga still exists beside the errors.
    let _ = Transfer::definition();
}
