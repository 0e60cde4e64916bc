use saga::prelude::*;

pub struct Transfer;

#[saga(input = u32)]
impl Transfer {
    #[step(compensate = release)]
    async fn hold(&self, input: &u32) -> u32 {
        *input
    }
    async fn release(&self, hold: u32) {
        let _ = hold;
    }

    #[step(pivot)]
    async fn capture(&self, hold: &u32) -> Option<u32> {
        Some(*hold)
    }

    #[step]
    async fn notify(&self, capture: &u32) {
        let _ = capture;
    }

    #[step]
    async fn audit(&self, notify: &()) -> (u32, String) {
        let _ = notify;
        (1, String::new())
    }
}

fn main() {}
