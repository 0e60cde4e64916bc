//! Steps and compensations may return `Box<dyn Error + Send + Sync>`, as many
//! crates do, however it is spelled: with or without `+ 'static`, with the
//! auto traits in any order, through an alias, beside `?`; a box of a
//! concrete error type is an error type like any other.

use std::error::Error;
use std::sync::Arc;

use saga::prelude::*;

/// The boxed error, through an alias.
type BoxResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

pub struct Upload;

#[saga(input = String)]
impl Upload {
    #[step(compensate = delete)]
    async fn write(&self, input: &String) -> Result<usize, Box<dyn Error + Send + Sync>> {
        let n: usize = input.len().to_string().parse()?;
        Ok(n)
    }
    async fn delete(
        &self,
        write: usize,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        if write == 0 {
            return Err("nothing to delete".into());
        }
        Ok(())
    }

    #[step(compensate = unindex)]
    async fn index(&self, write: &usize) -> BoxResult<u64> {
        Ok(*write as u64 * 2)
    }
    async fn unindex(&self, index: &u64) -> Result<(), Box<dyn Error + Sync + Send>> {
        assert!(*index > 0);
        Ok(())
    }

    #[step(compensate = unnotify)]
    async fn notify(&self, index: &u64) -> Result<u64, Box<std::fmt::Error>> {
        Ok(*index + 1)
    }
    async fn unnotify(&self) -> Result<(), Box<std::fmt::Error>> {
        Err(Box::new(std::fmt::Error))
    }

    #[step(pivot)]
    async fn commit(&self, index: &u64) -> Result<bool, Box<dyn Error + Send + Sync>> {
        if *index == 0 {
            return Err(Box::new(std::fmt::Error));
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
        runtime.register(Arc::new(Upload));
        let outputs = runtime
            .run::<Upload>("hello".to_string())
            .await
            .unwrap()
            .completed()
            .expect("completes");
        assert_eq!(outputs.write, 5);
        assert_eq!(outputs.index, 10);
        assert_eq!(outputs.notify, 11);
        assert!(outputs.commit);
    });
}
