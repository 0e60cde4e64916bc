//! Registering a saga's services, and the handle `register` returns: runs
//! through it use the services it was made with, durably when the runtime
//! has a store, without a lookup per run.

mod support;

use std::sync::Arc;

use saga::log::SagaState;
use saga::prelude::*;
use saga::store::{ListFilter, MemoryStore, Store};
use saga::{Error, Faults, SagaId};

/// A saga whose one step answers with its service's tag.
pub struct Tagged {
    tag: &'static str,
}

#[saga(input = u32)]
impl Tagged {
    #[step(compensate = untag)]
    async fn tag(&self, input: &u32) -> Result<String, StepError> {
        Ok(format!("{}{input}", self.tag))
    }
    async fn untag(&self) -> Result<(), StepError> {
        Ok(())
    }
    #[step(pivot)]
    async fn done(&self) -> Result<(), StepError> {
        Ok(())
    }
}

fn tag_of(outcome: Outcome<TaggedOutputs>) -> String {
    match outcome {
        Outcome::Completed(outputs) => outputs.tag,
        other => panic!("expected completed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_handle_runs_and_starts_the_saga_it_registered() {
    let runtime = Runtime::builder().build().await.unwrap();
    let tagged = runtime.register(Arc::new(Tagged { tag: "a" }));
    assert_eq!(tag_of(tagged.run(1).await.unwrap()), "a1");
    let handle = tagged.start(2).await.unwrap();
    assert_eq!(tag_of(handle.outcome().await.unwrap()), "a2");
    let options = SagaOptions::new().faults(Faults::new().fail_step_permanently("done"));
    let rolled_back = tagged.run_with(3, options).await.unwrap();
    assert!(rolled_back.is_compensated(), "{rolled_back:?}");
}

#[tokio::test]
async fn registering_again_replaces_the_services_for_later_lookups_not_for_earlier_handles() {
    let runtime = Runtime::builder().build().await.unwrap();
    let first = runtime.register(Arc::new(Tagged { tag: "a" }));
    let second = runtime.register(Arc::new(Tagged { tag: "b" }));
    assert_eq!(tag_of(first.run(1).await.unwrap()), "a1");
    assert_eq!(tag_of(second.run(1).await.unwrap()), "b1");
    assert_eq!(tag_of(runtime.run::<Tagged>(1).await.unwrap()), "b1");
    let looked_up = runtime.saga::<Tagged>().unwrap();
    assert_eq!(tag_of(looked_up.run(1).await.unwrap()), "b1");
}

#[tokio::test]
async fn a_handle_on_a_saga_never_registered_is_refused() {
    let runtime = Runtime::builder().build().await.unwrap();
    match runtime.saga::<Tagged>() {
        Err(Error::NotRegistered { saga: "Tagged" }) => {}
        Err(other) => panic!("expected not registered, got {other}"),
        Ok(_) => panic!("a handle on a saga never registered"),
    }
}

#[tokio::test]
async fn runs_through_a_handle_are_logged_like_any_other() {
    let store = MemoryStore::new();
    let runtime = support::logging_to(store.clone()).await;
    let tagged = runtime.register(Arc::new(Tagged { tag: "a" }));
    let ran = SagaId::new();
    let options = SagaOptions::new().id(ran);
    assert_eq!(tag_of(tagged.run_with(1, options).await.unwrap()), "a1");
    let handle = tagged.start(2).await.unwrap();
    let started = handle.id();
    assert_eq!(tag_of(handle.outcome().await.unwrap()), "a2");
    for id in [ran, started] {
        let log = store.load(id).await.unwrap().unwrap();
        assert_eq!(log.summary.state, SagaState::Completed);
        // created, two steps started and succeeded, completed
        assert_eq!(log.records.len(), 6, "{:?}", log.records);
    }
    let done = store
        .list(ListFilter::in_state(SagaState::Completed))
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
}

/// Another saga type whose name is also `Tagged` (the type's name, without
/// its module), as in a second module of the same service.
pub mod other {
    use saga::prelude::*;

    /// Same name as `super::Tagged`.
    pub struct Tagged;

    #[saga(input = u32)]
    impl Tagged {
        #[step(readonly)]
        async fn look(&self, input: &u32) -> Result<u32, StepError> {
            Ok(*input)
        }
    }

    /// The fix: a name of its own.
    pub struct Renamed;

    #[saga(input = u32, name = "other::Tagged")]
    impl Renamed {
        #[step(readonly)]
        async fn look(&self, input: &u32) -> Result<u32, StepError> {
            Ok(*input)
        }
    }
}

#[tokio::test]
async fn registering_another_type_under_a_taken_name_panics_naming_both_and_the_fix() {
    let runtime = Runtime::builder().build().await.unwrap();
    runtime.register(Arc::new(Tagged { tag: "a" }));
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.register(Arc::new(other::Tagged));
    }))
    .expect_err("two saga types registered under one name");
    let message = panicked
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    for part in [
        format!("`{}`", std::any::type_name::<Tagged>()),
        format!("`{}`", std::any::type_name::<other::Tagged>()),
        "`Tagged`".to_string(),
        "#[saga(name = \"...\")]".to_string(),
    ] {
        assert!(message.contains(&part), "no {part} in: {message}");
    }
    // Nothing of the refused type was registered; the first stands.
    assert_eq!(tag_of(runtime.run::<Tagged>(1).await.unwrap()), "a1");
    assert!(matches!(
        runtime.run::<other::Tagged>(1).await,
        Err(Error::NotRegistered { saga: "Tagged" })
    ));
}

#[tokio::test]
async fn try_register_refuses_another_type_under_a_taken_name_and_changes_nothing() {
    let store = MemoryStore::new();
    let runtime = support::logging_to(store.clone()).await;
    runtime.try_register(Arc::new(Tagged { tag: "a" })).unwrap();
    match runtime.try_register(Arc::new(other::Tagged)) {
        Err(Error::NameTaken {
            name,
            registered,
            new,
        }) => {
            assert_eq!(name, "Tagged");
            assert_eq!(registered, std::any::type_name::<Tagged>());
            assert_eq!(new, std::any::type_name::<other::Tagged>());
        }
        Err(other) => panic!("expected the name to be taken, got {other}"),
        Ok(_) => panic!("two saga types registered under one name"),
    }
    assert!(runtime.saga::<other::Tagged>().is_err());
    // The same type again replaces its services, as `register` does.
    let again = runtime.try_register(Arc::new(Tagged { tag: "b" })).unwrap();
    assert_eq!(tag_of(again.run(1).await.unwrap()), "b1");
    // With a name of its own, the other type registers beside it.
    let renamed = runtime.try_register(Arc::new(other::Renamed)).unwrap();
    assert!(renamed.run(2).await.unwrap().is_completed());
    assert_eq!(tag_of(runtime.run::<Tagged>(3).await.unwrap()), "b3");
}
