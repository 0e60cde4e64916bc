use saga::prelude::*;

pub struct Transfer {
    name: String,
}

#[saga(input = &'static str)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self) -> Result<&str, StepError> {
        Ok(&self.name)
    }
    async fn release(&self, hold: &str) -> Result<(), StepError> {
        let _ = hold;
        Ok(())
    }

    #[step(pivot)]
    async fn capture(&self, hold: &&str) -> Result<Vec<&'static str>, StepError> {
        let _ = hold;
        Ok(vec!["captured"])
    }
}

fn main() {
    let transfer = Transfer {
        name: String::new(),
    };
    let _ = transfer.hold();
}
