//! The in-memory hot path allocates nothing per step: a saga run on the
//! caller's task costs the same allocations whether it has three steps or
//! six, completing or rolling back, and a run that completes allocates
//! nothing at all. And nothing outlives a saga: once sagas end, the heap is
//! back where it was before they started. Counted by dhat's allocator, on a
//! current-thread runtime, so nothing else allocates meanwhile.

use std::sync::Arc;

use saga::prelude::*;

// Counts heap blocks (the workspace forbids `unsafe`, so no hand-written
// counting allocator).
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// dhat counts one profiler at a time, and the tests of this file must not
/// count each other's allocations: each holds this while it runs.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The profiler is dropped before the lock is released (tuple fields drop
/// in order).
fn profile() -> (dhat::Profiler, std::sync::MutexGuard<'static, ()>) {
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    (dhat::Profiler::builder().testing().build(), guard)
}

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
    let _profiling = profile();
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

/// Two steps, the second waiting a little, so that many sagas are in flight
/// at once.
pub struct Waits;

#[saga(input = u64)]
impl Waits {
    #[step(compensate = undo)]
    async fn first(&self, input: &u64) -> Result<u64, Refused> {
        Ok(*input)
    }
    async fn undo(&self) -> Result<(), Refused> {
        Ok(())
    }

    #[step(pivot)]
    async fn second(&self, first: &u64) -> Result<u64, Refused> {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Ok(first + 1)
    }
}

/// Starts `n` sagas on their own tasks, waits until all are in flight, then
/// until all end; returns the heap bytes in use while they were in flight.
async fn round(runtime: &Runtime, n: u64) -> u64 {
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        handles.push(runtime.start::<Waits>(i).await.expect("start"));
    }
    // Every task reaches its timer.
    tokio::task::yield_now().await;
    let in_flight = dhat::HeapStats::get().curr_bytes as u64;
    for handle in handles {
        assert!(handle.outcome().await.expect("outcome").is_completed());
    }
    in_flight
}

#[test]
fn nothing_outlives_a_saga() {
    const N: u64 = 1000;
    let _profiling = profile();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio");
    tokio.block_on(async {
        let runtime = Runtime::builder().build().await.expect("runtime");
        runtime.register(Arc::new(Waits));
        // A first round grows what the runtimes keep for good (queues,
        // timer wheel levels, tracing's registry); the second is measured.
        round(&runtime, N).await;
        let before = dhat::HeapStats::get().curr_bytes as u64;
        let in_flight = round(&runtime, N).await;
        let after = dhat::HeapStats::get().curr_bytes as u64;
        let per_saga = (in_flight - before) / N;
        println!("{per_saga} heap bytes per saga in flight; {before} before, {after} after");
        assert!(per_saga > 0, "the sagas were not in flight when counted");
        // Retention of even a few bytes per saga would show as thousands.
        assert!(
            after.abs_diff(before) < 256,
            "{N} sagas ended and the heap went from {before} to {after} bytes"
        );
    });
}
