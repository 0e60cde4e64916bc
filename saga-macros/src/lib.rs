//! The `#[saga]` and `#[step]` attribute macros. Use them through the `saga`
//! crate (`use saga::prelude::*;`), which documents them with examples.
//!
//! The pipeline, one module per stage: `attr` parses the options, `ast`
//! models the impl, `check` applies the rules that span several items,
//! `expand` generates code, and `fallback` is what is emitted beside errors
//! so that the user's own items still exist.

mod ast;
mod attr;
mod check;
mod ctxt;
mod duration;
mod expand;
mod fallback;
mod suggest;

use proc_macro::TokenStream;

/// Turns an inherent impl of async steps and compensations into a saga.
///
/// Options: `input = Type` (required: the saga's input), `name = "..."` (the
/// stable name recorded in the log; default: the type's name), `outputs =
/// Ident` (the generated outputs struct; default: `{Type}Outputs`),
/// `deadline = "30s"` (a saga-wide deadline, counted from the saga's start,
/// through any crash and recovery), `concurrent` (consecutive
/// steps that do not depend on each other run at the same time, on the
/// saga's own task; the pivot always runs alone; if one fails, the others
/// finish, then everything completed is compensated).
///
/// Generates an implementation of `saga::Saga`, a `pub struct {Type}Outputs`
/// with one field per step (its `Debug` shows each output by the output's own
/// `Debug`, or as its JSON if it has none, so outputs need not be `Debug`),
/// and a `definition()` with the saga's name, fingerprint and Mermaid graph.
///
/// ```
/// use saga::prelude::*;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("shop closed")]
/// pub struct Closed;
///
/// pub struct Checkout;
///
/// #[saga(input = u32, name = "checkout", deadline = "30s")]
/// impl Checkout {
///     /// Reserve the items.
///     #[step(compensate = unreserve, retry(attempts = 5, backoff = exponential("20ms", "1s")))]
///     async fn reserve(&self, input: &u32) -> Result<u64, Closed> {
///         Ok(u64::from(*input))
///     }
///     async fn unreserve(&self, reserve: &u64) -> Result<(), Closed> {
///         let _ = reserve;
///         Ok(())
///     }
///
///     /// Charge the card: the point of no return.
///     #[step(pivot, timeout = "2s")]
///     async fn charge(&self, reserve: &u64, cx: &StepContext) -> Result<String, Closed> {
///         Ok(format!("{reserve} charged under {}", cx.idempotency_key()))
///     }
/// }
///
/// let def = Checkout::definition();
/// assert_eq!(def.name(), "checkout");
/// assert_eq!(def.steps()[1].dependencies(), &[0]);
/// ```
#[proc_macro_attribute]
pub fn saga(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::saga(args.into(), item.into()).into()
}

/// Marks a method of a `#[saga]` impl as a step. `#[saga]` reads and removes
/// it; used anywhere else it is an error.
///
/// Options: `compensate = method` (the method that undoes this step),
/// `retry(attempts = N | forever, backoff = none | fixed("100ms") |
/// exponential("20ms", "1s"), jitter = 0.5, timeout = "2s")`, `timeout =
/// "2s"` (per attempt), `compensate_retry(..)` (the compensation's policy),
/// `pivot` (the point of no return), `readonly` (changes nothing, so needs no
/// compensation). See [`saga`](macro@saga) for an example.
#[proc_macro_attribute]
pub fn step(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_step(args.into(), item.into()).into()
}
