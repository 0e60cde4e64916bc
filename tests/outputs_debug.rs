//! The generated outputs struct's `Debug`: each output with its own `Debug`
//! when its type has one, and as its JSON otherwise, so that outputs need
//! not be `Debug`.

use std::sync::Arc;

use saga::prelude::*;
use serde::{Deserialize, Serialize};

/// A reservation's id: `Debug`, so shown as `ReservationId("res-w")`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReservationId(String);

/// A receipt without `Debug`: shown as its JSON.
#[derive(Serialize, Deserialize)]
pub struct Receipt {
    amount: u64,
    card: String,
}

/// A saga whose outputs are of every kind.
pub struct PlaceOrder;

#[saga(input = u64)]
impl PlaceOrder {
    #[step(compensate = unreserve)]
    async fn reserve(&self) -> Result<ReservationId, StepError> {
        Ok(ReservationId("res-w".into()))
    }
    async fn unreserve(&self, reserve: &ReservationId) -> Result<(), StepError> {
        let _ = reserve;
        Ok(())
    }

    #[step(readonly)]
    async fn validate(&self, reserve: &ReservationId) -> Result<(), StepError> {
        let _ = reserve;
        Ok(())
    }

    #[step(pivot)]
    async fn charge(&self, input: &u64) -> Result<Receipt, StepError> {
        Ok(Receipt {
            amount: *input,
            card: "visa".into(),
        })
    }
}

#[tokio::test]
async fn outputs_show_their_own_debug_or_else_their_json() {
    let runtime = Runtime::builder().build().await.unwrap();
    let orders = runtime.register(Arc::new(PlaceOrder));
    let Outcome::Completed(outputs) = orders.run(5).await.unwrap() else {
        panic!("the saga did not complete");
    };
    assert_eq!(
        format!("{outputs:?}"),
        r#"PlaceOrderOutputs { reserve: ReservationId("res-w"), validate: (), charge: {"amount":5,"card":"visa"} }"#
    );
    assert_eq!(
        format!("{outputs:#?}"),
        r#"PlaceOrderOutputs {
    reserve: ReservationId(
        "res-w",
    ),
    validate: (),
    charge: {"amount":5,"card":"visa"},
}"#
    );
}
