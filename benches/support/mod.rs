//! The sagas the benchmarks run, each beside the same work written by hand.
//! Shared by `benches/in_memory.rs` and `examples/bench.rs`.

#![allow(dead_code)]

use std::sync::Arc;

use saga::prelude::*;

/// A 3-step saga whose steps do nothing; `fail_last` makes the last step
/// fail permanently, so the first two are compensated.
pub struct Noop {
    pub fail_last: bool,
}

/// The error of the benchmark's failing step.
#[derive(Debug)]
pub struct Fail;

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fail")
    }
}

impl std::error::Error for Fail {}

impl Classify for Fail {
    fn is_retryable(&self) -> bool {
        false
    }
}

#[saga(input = u64)]
impl Noop {
    #[step(compensate = undo_a)]
    async fn a(&self, input: &u64) -> Result<u64, Fail> {
        Ok(*input)
    }
    async fn undo_a(&self, a: &u64) -> Result<(), Fail> {
        std::hint::black_box(a);
        Ok(())
    }

    #[step(compensate = undo_b)]
    async fn b(&self, a: &u64) -> Result<u64, Fail> {
        Ok(a + 1)
    }
    async fn undo_b(&self, b: &u64) -> Result<(), Fail> {
        std::hint::black_box(b);
        Ok(())
    }

    #[step(pivot)]
    async fn c(&self, b: &u64) -> Result<u64, Fail> {
        if self.fail_last {
            return Err(Fail);
        }
        Ok(b + 1)
    }
}

async fn a(input: u64) -> Result<u64, Fail> {
    Ok(std::hint::black_box(input))
}
async fn undo_a(a: u64) -> Result<(), Fail> {
    std::hint::black_box(a);
    Ok(())
}
async fn b(a: u64) -> Result<u64, Fail> {
    Ok(std::hint::black_box(a + 1))
}
async fn undo_b(b: u64) -> Result<(), Fail> {
    std::hint::black_box(b);
    Ok(())
}
async fn c(b: u64, fail: bool) -> Result<u64, Fail> {
    if fail {
        return Err(Fail);
    }
    Ok(std::hint::black_box(b + 1))
}

/// The same three calls by hand, with `?` and a hand-written undo.
pub async fn by_hand(input: u64, fail_last: bool) -> Result<u64, Fail> {
    let a = a(input).await?;
    let b = match b(a).await {
        Ok(b) => b,
        Err(e) => {
            undo_a(a).await?;
            return Err(e);
        }
    };
    match c(b, fail_last).await {
        Ok(c) => Ok(c),
        Err(e) => {
            undo_b(b).await?;
            undo_a(a).await?;
            Err(e)
        }
    }
}

/// Builds `builder` (in memory, or with a store) and registers [`Noop`].
pub async fn with_noop(builder: saga::Builder, fail_last: bool) -> Runtime {
    let runtime = builder.build().await.expect("runtime");
    runtime.register(Arc::new(Noop { fail_last }));
    runtime
}
