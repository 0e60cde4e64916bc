use saga::prelude::*;

pub struct Transfer;

pub trait Bank {
    fn hold(&self);
}

#[saga(input = u32)]
impl Bank for Transfer {
    fn hold(&self) {}
}

fn main() {
    Transfer.hold();
}
