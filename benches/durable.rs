//! Durable saga throughput on the SQLite store with 256 sagas in flight,
//! every transition durable; prints how many log records each transaction
//! (each fsync) carried, which is what group commit buys.
//!
//! Run with: `cargo bench --bench durable`

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use saga::Runtime;
use saga::store::SqliteStore;

use support::{Noop, with_noop};

const IN_FLIGHT: usize = 256;

fn durable(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = std::env::temp_dir().join(format!("saga-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = SqliteStore::open(dir.join("sagas.db")).expect("store");
    let runtime = rt.block_on(with_noop(Runtime::builder().store(store.clone()), false));
    let mut group = c.benchmark_group("durable_sqlite");
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    group.sample_size(20);
    group.bench_function("in_flight_256", |b| {
        b.to_async(&rt).iter(|| {
            let runtime = runtime.clone();
            async move {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..IN_FLIGHT {
                    let runtime = runtime.clone();
                    set.spawn(async move { runtime.run::<Noop>(i as u64).await });
                }
                while let Some(done) = set.join_next().await {
                    let outcome = done.expect("task").expect("durable run");
                    assert!(outcome.is_completed());
                }
            }
        })
    });
    group.finish();
    let stats = store.stats();
    eprintln!(
        "durable_sqlite: {} records in {} transactions and {} fsyncs: {:.1} records per fsync",
        stats.records,
        stats.transactions,
        stats.syncs,
        stats.records_per_sync()
    );
    drop(runtime);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, durable);
criterion_main!(benches);
