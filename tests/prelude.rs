//! `use saga::prelude::*` names what an application built on sagas writes in
//! its own signatures: the idempotency key a service takes, and the handle it
//! keeps for a registered saga.

use std::sync::{Arc, Mutex};

use saga::prelude::*;

/// A service taking the step's key, as a bank's API would.
#[derive(Default)]
pub struct Bank {
    keys: Mutex<Vec<String>>,
}

impl Bank {
    fn hold(&self, key: &IdempotencyKey) {
        self.keys.lock().unwrap().push(key.to_string());
    }
}

/// A saga holding money at the bank.
pub struct Hold {
    bank: Arc<Bank>,
}

#[saga(input = ())]
impl Hold {
    #[step(pivot)]
    async fn hold(&self, cx: &StepContext) -> Result<(), StepError> {
        self.bank.hold(&cx.idempotency_key());
        Ok(())
    }
}

/// What an application keeps: the handle, typed by the prelude's names.
struct App {
    holds: Registered<Hold>,
}

#[tokio::test]
async fn the_prelude_names_a_services_key_and_a_saga_handle() {
    let bank = Arc::new(Bank::default());
    let runtime = Runtime::builder().build().await.unwrap();
    let app = App {
        holds: runtime.register(Arc::new(Hold {
            bank: Arc::clone(&bank),
        })),
    };
    assert!(app.holds.run(()).await.unwrap().is_completed());
    let keys = bank.keys.lock().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].ends_with("/hold"), "{keys:?}");
}
