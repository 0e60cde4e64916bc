//! The `#[saga]` and `#[step]` attribute macros. Use them through the `saga`
//! crate (`use saga::prelude::*;`), which documents them with examples.
//!
//! The pipeline, one module per stage: [`attr`] parses the options,
//! [`ast`] models the impl, [`check`] applies the rules that span several
//! items, [`expand`] generates code, and [`fallback`] is what is emitted
//! beside errors so that the user's own items still exist.

mod ast;
mod attr;
mod check;
mod ctxt;
mod duration;
mod expand;
mod fallback;

use proc_macro::TokenStream;

/// Turns an inherent impl of async steps and compensations into a saga.
/// See the `saga` crate's documentation.
#[proc_macro_attribute]
pub fn saga(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::saga(args.into(), item.into()).into()
}

/// Marks a method of a `#[saga]` impl as a step. `#[saga]` reads and removes
/// it; used anywhere else it is an error.
#[proc_macro_attribute]
pub fn step(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_step(args.into(), item.into()).into()
}
