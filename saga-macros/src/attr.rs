//! Parses the options of `#[saga(...)]` and `#[step(...)]`.
//!
//! Every problem is recorded in the [`Ctxt`] and parsing goes on with the
//! next option, so that one build reports every mistake.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser, discouraged::Speculative};
use syn::punctuated::Punctuated;
use syn::{Attribute, Ident, LitBool, LitFloat, LitInt, LitStr, Meta, Token, Type};

use crate::ctxt::Ctxt;
use crate::{ast, duration, suggest};

const SAGA_OPTIONS: &str =
    "`input = Type`, `name = \"...\"`, `outputs = Ident`, `deadline = \"...\"`, `concurrent`";
const SAGA_NAMES: [&str; 5] = ["input", "name", "outputs", "deadline", "concurrent"];
const STEP_OPTIONS: &str = "`compensate = method`, `retry(...)`, `compensate_retry(...)`, `timeout = \"...\"`, `pivot`, `readonly`";
const STEP_NAMES: [&str; 6] = [
    "compensate",
    "retry",
    "compensate_retry",
    "timeout",
    "pivot",
    "readonly",
];
const RETRY_OPTIONS: &str = "`attempts = N` (or `forever`), `backoff = none | fixed(\"...\") | exponential(\"initial\", \"max\")`, `jitter = 0.0..=1.0`, `timeout = \"...\"`";
const RETRY_NAMES: [&str; 4] = ["attempts", "backoff", "jitter", "timeout"];
/// The options of `retry(...)` that `#[step]` does not take itself
/// (`timeout` it does: per attempt, beside `retry(..)` or inside it).
const RETRY_ONLY: [&str; 3] = ["attempts", "backoff", "jitter"];
/// Options written under the name they have elsewhere: what was written,
/// what it is called here, and why.
type Aliases<'a> = &'a [(&'a str, &'a str, &'a str)];
const SAGA_ALIASES: Aliases = &[(
    "timeout",
    "deadline",
    "a saga's time limit is its `deadline`, counted from its start; `timeout` limits each attempt of one step",
)];

/// The options of `#[saga(...)]`.
#[derive(Default)]
pub struct SagaArgs {
    pub input: Option<Type>,
    /// An input was written but could not be read: reported already, so
    /// no "needs the saga's input type" follows.
    pub input_reported: bool,
    pub name: Option<LitStr>,
    pub outputs: Option<Ident>,
    pub deadline: Option<Dur>,
    /// Run consecutive independent steps at the same time.
    pub concurrent: Option<Span>,
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
    /// Some option could not be read. The checks that a missing option
    /// would trip (a step without a compensation) are skipped for this
    /// step, so that one typo makes one error.
    pub malformed: bool,
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
    // `#[saga(u32)]` is read as an input type written without `input =`,
    // unless an `input = ..` follows.
    let input_written = tokens
        .clone()
        .into_iter()
        .zip(tokens.clone().into_iter().skip(1))
        .any(|pair| {
            matches!(pair, (TokenTree::Ident(i), TokenTree::Punct(p)) if i == "input" && p.as_char() == '=')
        });
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("input") {
            if quoted(cx, &meta, "a type", "MyInput", ast::type_string).is_some() {
                args.input_reported = true;
            } else if let Some(ty) = value(
                cx,
                &meta,
                "the saga's input type: `input = TransferRequest`",
                |v| v.parse::<Type>(),
            ) {
                set_once(cx, &meta, &mut args.input, ty);
            } else {
                args.input_reported = true;
            }
        } else if meta.path.is_ident("name") {
            if let Some(name) = value(cx, &meta, "a string: `name = \"transfer\"`", |v| {
                v.parse::<LitStr>()
            }) {
                if name.value().trim().is_empty() {
                    cx.error_spanned_by(
                        &name,
                        "the saga's name must not be empty: it identifies the saga in the log; write `name = \"transfer\"` or leave the option out to use the type's name",
                    );
                }
                set_once(cx, &meta, &mut args.name, name);
            }
        } else if meta.path.is_ident("outputs") {
            let what = "the name of the struct to generate";
            if let Some(ident) = quoted(cx, &meta, what, "TransferOutputs", Ident::to_string) {
                // Read as written, so code naming the struct still finds it.
                if let Some(ident) = ident {
                    set_once(cx, &meta, &mut args.outputs, ident);
                }
            } else if let Some(ident) = value(
                cx,
                &meta,
                "the name of the struct to generate: `outputs = TransferOutputs`",
                |v| v.parse::<Ident>(),
            ) {
                set_once(cx, &meta, &mut args.outputs, ident);
            }
        } else if meta.path.is_ident("deadline") {
            if let Some(d) = duration_value(cx, &meta) {
                set_once(cx, &meta, &mut args.deadline, d);
            }
        } else if meta.path.is_ident("concurrent") {
            flag(cx, &meta, &mut args.concurrent);
        } else if let Some(ty) = (!input_written && !args.input_reported && args.input.is_none())
            .then(|| bare_type(&meta))
            .flatten()
        {
            cx.error_spanned_by(
                &ty,
                format!(
                    "`#[saga]` takes the saga's input type as an option: write `input = {}`",
                    ast::type_string(&ty)
                ),
            );
            args.input_reported = true;
        } else {
            unknown(
                cx,
                &meta,
                "#[saga]",
                SAGA_OPTIONS,
                &SAGA_NAMES,
                SAGA_ALIASES,
            );
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
    let before = cx.error_count();
    match &attr.meta {
        syn::Meta::Path(_) => return args,
        syn::Meta::NameValue(nv) => {
            cx.error_spanned_by(
                nv,
                format!("expected `#[step]` or `#[step(...)]`; valid options: {STEP_OPTIONS}"),
            );
            args.malformed = true;
            return args;
        }
        syn::Meta::List(_) => {}
    }
    // `attempts = 3` written beside `retry(..)` instead of inside it: the
    // path and the option as written.
    let mut misplaced: Vec<(syn::Path, String)> = Vec::new();
    let result = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("compensate") {
            if let Some(ident) = compensate_value(cx, &meta) {
                set_once(cx, &meta, &mut args.compensate, ident);
            }
        } else if meta.path.is_ident("retry") {
            if let Some(spec) = retry_spec(cx, &meta)? {
                set_once(cx, &meta, &mut args.retry, spec);
            }
        } else if meta.path.is_ident("compensate_retry") {
            if let Some(spec) = retry_spec(cx, &meta)? {
                set_once(cx, &meta, &mut args.compensate_retry, spec);
            }
        } else if meta.path.is_ident("timeout") {
            if let Some(d) = duration_value(cx, &meta) {
                set_once(cx, &meta, &mut args.timeout, d);
            }
        } else if meta.path.is_ident("pivot") {
            flag(cx, &meta, &mut args.pivot);
        } else if meta.path.is_ident("readonly") {
            flag(cx, &meta, &mut args.readonly);
        } else if RETRY_ONLY.iter().any(|k| meta.path.is_ident(k)) {
            let option = format!("{}{}", path_name(&meta), rest_text(meta.input));
            misplaced.push((meta.path.clone(), option));
        } else {
            unknown(cx, &meta, "#[step]", STEP_OPTIONS, &STEP_NAMES, &[]);
        }
        Ok(())
    });
    if let Err(e) = result {
        cx.syn_error(e);
    }
    let fix = if args.retry.is_some() {
        "move it into this step's `retry(..)`".to_string()
    } else {
        let options: Vec<&str> = misplaced.iter().map(|(_, o)| o.as_str()).collect();
        format!("write `retry({})`", options.join(", "))
    };
    for (path, _) in &misplaced {
        let name = path.get_ident().map(Ident::to_string).unwrap_or_default();
        cx.error_spanned_by(
            path,
            format!("`{name}` is an option of `retry(..)`, not of `#[step]` itself: {fix}"),
        );
    }
    args.malformed = cx.error_count() > before;
    args
}

/// The string of `key = "..."`, consumed, for an option that takes no
/// string; `None` (nothing consumed) for any other value.
fn string_value(meta: &ParseNestedMeta) -> Option<LitStr> {
    if !(meta.input.peek(Token![=]) && meta.input.peek2(LitStr)) {
        return None;
    }
    let _ = meta.input.parse::<Token![=]>();
    let lit = meta.input.parse().ok()?;
    skip(meta.input);
    Some(lit)
}

/// `key = "..."` for an option that takes `what` (a type or a name), not a
/// string: reports the string, suggesting its contents unquoted (or
/// `example`, if they are not one). `None` for any other value (nothing
/// consumed); otherwise the contents, if they parse, spanned at the string.
fn quoted<T: syn::parse::Parse>(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta,
    what: &str,
    example: &str,
    show: impl Fn(&T) -> String,
) -> Option<Option<T>> {
    let lit = string_value(meta)?;
    let name = path_name(meta);
    let parsed = lit.parse::<T>().ok();
    let fix = parsed.as_ref().map_or_else(|| example.to_string(), show);
    cx.error_spanned_by(
        &lit,
        format!("`{name}` takes {what}, not a string: write `{name} = {fix}`"),
    );
    Some(parsed)
}

/// A type written alone where an option was expected (`u32`,
/// `TransferRequest`, `Vec<u8>`), consumed; `None` (nothing consumed) for
/// what looks like a misspelt option instead.
fn bare_type(meta: &ParseNestedMeta) -> Option<Type> {
    let name = path_name(meta);
    if SAGA_ALIASES.iter().any(|(from, _, _)| *from == name)
        || suggest::closest(&name, SAGA_NAMES).is_some()
    {
        return None;
    }
    let mut path = meta.path.clone();
    if meta.input.peek(Token![<]) {
        let fork = meta.input.fork();
        let generics = fork.parse::<syn::AngleBracketedGenericArguments>().ok()?;
        if !(fork.is_empty() || fork.peek(Token![,])) {
            return None;
        }
        meta.input.advance_to(&fork);
        path.segments.last_mut()?.arguments = syn::PathArguments::AngleBracketed(generics);
    } else if !(meta.input.is_empty() || meta.input.peek(Token![,])) {
        return None;
    }
    // A lower-case name such as `pivot` is more likely an option than a
    // type, unless it is a primitive type or the type is written with a
    // path or generic arguments.
    let last = path.segments.last()?;
    let looks_like_type = path.segments.len() > 1
        || !last.arguments.is_none()
        || last.ident.to_string().starts_with(char::is_uppercase)
        || ast::PRIMITIVES.iter().any(|p| last.ident == p);
    looks_like_type.then(|| {
        Type::Path(syn::TypePath {
            attrs: Vec::new(),
            qself: None,
            path,
        })
    })
}

/// `compensate = method`.
fn compensate_value(cx: &mut Ctxt, meta: &ParseNestedMeta) -> Option<Ident> {
    let what = "the name of a method of this impl";
    if quoted(cx, meta, what, "undo_step", Ident::to_string).is_some() {
        return None;
    }
    value(
        cx,
        meta,
        "the name of a method of this impl: `compensate = undo_step`",
        |v| v.parse::<Ident>(),
    )
}

/// `retry(...)` or `compensate_retry(...)`. `Ok(None)` if it could not be
/// read (the problem is recorded).
fn retry_spec(cx: &mut Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<RetrySpec>> {
    let name = path_name(meta);
    if !meta.input.peek(syn::token::Paren) {
        let example = if meta.input.peek(Token![=]) && meta.input.peek2(LitInt) {
            let _ = meta.input.parse::<Token![=]>();
            let n: LitInt = meta.input.parse()?;
            format!("`{name}(attempts = {n})`")
        } else {
            format!("`{name}(attempts = 5, backoff = exponential(\"20ms\", \"1s\"))`")
        };
        skip(meta.input);
        cx.syn_error(meta.error(format!(
            "`{name}` takes a list of options, such as {example}; valid options: {RETRY_OPTIONS}"
        )));
        return Ok(None);
    }
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
    let content;
    syn::parenthesized!(content in meta.input);
    let tokens: TokenStream = content.parse()?;
    let parser = syn::meta::parser(|inner| {
        if inner.path.is_ident("attempts") {
            if let Some(attempts) = attempts_value(cx, &inner) {
                set_once(cx, &inner, &mut spec.attempts, attempts);
            }
        } else if inner.path.is_ident("backoff") {
            if let Some(backoff) = backoff_spec(cx, &inner) {
                set_once(cx, &inner, &mut spec.backoff, backoff);
            }
        } else if inner.path.is_ident("jitter") {
            let expected = "a fraction from 0.0 to 1.0: `jitter = 0.5`";
            if let Some(lit) = value(cx, &inner, expected, |v| v.parse::<LitFloat>()) {
                match lit.base10_parse::<f64>() {
                    Ok(f) if (0.0..=1.0).contains(&f) => {
                        set_once(cx, &inner, &mut spec.jitter, f);
                    }
                    _ => cx.error_spanned_by(
                        &lit,
                        format!("`jitter = {lit}` is out of range: write a fraction from 0.0 (no jitter) to 1.0 (up to the whole delay), such as `jitter = 0.5`"),
                    ),
                }
            }
        } else if inner.path.is_ident("timeout") {
            if let Some(d) = duration_value(cx, &inner) {
                set_once(cx, &inner, &mut spec.timeout, d);
            }
        } else {
            unknown(cx, &inner, &name, RETRY_OPTIONS, &RETRY_NAMES, &[]);
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        cx.syn_error(e);
    }
    Ok(Some(spec))
}

fn attempts_value(cx: &mut Ctxt, meta: &ParseNestedMeta) -> Option<Attempts> {
    let expected = "a number of attempts from 1 up, or `forever`: `attempts = 5`";
    let value = value(cx, meta, expected, |v| {
        if v.peek(Ident) {
            v.parse::<Ident>().map(Ok)
        } else {
            v.parse::<LitInt>().map(Err)
        }
    })?;
    match value {
        Ok(ident) if ident == "forever" => Some(Attempts::Forever),
        Ok(ident) => {
            cx.error_spanned_by(
                &ident,
                format!("expected a number of attempts from 1 up, or `forever`, not `{ident}`"),
            );
            None
        }
        Err(lit) => match lit.base10_parse::<u32>() {
            Ok(n) if n >= 1 => Some(Attempts::Limited(n)),
            Ok(_) => {
                cx.error_spanned_by(
                    &lit,
                    "`attempts = 0` would never run the step: write `attempts = 1` for a single try without retries, a larger number, or `attempts = forever`",
                );
                None
            }
            Err(_) => {
                cx.error_spanned_by(
                    &lit,
                    format!(
                        "`attempts` must be a whole number from 1 to {}, or `forever`",
                        u32::MAX
                    ),
                );
                None
            }
        },
    }
}

fn backoff_spec(cx: &mut Ctxt, meta: &ParseNestedMeta) -> Option<BackoffSpec> {
    const FORMS: &str = "`none`, `fixed(\"100ms\")` or `exponential(\"20ms\", \"1s\")`";
    let (kind, lits) = value(cx, meta, &format!("a backoff: {FORMS}"), |v| {
        let kind: Ident = v.parse()?;
        let lits = if v.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in v);
            content
                .parse_terminated(|p| p.parse::<LitStr>(), Token![,])?
                .into_iter()
                .collect::<Vec<_>>()
        } else {
            Vec::new()
        };
        Ok((kind, lits))
    })?;
    let mut durations = Vec::new();
    for lit in &lits {
        match duration::parse(lit) {
            Ok(n) => durations.push(n),
            Err(e) => cx.syn_error(e),
        }
    }
    if durations.len() != lits.len() {
        return None;
    }
    match (kind.to_string().as_str(), durations.as_slice()) {
        ("none", []) => Some(BackoffSpec::None),
        // `fixed("0ms")` is allowed: it says what it does, retry at once,
        // like `none`. A zero start of an exponential backoff is not: it
        // doubles to zero forever, so every wait would be silently skipped.
        ("fixed", [d]) => Some(BackoffSpec::Fixed(*d)),
        ("exponential", [0, _]) => {
            cx.error_spanned_by(
                &lits[0],
                format!(
                    "an exponential backoff needs a positive initial delay: {} doubles to zero, so it would never wait; write e.g. \"10ms\" (or `backoff = none` to retry at once)",
                    lits[0].token()
                ),
            );
            None
        }
        ("exponential", [initial, max]) => {
            if initial > max {
                cx.error_spanned_by(
                    &kind,
                    format!(
                        "the initial backoff {} is longer than its cap {}: write `exponential(\"initial\", \"max\")` with initial <= max",
                        lits[0].token(),
                        lits[1].token()
                    ),
                );
            }
            Some(BackoffSpec::Exponential(*initial, *max))
        }
        (form @ ("none" | "fixed" | "exponential"), _) => {
            let fix = match form {
                "none" => "`none` takes no durations: write `backoff = none`",
                "fixed" => {
                    "`fixed` takes one duration, the delay between attempts: write `fixed(\"100ms\")`"
                }
                _ => {
                    "`exponential` takes two durations, the first delay and its cap: write `exponential(\"20ms\", \"1s\")`"
                }
            };
            cx.error_spanned_by(&kind, format!("wrong number of durations: {fix}"));
            None
        }
        (other, _) => {
            cx.error_spanned_by(
                &kind,
                format!(
                    "unknown backoff `{kind}`: write {FORMS}{}",
                    suggest::hint(other, ["none", "fixed", "exponential"])
                ),
            );
            None
        }
    }
}

/// `key = "2s"`, checked.
fn duration_value(cx: &mut Ctxt, meta: &ParseNestedMeta) -> Option<Dur> {
    let name = path_name(meta);
    if meta.input.peek(Token![=]) && meta.input.peek2(LitInt) {
        let _ = meta.input.parse::<Token![=]>();
        let n: LitInt = meta.input.parse().ok()?;
        cx.error_spanned_by(
            &n,
            format!(
                "a duration is a string with a unit: write `{name} = \"{}s\"` or `{name} = \"{}ms\"` (units: ns, us, ms, s, m, h)",
                n.base10_digits(),
                n.base10_digits()
            ),
        );
        skip(meta.input);
        return None;
    }
    let expected = format!("a duration string: `{name} = \"2s\"` (units: ns, us, ms, s, m, h)");
    let lit = value(cx, meta, &expected, |v| v.parse::<LitStr>())?;
    match duration::parse(&lit) {
        Ok(0) => {
            cx.error_spanned_by(
                &lit,
                format!("a `{name}` of zero would never let anything run: give a positive duration such as \"2s\", or leave the option out"),
            );
            None
        }
        Ok(nanos) => Some(Dur {
            nanos,
            span: lit.span(),
        }),
        Err(e) => {
            cx.syn_error(e);
            None
        }
    }
}

/// Parses the value of `key = value` with `parse`. A missing `=`, or a value
/// `parse` rejects, is recorded with `expected` (what to write instead) and
/// the rest of the option skipped, so that the next option is still read.
fn value<T>(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta,
    expected: &str,
    parse: impl FnOnce(ParseStream) -> syn::Result<T>,
) -> Option<T> {
    let name = path_name(meta);
    if meta.input.parse::<Token![=]>().is_err() {
        skip(meta.input);
        cx.syn_error(meta.error(format!("expected `{name} = ..`: {expected}")));
        return None;
    }
    if meta.input.is_empty() || meta.input.peek(Token![,]) {
        cx.syn_error(meta.error(format!("`{name}` needs a value: {expected}")));
        return None;
    }
    let start = meta.input.span();
    match parse(meta.input) {
        Ok(v) if meta.input.is_empty() || meta.input.peek(Token![,]) => Some(v),
        Ok(_) => {
            let extra = meta.input.span();
            skip(meta.input);
            cx.syn_error(syn::Error::new(
                extra,
                format!("unexpected tokens after the value of `{name}`: separate options with `,`"),
            ));
            None
        }
        Err(_) => {
            skip(meta.input);
            cx.syn_error(syn::Error::new(start, format!("expected {expected}")));
            None
        }
    }
}

/// Skips the rest of one option: every token up to the next `,`.
fn skip(input: ParseStream) {
    rest(input);
}

/// Takes the rest of one option: every token up to the next `,`.
fn rest(input: ParseStream) -> TokenStream {
    input
        .step(|cursor| {
            let mut tokens = TokenStream::new();
            let mut rest = *cursor;
            while let Some((tt, next)) = rest.token_tree() {
                if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
                    break;
                }
                tokens.extend([tt]);
                rest = next;
            }
            Ok((tokens, rest))
        })
        .unwrap_or_default()
}

/// The rest of one option as the user would write it after its name, for
/// messages: ` = fixed("1s")`, or nothing.
fn rest_text(input: ParseStream) -> String {
    let tokens = rest(input);
    if tokens.is_empty() {
        return String::new();
    }
    let mut text = tokens.to_string();
    for (from, to) in [(" (", "("), ("( ", "("), (" )", ")"), (" ,", ",")] {
        text = text.replace(from, to);
    }
    if text.starts_with('(') {
        text
    } else {
        format!(" {text}")
    }
}

/// A flag such as `pivot`. `pivot = true` is reported but still read as a
/// pivot (and `pivot = false` as none), so no second error follows.
fn flag(cx: &mut Ctxt, meta: &ParseNestedMeta, slot: &mut Option<Span>) {
    let name = path_name(meta);
    let span = meta
        .path
        .get_ident()
        .map_or_else(Span::call_site, Ident::span);
    if meta.input.peek(Token![=]) || meta.input.peek(syn::token::Paren) {
        let mut on = true;
        if meta.input.peek(Token![=]) && meta.input.peek2(LitBool) {
            let _ = meta.input.parse::<Token![=]>();
            on = meta.input.parse::<LitBool>().is_ok_and(|b| b.value);
        }
        skip(meta.input);
        let fix = if on {
            format!("write just `{name}`")
        } else {
            format!("leave `{name}` out")
        };
        cx.syn_error(meta.error(format!("`{name}` takes no value: {fix}")));
        if !on {
            return;
        }
    }
    set_once(cx, meta, slot, span);
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
fn unknown(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta,
    what: &str,
    valid: &str,
    names: &[&str],
    aliases: Aliases,
) {
    let name = path_name(meta);
    let value = rest_text(meta.input);
    let hint = match aliases.iter().find(|(from, _, _)| *from == name) {
        Some((_, to, why)) => format!(" (did you mean `{to}{value}`? {why})"),
        None => suggest::hint(&name, names.iter().copied()),
    };
    cx.error_spanned_by(
        &meta.path,
        format!("unknown option `{name}` in `{what}`{hint}; valid options: {valid}"),
    );
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
    is_step_path(attr.path())
}

fn is_step_path(path: &syn::Path) -> bool {
    path.segments.last().is_some_and(|s| s.ident == "step")
}

/// The attributes a `#[cfg_attr(predicate, a, b)]` adds (`a` and `b`), or
/// none if `attr` is something else.
fn cfg_attr_contents(attr: &Attribute) -> Vec<Meta> {
    if !attr.path().is_ident("cfg_attr") {
        return Vec::new();
    }
    attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
        .map(|metas| metas.into_iter().skip(1).collect())
        .unwrap_or_default()
}

/// The `step(..)` a `#[cfg_attr(predicate, step(..))]` adds, as an
/// attribute of its own.
pub fn step_in_cfg_attr(attr: &Attribute) -> Option<Attribute> {
    let meta = cfg_attr_contents(attr)
        .into_iter()
        .find(|m| is_step_path(m.path()))?;
    Some(Attribute {
        pound_token: attr.pound_token,
        style: attr.style,
        bracket_token: attr.bracket_token,
        meta,
    })
}

/// Whether `attr` can make a method differ between builds in a way the
/// macro cannot see: `#[cfg(..)]`, or a `#[cfg_attr]` that adds `#[step]`,
/// `#[cfg]` or another `#[cfg_attr]`. Other `cfg_attr`s (a conditional
/// `tracing::instrument`) change nothing the saga depends on.
pub fn is_conditional(attr: &Attribute) -> bool {
    attr.path().is_ident("cfg")
        || cfg_attr_contents(attr).iter().any(|m| {
            is_step_path(m.path()) || m.path().is_ident("cfg") || m.path().is_ident("cfg_attr")
        })
}
