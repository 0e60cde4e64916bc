//! In-memory saga throughput beside the same work written by hand.
//!
//! Run with: `cargo bench --bench in_memory`

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

mod support;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use saga::Runtime;

use support::{Noop, by_hand, with_noop};

const IN_FLIGHT: usize = 256;

fn runtime_for(fail_last: bool, rt: &tokio::runtime::Runtime) -> Runtime {
    rt.block_on(with_noop(Runtime::builder(), fail_last))
}

fn sequential(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("sequential");
    group.throughput(Throughput::Elements(1));
    for (label, fail) in [("complete", false), ("rollback", true)] {
        let runtime = &runtime_for(fail, &rt);
        group.bench_function(BenchmarkId::new("saga", label), |b| {
            // Borrowed, not cloned per run: the hand-written side pays for
            // no reference count either.
            b.to_async(&rt).iter(|| async move {
                let outcome = runtime.run::<Noop>(1).await.expect("registered");
                assert_eq!(outcome.is_completed(), !fail);
            })
        });
        // Through the handle `register` returns: no lookup per run.
        let noop = &runtime.saga::<Noop>().expect("registered");
        group.bench_function(BenchmarkId::new("saga_handle", label), |b| {
            b.to_async(&rt).iter(|| async move {
                let outcome = noop.run(1).await.expect("run");
                assert_eq!(outcome.is_completed(), !fail);
            })
        });
        group.bench_function(BenchmarkId::new("by_hand", label), |b| {
            b.to_async(&rt)
                .iter(|| async move { assert_eq!(by_hand(1, fail).await.is_ok(), !fail) })
        });
    }
    group.finish();
}

fn concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("in_flight_256");
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    for (label, fail) in [("complete", false), ("rollback", true)] {
        let runtime = runtime_for(fail, &rt);
        group.bench_function(BenchmarkId::new("saga", label), |b| {
            b.to_async(&rt).iter(|| {
                let runtime = runtime.clone();
                async move {
                    let mut set = tokio::task::JoinSet::new();
                    for i in 0..IN_FLIGHT {
                        let runtime = runtime.clone();
                        set.spawn(async move { runtime.run::<Noop>(i as u64).await });
                    }
                    while let Some(done) = set.join_next().await {
                        let outcome = done.expect("task").expect("registered");
                        assert_eq!(outcome.is_completed(), !fail);
                    }
                }
            })
        });
        group.bench_function(BenchmarkId::new("by_hand", label), |b| {
            b.to_async(&rt).iter(|| async move {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..IN_FLIGHT {
                    set.spawn(by_hand(i as u64, fail));
                }
                while let Some(done) = set.join_next().await {
                    assert_eq!(done.expect("task").is_ok(), !fail);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sequential, concurrent);
criterion_main!(benches);
