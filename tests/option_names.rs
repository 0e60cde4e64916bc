//! Per-run options name steps and compensations; a name of the wrong kind
//! (a compensation's where a step's is expected, or the reverse) is refused
//! with what to write instead, and nothing runs.

mod support;

use std::sync::Arc;

use saga::prelude::*;
use saga::{Faults, Phase};
use support::{Calls, runtime_with, within_a_day};

/// `reserve` (undone by `release_stock`), the pivot `charge`, then `ship`.
#[derive(Default)]
pub struct PlaceOrder {
    calls: Calls,
}

#[saga(input = ())]
impl PlaceOrder {
    #[step(compensate = release_stock)]
    async fn reserve(&self) -> Result<(), StepError> {
        self.calls.push("reserve");
        Ok(())
    }
    async fn release_stock(&self) -> Result<(), StepError> {
        self.calls.push("release_stock");
        Ok(())
    }

    #[step(pivot)]
    async fn charge(&self) -> Result<(), StepError> {
        self.calls.push("charge");
        Ok(())
    }

    #[step]
    async fn ship(&self) -> Result<(), StepError> {
        self.calls.push("ship");
        Ok(())
    }
}

/// Runs `PlaceOrder` with `options`; the error starting it gave, checking
/// that nothing ran.
async fn refused(options: SagaOptions) -> saga::Error {
    let saga = Arc::new(PlaceOrder::default());
    let runtime = runtime_with(&saga).await;
    let err = within_a_day(runtime.run_with::<PlaceOrder>((), options))
        .await
        .expect_err("the options are refused");
    assert!(
        saga.calls.all().is_empty(),
        "nothing ran: {:?}",
        saga.calls.all()
    );
    err
}

#[tokio::test]
async fn a_compensation_named_for_a_step_retry_says_to_use_compensation_retry() {
    let err = refused(SagaOptions::new().retry("release_stock", RetryPolicy::attempts(5))).await;
    assert_eq!(
        err.to_string(),
        "saga `PlaceOrder`: `release_stock` is a compensation: use `compensation_retry`, or name its step `reserve`"
    );
    match err {
        saga::Error::WrongKind {
            saga,
            name,
            is,
            instead,
            counterpart,
        } => {
            assert_eq!(saga, "PlaceOrder");
            assert_eq!(name, "release_stock");
            assert_eq!(is, Phase::Compensation);
            assert_eq!(instead, "compensation_retry");
            assert_eq!(counterpart, Some("reserve"));
        }
        other => panic!("expected WrongKind, got {other:?}"),
    }
}

#[tokio::test]
async fn a_step_named_for_a_compensation_retry_says_to_use_retry_or_its_compensation() {
    let err =
        refused(SagaOptions::new().compensation_retry("reserve", RetryPolicy::attempts(5))).await;
    assert_eq!(
        err.to_string(),
        "saga `PlaceOrder`: `reserve` is a step: use `retry`, or name its compensation `release_stock`"
    );
    assert!(matches!(
        err,
        saga::Error::WrongKind {
            is: Phase::Forward,
            ..
        }
    ));
}

#[tokio::test]
async fn a_step_without_compensation_named_for_a_compensation_retry_says_so() {
    let err =
        refused(SagaOptions::new().compensation_retry("charge", RetryPolicy::attempts(5))).await;
    assert_eq!(
        err.to_string(),
        "saga `PlaceOrder`: `charge` is a step, which has no compensation: use `retry`"
    );
}

#[tokio::test]
async fn faults_of_the_wrong_kind_say_which_method_to_use() {
    let cases = [
        (
            Faults::new().fail_step("release_stock", 1..=2),
            "`release_stock` is a compensation: use `fail_compensation`, or name its step `reserve`",
        ),
        (
            Faults::new().fail_step_permanently("release_stock"),
            "`release_stock` is a compensation: use `fail_compensation_permanently`, or name its step `reserve`",
        ),
        (
            Faults::new().fail_compensation("reserve", 1..),
            "`reserve` is a step: use `fail_step`, or name its compensation `release_stock`",
        ),
        (
            Faults::new().fail_compensation_permanently("ship"),
            "`ship` is a step, which has no compensation: use `fail_step_permanently`",
        ),
    ];
    for (faults, expected) in cases {
        let err = refused(SagaOptions::new().faults(faults)).await;
        assert_eq!(err.to_string(), format!("saga `PlaceOrder`: {expected}"));
    }
}

#[tokio::test]
async fn a_name_of_neither_kind_is_still_unknown() {
    let err = refused(SagaOptions::new().retry("reserv", RetryPolicy::once())).await;
    assert_eq!(
        err.to_string(),
        "saga `PlaceOrder` has no step or compensation named `reserv` (it has: reserve, release_stock, charge, ship)"
    );
    assert!(matches!(err, saga::Error::UnknownStep { .. }));
}

#[tokio::test]
async fn names_of_the_right_kind_are_taken() {
    let saga = Arc::new(PlaceOrder::default());
    let runtime = runtime_with(&saga).await;
    let options = SagaOptions::new()
        .retry("reserve", RetryPolicy::attempts(5))
        .compensation_retry("release_stock", RetryPolicy::attempts(5))
        .faults(Faults::new().fail_step("charge", 1..=1));
    let outcome = within_a_day(runtime.run_with::<PlaceOrder>((), options))
        .await
        .expect("the options are taken");
    assert!(outcome.is_completed(), "{outcome:?}");
}
