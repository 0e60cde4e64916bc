//! The in-memory hot path allocates nothing per step: a saga run on the
//! caller's task costs the same allocations whether it has three steps or
//! six, completing or rolling back, and a run that completes allocates
//! nothing at all. Counted by dhat's allocator, on a
//! current-thread runtime, so nothing else allocates meanwhile.

use std::sync::Arc;

use saga::prelude::*;

// Counts heap blocks (the workspace forbids `unsafe`, so no hand-written
// counting allocator).
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// A permanent refusal, to roll back with.
#[derive(Debug, thiserror::Error)]
#[error("refused")]
pub struct Refused;

impl Classify for Refused {
    fn is_retryable(&self) -> bool {
        false
    }
}

/// Three steps; the last fails if `fail`.
pub struct Three {
    fail: bool,
}

#[saga(input = u64)]
impl Three {
    #[step(compensate = undo_a)]
    async fn a(&self, input: &u64) -> Result<u64, Refused> {
        Ok(*input)
    }
    async fn undo_a(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(compensate = undo_b)]
    async fn b(&self, a: &u64) -> Result<u64, Refused> {
        Ok(a + 1)
    }
    async fn undo_b(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(pivot)]
    async fn c(&self, b: &u64) -> Result<u64, Refused> {
        if self.fail {
            return Err(Refused);
        }
        Ok(b + 1)
    }
}

/// Six steps; the last fails if `fail`.
pub struct Six {
    fail: bool,
}

#[saga(input = u64)]
impl Six {
    #[step(compensate = undo_a)]
    async fn a(&self, input: &u64) -> Result<u64, Refused> {
        Ok(*input)
    }
    async fn undo_a(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(compensate = undo_b)]
    async fn b(&self, a: &u64) -> Result<u64, Refused> {
        Ok(a + 1)
    }
    async fn undo_b(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(compensate = undo_c)]
    async fn c(&self, b: &u64) -> Result<u64, Refused> {
        Ok(b + 1)
    }
    async fn undo_c(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(compensate = undo_d)]
    async fn d(&self, c: &u64) -> Result<u64, Refused> {
        Ok(c + 1)
    }
    async fn undo_d(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(compensate = undo_e)]
    async fn e(&self, d: &u64) -> Result<u64, Refused> {
        Ok(d + 1)
    }
    async fn undo_e(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(pivot)]
    async fn f(&self, e: &u64) -> Result<u64, Refused> {
        if self.fail {
            return Err(Refused);
        }
        Ok(e + 1)
    }
}

/// Allocations per run of saga `S`, over many runs (after a warm-up run, so
/// one-time allocations of the runtime and of `tracing` are not counted).
fn allocations_per_run<S: Saga<Input = u64>>(saga: S) -> f64 {
    const RUNS: u64 = 1000;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio");
    tokio.block_on(async {
        let runtime = Runtime::builder().build().await.expect("runtime");
        runtime.register(Arc::new(saga));
        let _ = runtime.run::<S>(0).await.expect("warm-up");
        let before = dhat::HeapStats::get().total_blocks;
        for i in 0..RUNS {
            let _ = runtime.run::<S>(i).await.expect("run");
        }
        (dhat::HeapStats::get().total_blocks - before) as f64 / RUNS as f64
    })
}

#[test]
fn a_saga_in_memory_allocates_nothing_per_step() {
    let _profiler = dhat::Profiler::builder().testing().build();
    for fail in [false, true] {
        let three = allocations_per_run(Three { fail });
        let six = allocations_per_run(Six { fail });
        println!("fail = {fail}: {three} allocations per run of 3 steps, {six} of 6");
        // An allocation per step would show as 3 more per run (or, for a
        // growing list, at least 1); a rare one-off (a runtime's internal
        // buffer growing) as a small fraction.
        assert!(
            (six - three).abs() < 0.5,
            "fail = {fail}: 3 steps make {three} allocations per run, 6 steps {six}"
        );
        if !fail {
            assert!(three < 0.5, "a completed run allocates: {three} per run");
        }
    }
}
