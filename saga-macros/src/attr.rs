//! Parses the options of `#[saga(...)]` and `#[step(...)]`.
//!
//! Every problem is recorded in the [`Ctxt`] and parsing goes on with the
//! next option, so that one build reports every mistake.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Attribute, Ident, LitFloat, LitInt, LitStr, Token, Type};

use crate::ctxt::Ctxt;
use crate::duration;

const SAGA_OPTIONS: &str =
    "`input = Type`, `name = \"...\"`, `outputs = Ident`, `deadline = \"...\"`";
const STEP_OPTIONS: &str = "`compensate = method`, `retry(...)`, `compensate_retry(...)`, `timeout = \"...\"`, `pivot`, `readonly`";
const RETRY_OPTIONS: &str = "`attempts = N` (or `forever`), `backoff = none | fixed(\"...\") | exponential(\"initial\", \"max\")`, `jitter = 0.0..=1.0`, `timeout = \"...\"`";

/// The options of `#[saga(...)]`.
#[derive(Default)]
pub struct SagaArgs {
    pub input: Option<Type>,
    pub name: Option<LitStr>,
    pub outputs: Option<Ident>,
    pub deadline: Option<Dur>,
}

/// A duration option: its value and where it was written.
#[derive(Clone, Copy)]
pub struct Dur {
    pub nanos: u64,
    pub span: Span,
}

/// The options of one `#[step(...)]`.
#[derive(Default)]
pub struct StepArgs {
    pub compensate: Option<Ident>,
    pub retry: Option<RetrySpec>,
    pub compensate_retry: Option<RetrySpec>,
    pub timeout: Option<Dur>,
    pub pivot: Option<Span>,
    pub readonly: Option<Span>,
}

/// `retry(...)` or `compensate_retry(...)`.
pub struct RetrySpec {
    pub span: Span,
    pub attempts: Option<Attempts>,
    pub backoff: Option<BackoffSpec>,
    pub jitter: Option<f64>,
    pub timeout: Option<Dur>,
}

pub enum Attempts {
    Limited(u32),
    Forever,
}

pub enum BackoffSpec {
    None,
    Fixed(u64),
    Exponential(u64, u64),
}

pub fn saga_args(tokens: TokenStream, cx: &mut Ctxt) -> SagaArgs {
    let mut args = SagaArgs::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("input") {
            let ty: Type = meta.value()?.parse()?;
            set_once(cx, &meta, &mut args.input, ty);
        } else if meta.path.is_ident("name") {
            let name: LitStr = meta.value()?.parse()?;
            if name.value().trim().is_empty() {
                cx.error_spanned_by(&name, "the saga's name must not be empty");
            }
            set_once(cx, &meta, &mut args.name, name);
        } else if meta.path.is_ident("outputs") {
            let ident: Ident = meta.value()?.parse()?;
            set_once(cx, &meta, &mut args.outputs, ident);
        } else if meta.path.is_ident("deadline") {
            if let Some(d) = parse_duration(cx, &meta)? {
                set_once(cx, &meta, &mut args.deadline, d);
            }
        } else {
            unknown(cx, &meta, "#[saga]", SAGA_OPTIONS)?;
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        cx.syn_error(e);
    }
    args
}

/// Parses one `#[step]` / `#[step(...)]` attribute.
pub fn step_args(attr: &Attribute, cx: &mut Ctxt) -> StepArgs {
    let mut args = StepArgs::default();
    match &attr.meta {
        syn::Meta::Path(_) => return args,
        syn::Meta::NameValue(nv) => {
            cx.error_spanned_by(
                nv,
                format!("expected `#[step]` or `#[step(...)]`; valid options: {STEP_OPTIONS}"),
            );
            return args;
        }
        syn::Meta::List(_) => {}
    }
    let result = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("compensate") {
            let ident: Ident = meta.value()?.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected the name of a method of this impl: `compensate = undo_step`",
                )
            })?;
            set_once(cx, &meta, &mut args.compensate, ident);
        } else if meta.path.is_ident("retry") {
            let spec = retry_spec(cx, &meta)?;
            set_once(cx, &meta, &mut args.retry, spec);
        } else if meta.path.is_ident("compensate_retry") {
            let spec = retry_spec(cx, &meta)?;
            set_once(cx, &meta, &mut args.compensate_retry, spec);
        } else if meta.path.is_ident("timeout") {
            if let Some(d) = parse_duration(cx, &meta)? {
                set_once(cx, &meta, &mut args.timeout, d);
            }
        } else if meta.path.is_ident("pivot") {
            flag(cx, &meta, &mut args.pivot)?;
        } else if meta.path.is_ident("readonly") {
            flag(cx, &meta, &mut args.readonly)?;
        } else {
            unknown(cx, &meta, "#[step]", STEP_OPTIONS)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        cx.syn_error(e);
    }
    args
}

fn retry_spec(cx: &mut Ctxt, meta: &ParseNestedMeta) -> syn::Result<RetrySpec> {
    let mut spec = RetrySpec {
        span: meta
            .path
            .get_ident()
            .map_or_else(Span::call_site, Ident::span),
        attempts: None,
        backoff: None,
        jitter: None,
        timeout: None,
    };
    if !meta.input.peek(syn::token::Paren) {
        return Err(meta.error(format!(
            "expected `retry(...)` with any of: {RETRY_OPTIONS}"
        )));
    }
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident("attempts") {
            let value = inner.value()?;
            let attempts = if value.peek(Ident) {
                let ident: Ident = value.parse()?;
                if ident != "forever" {
                    return Err(syn::Error::new(
                        ident.span(),
                        "expected a number of attempts (at least 1) or `forever`",
                    ));
                }
                Attempts::Forever
            } else {
                let lit: LitInt = value.parse()?;
                match lit.base10_parse::<u32>() {
                    Ok(n) if n >= 1 => Attempts::Limited(n),
                    _ => {
                        cx.error_spanned_by(
                            &lit,
                            "`attempts` must be a whole number from 1 (one try, no retry) up, or `forever`",
                        );
                        return Ok(());
                    }
                }
            };
            set_once(cx, &inner, &mut spec.attempts, attempts);
        } else if inner.path.is_ident("backoff") {
            let backoff = backoff_spec(cx, &inner)?;
            set_once(cx, &inner, &mut spec.backoff, backoff);
        } else if inner.path.is_ident("jitter") {
            let lit: LitFloat = inner.value()?.parse().map_err(|e| {
                syn::Error::new(e.span(), "expected a fraction such as `0.5` (from 0.0 to 1.0)")
            })?;
            match lit.base10_parse::<f64>() {
                Ok(f) if (0.0..=1.0).contains(&f) => set_once(cx, &inner, &mut spec.jitter, f),
                _ => cx.error_spanned_by(&lit, "`jitter` must be a fraction from 0.0 to 1.0"),
            }
        } else if inner.path.is_ident("timeout") {
            if let Some(d) = parse_duration(cx, &inner)? {
                set_once(cx, &inner, &mut spec.timeout, d);
            }
        } else {
            unknown(cx, &inner, "retry", RETRY_OPTIONS)?;
        }
        Ok(())
    })?;
    Ok(spec)
}

fn backoff_spec(cx: &mut Ctxt, meta: &ParseNestedMeta) -> syn::Result<BackoffSpec> {
    let value = meta.value()?;
    let kind: Ident = value.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected `none`, `fixed(\"100ms\")` or `exponential(\"20ms\", \"1s\")`",
        )
    })?;
    let args = if value.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in value);
        content
            .parse_terminated(|p| p.parse::<LitStr>(), Token![,])?
            .into_iter()
            .collect::<Vec<_>>()
    } else {
        Vec::new()
    };
    let mut durations = Vec::new();
    for lit in &args {
        match duration::parse(lit) {
            Ok(n) => durations.push(n),
            Err(e) => cx.syn_error(e),
        }
    }
    if durations.len() != args.len() {
        return Ok(BackoffSpec::None);
    }
    match (kind.to_string().as_str(), durations.as_slice()) {
        ("none", []) => Ok(BackoffSpec::None),
        ("fixed", [d]) => Ok(BackoffSpec::Fixed(*d)),
        ("exponential", [initial, max]) => {
            if initial > max {
                cx.error_spanned_by(
                    &kind,
                    "the initial backoff is longer than its cap: write `exponential(\"initial\", \"max\")` with initial <= max",
                );
            }
            Ok(BackoffSpec::Exponential(*initial, *max))
        }
        ("none" | "fixed" | "exponential", _) => Err(syn::Error::new(
            kind.span(),
            format!(
                "wrong arguments for `{kind}`: write `none`, `fixed(\"100ms\")` or `exponential(\"20ms\", \"1s\")`"
            ),
        )),
        _ => Err(syn::Error::new(
            kind.span(),
            format!(
                "unknown backoff `{kind}`: expected `none`, `fixed(\"100ms\")` or `exponential(\"20ms\", \"1s\")`"
            ),
        )),
    }
}

fn parse_duration(cx: &mut Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Dur>> {
    let lit: LitStr = meta.value()?.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected a duration string such as \"2s\" or \"250ms\"",
        )
    })?;
    match duration::parse(&lit) {
        Ok(0) => {
            cx.error_spanned_by(&lit, "a duration of zero would never let anything run");
            Ok(None)
        }
        Ok(nanos) => Ok(Some(Dur {
            nanos,
            span: lit.span(),
        })),
        Err(e) => {
            cx.syn_error(e);
            Ok(None)
        }
    }
}

fn flag(cx: &mut Ctxt, meta: &ParseNestedMeta, slot: &mut Option<Span>) -> syn::Result<()> {
    let name = path_name(meta);
    if meta.input.peek(Token![=]) || meta.input.peek(syn::token::Paren) {
        return Err(meta.error(format!("`{name}` takes no value: write just `{name}`")));
    }
    let span = meta
        .path
        .get_ident()
        .map_or_else(Span::call_site, Ident::span);
    set_once(cx, meta, slot, span);
    Ok(())
}

fn set_once<T>(cx: &mut Ctxt, meta: &ParseNestedMeta, slot: &mut Option<T>, value: T) {
    if slot.is_some() {
        cx.error_spanned_by(
            &meta.path,
            format!("duplicate `{}` option: give it once", path_name(meta)),
        );
    } else {
        *slot = Some(value);
    }
}

/// Records an unknown option and skips its value, so parsing can go on.
fn unknown(cx: &mut Ctxt, meta: &ParseNestedMeta, what: &str, valid: &str) -> syn::Result<()> {
    cx.error_spanned_by(
        &meta.path,
        format!(
            "unknown option `{}` in `{what}`; valid options: {valid}",
            path_name(meta)
        ),
    );
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}

fn path_name(meta: &ParseNestedMeta) -> String {
    meta.path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// Whether `attr` is `#[step]` (or `#[saga::step]`).
pub fn is_step(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "step")
}
