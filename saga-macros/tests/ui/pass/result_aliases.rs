//! Steps may return `Result` through aliases (`io::Result<T>`, a crate's own
//! `Result<T>`, an alias of another name) or `Result<T, saga::StepError>`.

use std::io;
use std::sync::Arc;

use saga::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("store error")]
pub struct StoreError;

/// A crate-local alias, as many crates define.
type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An alias whose name the macro cannot read as `Result`.
type Fallible<T> = std::result::Result<T, StoreError>;

pub struct Files;

#[saga(input = String)]
impl Files {
    #[step(compensate = delete)]
    async fn write(&self, input: &String) -> io::Result<usize> {
        Ok(input.len())
    }
    async fn delete(&self, write: usize) -> io::Result<()> {
        assert!(write > 0);
        Ok(())
    }

    #[step(compensate = unindex)]
    async fn index(&self, write: &usize) -> Result<u64> {
        Ok(*write as u64 * 2)
    }
    async fn unindex(&self, index: &u64) -> Result<()> {
        assert!(*index > 0);
        Ok(())
    }

    #[step(compensate = unpublish)]
    async fn publish(&self, index: &u64) -> Fallible<String> {
        Ok(format!("published {index}"))
    }
    async fn unpublish(&self, publish: &String) -> Fallible<()> {
        assert!(publish.starts_with("published"));
        Ok(())
    }

    #[step(pivot)]
    async fn commit(&self, publish: &String) -> std::result::Result<bool, StepError> {
        if publish.is_empty() {
            return Err(permanent(StoreError));
        }
        Ok(true)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = Runtime::builder().build().await.unwrap();
        runtime.register(Arc::new(Files));
        let outputs = runtime
            .run::<Files>("hello".to_string())
            .await
            .unwrap()
            .completed()
            .expect("completes");
        assert_eq!(outputs.write, 5);
        assert_eq!(outputs.index, 10);
        assert_eq!(outputs.publish, "published 10");
        assert!(outputs.commit);
        assert_eq!(Files::definition().steps()[2].dependencies(), &[1]);
    });
}
