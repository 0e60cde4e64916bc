use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer
where
    Transfer: Send,
{
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<u32, StepError>
    where
        Self: Sync,
    {
        Ok(*input)
    }
    async fn release(&self, hold: u32) -> Result<(), StepError>
    where
        Self: Sync,
    {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Result<u32, StepError> {
        Ok(*hold)
    }
}

fn main() {
    // The saga still exists beside the errors.
    let _ = Transfer::definition();
}
