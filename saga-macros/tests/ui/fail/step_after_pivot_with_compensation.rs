use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(pivot)]
    async fn capture(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }

    #[step(compensate = unnotify)]
    async fn notify(&self, capture: &u32) -> Result<u32, StepError> {
        Ok(*capture)
    }
    async fn unnotify(&self, notify: u32) -> Result<(), StepError> {
        let _ = notify;
        Ok(())
    }
}

fn main() {}
