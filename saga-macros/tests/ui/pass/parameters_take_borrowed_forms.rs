//! A parameter may borrow its value in any `Borrow` form, as clippy
//! recommends: `&str` for a `String`, `&[T]` for a `Vec<T>`.

use std::sync::Arc;

use saga::prelude::*;

pub struct Words;

#[saga(input = String)]
impl Words {
    #[step(compensate = forget)]
    async fn split(&self, input: &str) -> Result<Vec<String>, StepError> {
        Ok(input.split(' ').map(str::to_owned).collect())
    }
    async fn forget(&self, split: &[String], input: &str) -> Result<(), StepError> {
        assert_eq!(split.join(" "), input);
        Ok(())
    }

    #[step(pivot)]
    async fn count(&self, split: &[String]) -> Result<usize, StepError> {
        Ok(split.len())
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = Runtime::builder().build().await.unwrap();
        runtime.register(Arc::new(Words));
        let outputs = runtime
            .run::<Words>("three little words".to_string())
            .await
            .unwrap()
            .completed()
            .expect("completes");
        assert_eq!(outputs.count, 3);
        assert_eq!(outputs.split, ["three", "little", "words"]);
    });
}
