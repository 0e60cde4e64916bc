use saga::prelude::*;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> Result<Self, StepError> {
        let _ = input;
        Ok(Transfer)
    }
    // `Self` in a parameter is the saga's type, as in the rest of the impl.
    async fn release(&self, hold: Self) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &Self) -> Result<Option<Self>, StepError> {
        Ok(Some(hold.clone()))
    }
}

fn main() {
    // The saga still exists beside the errors.
    let _ = Transfer::definition();
}
