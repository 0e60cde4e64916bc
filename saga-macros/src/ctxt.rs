//! Collects every error of one macro invocation, so a user sees them all at
//! once (after serde_derive's `internals/ctxt.rs`).

use std::fmt::Display;

use quote::ToTokens;

#[derive(Default)]
pub struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    /// Records an error spanning `tokens`.
    pub fn error_spanned_by(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.errors.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records a `syn::Error`.
    pub fn syn_error(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// How many errors were recorded so far: compare before and after a
    /// stage to learn whether it found problems.
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// All errors combined into one, if any.
    pub fn into_error(self) -> Option<syn::Error> {
        let mut errors = self.errors.into_iter();
        let mut first = errors.next()?;
        for e in errors {
            first.combine(e);
        }
        Some(first)
    }
}
