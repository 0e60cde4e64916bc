use saga::prelude::*;

#[saga(input = u32)]
pub struct Transfer {
    pub amount: u32,
}

fn main() {
    let _ = Transfer { amount: 1 };
}
