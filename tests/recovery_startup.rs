//! Recovery at a service's start: `spawn_recovery` returns at once even
//! when a recovered saga retries for good after its pivot (where
//! `recover` waits for it), what recovery cannot recover is logged as an
//! error rather than hidden behind an `Ok`, and a runtime without a store
//! has nothing to recover rather than an error.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga::log::{DefinitionSnapshot, Entry, Record, SagaState};
use saga::prelude::*;
use saga::store::{MemoryStore, Store};
use saga::testing::{CrashPoint, CrashingStore};
use saga::{Error, SagaId};
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// Reserve, charge (the pivot), then ship, which fails while the carrier
/// is down: after the pivot it is retried until it succeeds (the default).
pub struct Shipping {
    down: AtomicBool,
    shipments: AtomicUsize,
    unreserved: AtomicUsize,
}

impl Shipping {
    fn new(down: bool) -> Arc<Shipping> {
        Arc::new(Shipping {
            down: AtomicBool::new(down),
            shipments: AtomicUsize::new(0),
            unreserved: AtomicUsize::new(0),
        })
    }
}

#[saga(input = u32, name = "Shipping")]
impl Shipping {
    #[step(compensate = unreserve)]
    async fn reserve(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
    async fn unreserve(&self) -> Result<(), StepError> {
        self.unreserved.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[step(pivot)]
    async fn charge(&self, reserve: &u32) -> Result<u32, StepError> {
        Ok(*reserve)
    }

    #[step]
    async fn ship(&self, charge: &u32) -> Result<u32, StepError> {
        self.shipments.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StepError::msg("the carrier is down"));
        }
        Ok(*charge)
    }
}

/// A saga a service serves while recovery goes on.
pub struct Ping;

#[saga(input = u32)]
impl Ping {
    #[step(readonly)]
    async fn pong(&self, input: &u32) -> Result<u32, StepError> {
        Ok(*input)
    }
}

/// The log a process left when it died right after the pivot of a
/// `Shipping` saga was durable (created, reserve started and succeeded,
/// charge started and succeeded: records 0 to 4).
async fn crashed_after_the_pivot() -> (MemoryStore, SagaId) {
    let durable = MemoryStore::new();
    let crashing = CrashingStore::new(durable.clone(), CrashPoint::AfterDurable(4));
    let runtime = Runtime::builder()
        .store(crashing.clone())
        .build()
        .await
        .unwrap();
    runtime.register(Shipping::new(false));
    let handle = runtime.start::<Shipping>(1).await.unwrap();
    let id = handle.id();
    crashing.wait_for_crash().await;
    drop(handle);
    (durable, id)
}

async fn runtime_on(store: &MemoryStore, shipping: &Arc<Shipping>) -> Runtime {
    let runtime = Runtime::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    runtime.register(Arc::clone(shipping));
    runtime.register(Arc::new(Ping));
    runtime
}

/// Sleeps (on the paused clock) until `shipping` has tried to ship `n`
/// times.
async fn until_shipped(shipping: &Shipping, n: usize) {
    tokio::time::timeout(Duration::from_secs(24 * 3600), async {
        while shipping.shipments.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the recovered saga never tried to ship");
}

#[tokio::test(start_paused = true)]
async fn spawn_recovery_returns_while_a_saga_retries_forever_after_its_pivot() {
    let (store, id) = crashed_after_the_pivot().await;

    // `recover` waits for the saga, which retries as long as the carrier
    // is down: an hour of it, and it is still waiting.
    let blocked = Shipping::new(true);
    let waited = tokio::time::timeout(
        Duration::from_secs(3600),
        runtime_on(&store, &blocked).await.recover(),
    )
    .await;
    assert!(waited.is_err(), "recover returned: {waited:?}");
    assert!(blocked.shipments.load(Ordering::SeqCst) > 1);

    // The next start: `spawn_recovery` returns at once, and the service
    // serves while the saga keeps retrying.
    let shipping = Shipping::new(true);
    let runtime = runtime_on(&store, &shipping).await;
    let recovery = runtime.spawn_recovery();
    assert_eq!(
        runtime
            .run::<Ping>(7)
            .await
            .unwrap()
            .completed()
            .unwrap()
            .pong,
        7
    );
    until_shipped(&shipping, 5).await;
    assert!(!recovery.is_finished());

    // Called again (every lease or so), it leaves the saga to the first
    // recovery and ends at once.
    let again = tokio::time::timeout(Duration::from_secs(1), runtime.spawn_recovery())
        .await
        .expect("a second recovery waited for the first one's saga")
        .unwrap()
        .unwrap();
    assert_eq!((again.resumed(), again.failed.len()), (0, 0));
    assert!(!recovery.is_finished());

    // The carrier is back: the saga completes, and the first recovery
    // reports it.
    shipping.down.store(false, Ordering::SeqCst);
    let report = recovery.await.unwrap().unwrap();
    assert_eq!((report.completed, report.failed.len()), (1, 0));
    let log = store.load(id).await.unwrap().unwrap();
    assert_eq!(log.summary.state, SagaState::Completed);
    assert_eq!(shipping.unreserved.load(Ordering::SeqCst), 0);
}

/// The ERROR events seen, each as its fields (`name=value`, space
/// separated).
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl Subscriber for Errors {
    // Asked at every call, not cached per call site: tests run in parallel,
    // each with its own subscriber, or none.
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() == Level::ERROR
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// A log of a saga named `name` that died right after it was created.
async fn created(store: &MemoryStore, name: &str) -> SagaId {
    let id = SagaId::new();
    let created = Entry::Created {
        saga: name.into(),
        fingerprint: Ping::definition().fingerprint(),
        input: serde_json::json!(7),
        definition: DefinitionSnapshot::of(Ping::definition()),
        retry: Vec::new(),
        deadline_ms: None,
    };
    store
        .append(vec![Record::new(id, 0, created)])
        .await
        .unwrap();
    id
}

#[test]
fn what_recovery_cannot_recover_is_logged_as_an_error() {
    let errors = Errors::default();
    let _guard = tracing::subscriber::set_default(errors.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (unknown, recovered) = rt.block_on(async {
        let store = MemoryStore::new();
        let unknown = created(&store, "Retired").await;
        let recovered = created(&store, "Ping").await;
        let runtime = Runtime::builder()
            .store(store.clone())
            .build()
            .await
            .unwrap();
        runtime.register(Arc::new(Ping));
        let report = runtime.recover().await.unwrap();
        assert_eq!(report.completed, 1, "{report:?}");
        assert!(
            matches!(&report.failed[..], [(id, Error::UnknownSaga { .. })] if *id == unknown),
            "{report:?}"
        );
        (unknown, recovered)
    });
    let errors = errors.0.lock().unwrap();
    let about = |id: SagaId| {
        errors
            .iter()
            .filter(|e| e.contains(&id.to_string()))
            .collect::<Vec<_>>()
    };
    let logged = about(unknown);
    assert_eq!(logged.len(), 1, "{errors:?}");
    assert!(logged[0].contains("saga="), "{logged:?}");
    assert!(
        logged[0].contains("`Retired`, which is not registered"),
        "{logged:?}"
    );
    assert!(about(recovered).is_empty(), "{errors:?}");
}

#[tokio::test]
async fn a_runtime_without_a_store_has_nothing_to_recover() {
    // The startup code of a service, with `.store(..)` left out (in a
    // test, say).
    let runtime = Runtime::builder().build().await.unwrap();
    runtime.register(Arc::new(Ping));
    let report = runtime.recover().await.unwrap();
    assert_eq!((report.resumed(), report.failed.len()), (0, 0));
    let report = runtime.spawn_recovery().await.unwrap().unwrap();
    assert_eq!((report.resumed(), report.failed.len()), (0, 0));
    assert!(runtime.run::<Ping>(1).await.unwrap().is_completed());
}
