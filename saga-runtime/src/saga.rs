//! The trait `#[saga]` implements.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Definition, StepContext, StepError};

/// A saga: a sequence of steps, each paired with the compensation that undoes
/// it. Implemented by `#[saga]`; write the impl by hand only if you must, and
/// then keep to the hidden methods' contracts.
///
/// ```
/// use saga::prelude::*;
///
/// pub struct Greeter;
///
/// #[saga(input = String)]
/// impl Greeter {
///     #[step(pivot)]
///     async fn greet(&self, input: &String) -> Result<String, std::fmt::Error> {
///         Ok(format!("hello, {input}"))
///     }
/// }
///
/// assert_eq!(Greeter::definition().name(), "Greeter");
/// assert_eq!(Greeter::definition().steps().len(), 1);
/// ```
pub trait Saga: Send + Sync + Sized + 'static {
    /// What a run starts from; borrowed by every step that names `input`.
    type Input: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The outputs of every step of a completed run (a generated struct with
    /// one field per step).
    type Outputs: Send + 'static;
    /// The outputs produced so far by a run in progress.
    #[doc(hidden)]
    type State: Default + Send + Sync + 'static;

    /// The saga's static description.
    fn definition() -> &'static Definition;

    /// One step's output on its way into the state (a generated enum with a
    /// variant per step).
    #[doc(hidden)]
    type StepOutput: Send + 'static;

    /// Runs step `step` once, reading its dependencies' outputs from
    /// `state` (shared, so independent steps can run at once). Panics if a
    /// dependency's output is missing (the executor never lets that happen).
    #[doc(hidden)]
    fn __run_step<'a>(
        &'a self,
        step: usize,
        input: &'a Self::Input,
        state: &'a Self::State,
        cx: &'a StepContext,
    ) -> impl Future<Output = Result<Self::StepOutput, StepError>> + Send + 'a;

    /// Stores a step's output in the state.
    #[doc(hidden)]
    fn __store(state: &mut Self::State, output: Self::StepOutput);

    /// Whether step `step` has completed (its output is in the state).
    #[doc(hidden)]
    fn __has_output(state: &Self::State, step: usize) -> bool;

    /// Runs the compensation of step `step` once, reading its output from
    /// `state` without consuming it (a failed attempt is retried).
    #[doc(hidden)]
    fn __compensate<'a>(
        &'a self,
        step: usize,
        input: &'a Self::Input,
        state: &'a Self::State,
        cx: &'a StepContext,
    ) -> impl Future<Output = Result<(), StepError>> + Send + 'a;

    /// Turns the state of a run whose every step completed into its outputs.
    #[doc(hidden)]
    fn __outputs(state: Self::State) -> Self::Outputs;

    /// Serializes a step's output, for the durable log.
    #[doc(hidden)]
    fn __encode_step_output(
        output: &Self::StepOutput,
    ) -> Result<serde_json::Value, serde_json::Error>;

    /// Restores step `step`'s output from the durable log.
    #[doc(hidden)]
    fn __decode_output(
        state: &mut Self::State,
        step: usize,
        value: serde_json::Value,
    ) -> Result<(), serde_json::Error>;
}
