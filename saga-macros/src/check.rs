//! The rules that span several items: where each parameter's value comes
//! from, how steps pair with compensations, and where the pivot stands.
//! Produces the resolved plan `expand` generates code from.

use std::collections::BTreeSet;

use syn::{Ident, Type};

use crate::ast::{self, Param, Saga, Signature};
use crate::ctxt::Ctxt;
use crate::suggest;

/// Names with a meaning of their own, which no step may take.
const RESERVED_STEP_NAMES: &[&str] = &["input", "cx"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Compensatable,
    Readonly,
    Pivot,
    Forward,
}

/// Where a parameter's value comes from.
#[derive(Clone, Copy)]
pub enum Source {
    Input,
    Cx,
    /// The output of step `index`; `by_value` clones it (compensations only).
    Step {
        index: usize,
        by_value: bool,
    },
}

pub struct Arg<'a> {
    pub param: &'a Param<'a>,
    pub source: Source,
}

pub struct CheckedStep<'a> {
    pub kind: Kind,
    pub args: Vec<Arg<'a>>,
    pub deps: Vec<usize>,
    pub compensation: Option<Compensation<'a>>,
}

pub struct Compensation<'a> {
    pub sig: Signature<'a>,
}

pub struct CompensationArgs<'a> {
    pub args: Vec<Arg<'a>>,
}

/// Resolves and checks the saga. Returns `None` (with errors in `cx`) if
/// code cannot be generated.
pub fn check<'a>(saga: &'a Saga<'a>, cx: &mut Ctxt) -> Vec<CheckedStep<'a>> {
    let mut out = Vec::with_capacity(saga.steps.len());
    let pivot = pivot_index(saga, cx);
    check_names(saga, cx);
    check_owned(saga, cx);
    let mut paired: Vec<(&Ident, &Ident)> = Vec::new();
    for (i, step) in saga.steps.iter().enumerate() {
        let (args, deps) = resolve_step_params(saga, i, cx);
        let kind = kind_of(saga, i, pivot, cx);
        let compensation = match &step.args.compensate {
            Some(target) => resolve_compensation(saga, i, target, &mut paired, cx),
            None => {
                if let Some(spec) = &step.args.compensate_retry {
                    cx.syn_error(syn::Error::new(
                        spec.span,
                        format!(
                            "`compensate_retry` sets the retry policy of a compensation, but step `{}` has none: add `compensate = ..`, or remove `compensate_retry`",
                            step.name
                        ),
                    ));
                }
                None
            }
        };
        out.push(CheckedStep {
            kind,
            args,
            deps,
            compensation,
        });
    }
    out
}

fn pivot_index(saga: &Saga, cx: &mut Ctxt) -> Option<usize> {
    let mut pivot: Option<usize> = None;
    for (i, step) in saga.steps.iter().enumerate() {
        let Some(span) = step.args.pivot else {
            continue;
        };
        match pivot {
            Some(first) => cx.syn_error(syn::Error::new(
                span,
                format!(
                    "a saga has at most one pivot, and `{}` already is: the pivot is the single point of no return; remove `pivot` from `{}` or from `{}`",
                    saga.steps[first].name, step.name, saga.steps[first].name
                ),
            )),
            None => pivot = Some(i),
        }
    }
    pivot
}

fn kind_of(saga: &Saga, i: usize, pivot: Option<usize>, cx: &mut Ctxt) -> Kind {
    let step = &saga.steps[i];
    let name = step.name;
    let args = &step.args;
    if let (Some(readonly), Some(_)) = (args.readonly, args.pivot) {
        cx.syn_error(syn::Error::new(
            readonly,
            format!("step `{name}` cannot be both `pivot` and `readonly`: the pivot is the step that commits"),
        ));
    }
    if args.pivot.is_some() && pivot == Some(i) {
        if let Some(target) = &args.compensate {
            cx.error_spanned_by(
                target,
                format!("the pivot `{name}` is never compensated: once it succeeds the saga only goes forward; remove `compensate = {target}`"),
            );
        }
        return Kind::Pivot;
    }
    if let Some(readonly) = args.readonly {
        if let Some(target) = &args.compensate {
            cx.syn_error(syn::Error::new(
                readonly,
                format!("step `{name}` is `readonly` yet has `compensate = {target}`: remove `readonly` if it changes something, or the compensation if not"),
            ));
        }
        return Kind::Readonly;
    }
    match pivot {
        Some(p) if i > p => {
            if let Some(target) = &args.compensate {
                cx.error_spanned_by(
                    target,
                    format!(
                        "step `{name}` runs after the pivot `{}`, so it is never undone (it is retried until it succeeds): remove `compensate = {target}`",
                        saga.steps[p].name
                    ),
                );
            }
            Kind::Forward
        }
        _ => {
            if args.compensate.is_none() && args.pivot.is_none() && !args.malformed {
                let why = match pivot {
                    Some(p) => format!("runs before the pivot `{}`", saga.steps[p].name),
                    None => "belongs to a saga without a pivot".to_string(),
                };
                let output = step
                    .sig
                    .output_type()
                    .map_or_else(|| "..".to_string(), ast::type_string);
                let undo = format!("undo_{}", ast::name_string(name));
                cx.error_spanned_by(
                    name,
                    format!(
                        "step `{name}` {why} and has no compensation: add `#[step(compensate = {undo})]` and `async fn {undo}(&self, {name}: &{output}) -> Result<(), MyError>`, mark it `readonly` if it changes nothing, or make the step that commits the `pivot`"
                    ),
                );
            }
            Kind::Compensatable
        }
    }
}

/// Outputs and the input are written to the saga log and outlive every
/// borrow: they must be owned (and outputs concrete, see `check_output`).
fn check_owned(saga: &Saga, cx: &mut Ctxt) {
    if let Some(input) = &saga.args.input
        && let Some(borrowed) = ast::borrowed_part(input)
    {
        cx.error_spanned_by(
            borrowed,
            "the saga's input must be an owned type: it is stored in the saga log before the first step and read back on recovery; use an owned type such as `String` instead of `&str`",
        );
    }
    for step in &saga.steps {
        if let Some(out) = step.sig.output_type() {
            check_output(saga, step.name, out, cx);
        }
    }
}

/// A step's output is stored in the saga log and named in the generated
/// outputs struct: it must be a concrete, owned type. One error per output.
fn check_output(saga: &Saga, step: &Ident, out: &Type, cx: &mut Ctxt) {
    let outputs = saga.outputs_ident();
    if let Some(opaque) = ast::impl_trait_part(out) {
        cx.error_spanned_by(
            opaque,
            format!(
                "the output of step `{step}` cannot be an `impl Trait`: it is stored in the saga log and is a field of the generated `{outputs}`, which need a concrete type; write the type the step returns in its place"
            ),
        );
    } else if let Some(self_token) = ast::self_part(out) {
        cx.error_spanned_by(
            self_token,
            format!(
                "the output of step `{step}` cannot be written `Self`: it becomes a field of the generated `{outputs}`, outside this impl, where `Self` would name that struct; write the type's name, `{}`",
                saga.self_ident
            ),
        );
    } else if let Some(borrowed) = ast::borrowed_part(out) {
        cx.error_spanned_by(
            borrowed,
            format!(
                "the output of step `{step}` must be an owned type: it is stored in the saga log, outlives the step and is read back on recovery; return an owned type such as `String` instead of `&str`"
            ),
        );
    }
}

fn check_names(saga: &Saga, cx: &mut Ctxt) {
    for step in &saga.steps {
        if RESERVED_STEP_NAMES.iter().any(|r| step.name == r) {
            cx.error_spanned_by(
                step.name,
                format!("a step cannot be called `{}`: that name means the saga's {} in parameter lists; rename the step", step.name, if step.name == "input" { "input" } else { "context" }),
            );
        }
    }
    let all = saga
        .steps
        .iter()
        .map(|s| s.name)
        .chain(saga.methods.iter().map(|m| m.name));
    for name in all {
        if name == "definition" {
            cx.error_spanned_by(
                name,
                "`definition` is generated by `#[saga]` (`MySaga::definition()`): rename this method",
            );
        }
    }
    if let Some(outputs) = &saga.args.outputs
        && *outputs == saga.self_ident
    {
        cx.error_spanned_by(
            outputs,
            format!(
                "the outputs struct needs a name of its own, not the saga's: write `outputs = {outputs}Outputs`, or leave the option out"
            ),
        );
    }
}

fn resolve_step_params<'a>(
    saga: &'a Saga<'a>,
    i: usize,
    cx: &mut Ctxt,
) -> (Vec<Arg<'a>>, Vec<usize>) {
    let step = &saga.steps[i];
    let mut args = Vec::new();
    let mut deps = BTreeSet::new();
    for param in &step.sig.params {
        let source = if param.name == "input" {
            Source::Input
        } else if param.name == "cx" {
            Source::Cx
        } else {
            match saga.step_index(param.name) {
                Some(j) if j < i => {
                    deps.insert(j);
                    Source::Step {
                        index: j,
                        by_value: false,
                    }
                }
                Some(j) if j == i => {
                    cx.error_spanned_by(
                        param.name,
                        format!(
                            "step `{}` cannot take its own output as a parameter: it does not exist until the step returns; take `input` or an earlier step's output instead",
                            step.name
                        ),
                    );
                    continue;
                }
                Some(_) => {
                    cx.error_spanned_by(
                        param.name,
                        format!(
                            "`{}` is a step declared after `{}`: a step can only use the outputs of steps declared before it (move `{}` above `{}`, or drop this parameter)",
                            param.name, step.name, param.name, step.name
                        ),
                    );
                    continue;
                }
                None => {
                    let earlier: Vec<String> =
                        saga.steps[..i].iter().map(|s| s.name.to_string()).collect();
                    let in_scope: Vec<String> = ["input", "cx"]
                        .into_iter()
                        .map(String::from)
                        .chain(earlier)
                        .collect();
                    let hint =
                        suggest::hint(&param.name.to_string(), in_scope.iter().map(String::as_str));
                    cx.error_spanned_by(
                        param.name,
                        format!(
                            "parameter `{}` of step `{}` names nothing a step can receive{hint}; a parameter is named after what it receives, and the names in scope are {}",
                            param.name,
                            step.name,
                            backticked(&in_scope)
                        ),
                    );
                    continue;
                }
            }
        };
        if !require_concrete(saga, param, &format!("step `{}`", step.name), source, cx) {
            continue;
        }
        let why = match source {
            Source::Step { .. } => "a step receives an earlier step's output by reference",
            Source::Input | Source::Cx => "the saga passes it by reference",
        };
        require_reference(param, why, cx);
        args.push(Arg { param, source });
    }
    (args, deps.into_iter().collect())
}

fn resolve_compensation<'a>(
    saga: &'a Saga<'a>,
    i: usize,
    target: &'a Ident,
    paired: &mut Vec<(&'a Ident, &'a Ident)>,
    cx: &mut Ctxt,
) -> Option<Compensation<'a>> {
    let step = &saga.steps[i];
    let output = step
        .sig
        .output_type()
        .map_or_else(|| "..".to_string(), ast::type_string);
    if saga.step_index(target).is_some() {
        cx.error_spanned_by(
            target,
            format!(
                "`{target}` is a step, so it cannot compensate `{}`: a compensation is a plain async method of this impl without `#[step]`, such as `async fn undo_{}(&self, {}: &{output}) -> Result<(), MyError>`",
                step.name,
                ast::name_string(step.name),
                step.name
            ),
        );
        return None;
    }
    let Some(method) = saga.method(target) else {
        let others: Vec<String> = saga
            .methods
            .iter()
            .filter(|m| m.func.sig.asyncness.is_some())
            .map(|m| format!("`{}`", m.name))
            .collect();
        let names: Vec<String> = saga.methods.iter().map(|m| m.name.to_string()).collect();
        let hint = match suggest::closest(&target.to_string(), names.iter().map(String::as_str)) {
            Some(close) => format!(" (did you mean `compensate = {close}`?)"),
            None if others.is_empty() => String::new(),
            None => format!(" (its async methods are {})", others.join(", ")),
        };
        cx.error_spanned_by(
            target,
            format!(
                "no method `{target}` in this impl{hint}: to undo step `{}`, add `async fn {target}(&self, {}: &{output}) -> Result<(), MyError>`",
                step.name, step.name
            ),
        );
        return None;
    };
    if let Some((_, first)) = paired.iter().find(|(t, _)| ast::same_name(t, target)) {
        cx.error_spanned_by(
            target,
            format!(
                "`{target}` already compensates step `{first}`: each step needs a compensation of its own, such as `async fn undo_{}(&self, {}: &{output}) -> Result<(), MyError>`",
                ast::name_string(step.name),
                step.name
            ),
        );
        return None;
    }
    paired.push((target, step.name));
    let sig = ast::signature(method.func, "compensation", cx);
    Some(Compensation { sig })
}

/// Resolves a compensation's parameters: its step's own output (by value or
/// by reference), `input`, `cx`, or an ancestor's output by reference.
pub fn compensation_args<'a>(
    saga: &'a Saga<'a>,
    checked: &[CheckedStep<'a>],
    i: usize,
    sig: &'a Signature<'a>,
    cx: &mut Ctxt,
) -> CompensationArgs<'a> {
    let step = &saga.steps[i];
    let ancestors = ancestors(checked, i);
    let of = format!("compensation `{}`", sig.func.sig.ident);
    let mut args = Vec::new();
    for param in &sig.params {
        // Whether the parameter must be a shared reference, and why.
        let mut shared = Some("the saga passes it by reference");
        let source = if ast::same_name(param.name, step.name) {
            if let Type::Reference(r) = param.ty
                && let Some(mutability) = &r.mutability
            {
                let and = &r.and_token;
                let output = ast::type_string(&r.elem);
                cx.error_spanned_by(
                    quote::quote!(#and #mutability),
                    format!(
                        "compensation `{}` cannot take step `{}`'s output as `&mut {output}`: the saga keeps the output (it is logged, and read again if the compensation is retried) and only lends it; take it as `&{output}`, or as `{output}` (owned, if `Clone`)",
                        sig.func.sig.ident, step.name
                    ),
                );
                continue;
            }
            shared = None;
            Source::Step {
                index: i,
                by_value: !matches!(param.ty, Type::Reference(_)),
            }
        } else if param.name == "input" {
            Source::Input
        } else if param.name == "cx" {
            Source::Cx
        } else if let Some(j) = saga
            .step_index(param.name)
            .filter(|j| ancestors.contains(j))
        {
            shared = Some("a compensation receives the outputs its step used by reference");
            Source::Step {
                index: j,
                by_value: false,
            }
        } else {
            let mut allowed = vec![
                format!("`{}` (its step's output)", step.name),
                "`input`".into(),
                "`cx`".into(),
            ];
            allowed.extend(
                ancestors
                    .iter()
                    .map(|j| format!("`{}`", saga.steps[*j].name)),
            );
            let why = match saga.step_index(param.name) {
                Some(j) if j > i => format!(
                    ": step `{}` runs after `{}`, so its output does not exist when `{}` is undone",
                    param.name, step.name, step.name
                ),
                Some(_) => format!(
                    ": `{}` does not depend on step `{}`, so that output may be missing or already undone; to use it, make `{}` take `{}: &..` too",
                    step.name, param.name, step.name, param.name
                ),
                None => {
                    let mut names = vec![step.name.to_string(), "input".into(), "cx".into()];
                    names.extend(ancestors.iter().map(|j| saga.steps[*j].name.to_string()));
                    suggest::hint(&param.name.to_string(), names.iter().map(String::as_str))
                }
            };
            cx.error_spanned_by(
                param.name,
                format!(
                    "compensation `{}` of step `{}` cannot take `{}`{why}; it can take {}",
                    sig.func.sig.ident,
                    step.name,
                    param.name,
                    allowed.join(", ")
                ),
            );
            continue;
        };
        if !require_concrete(saga, param, &of, source, cx) {
            continue;
        }
        if let Some(why) = shared {
            require_reference(param, why, cx);
        }
        args.push(Arg { param, source });
    }
    if let Some(ty) = sig.output_type()
        && !is_unit(ty)
    {
        cx.error_spanned_by(
            ty,
            format!(
                "compensation `{}` returns `Result<{}, ..>`, but a compensation undoes and produces nothing: return `Result<(), ..>`",
                sig.func.sig.ident,
                ast::type_string(ty)
            ),
        );
    }
    CompensationArgs { args }
}

/// The steps `i` depends on, directly or not, sorted.
fn ancestors(checked: &[CheckedStep], i: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<usize> = checked[i].deps.clone();
    while let Some(j) = stack.pop() {
        if seen.insert(j) {
            stack.extend(checked[j].deps.iter().copied());
        }
    }
    seen
}

/// A parameter's type must name the type it receives: the generated call
/// converts the value to it, and an `impl Trait` there is no type. Returns
/// whether it does; `of` is "step `name`" or "compensation `name`".
fn require_concrete(saga: &Saga, param: &Param, of: &str, source: Source, cx: &mut Ctxt) -> bool {
    let Some(opaque) = ast::impl_trait_part(param.ty) else {
        return true;
    };
    let received = match source {
        Source::Input => saga.args.input.as_ref().map(ast::type_string),
        Source::Cx => Some("StepContext".to_string()),
        Source::Step { index, .. } => saga.steps[index]
            .sig
            .output_type()
            .filter(|ty| ast::storable(ty))
            .map(ast::type_string),
    };
    let by_reference = match source {
        Source::Step { by_value, .. } => !by_value,
        Source::Input | Source::Cx => true,
    };
    let fix = match received {
        Some(ty) if by_reference => format!("write `{}: &{ty}`", param.name),
        Some(ty) => format!(
            "write `{0}: &{ty}` (or `{0}: {ty}`, if `Clone`)",
            param.name
        ),
        None => "write the type it receives".to_string(),
    };
    cx.error_spanned_by(
        opaque,
        format!(
            "parameter `{}` of {of} cannot be an `impl Trait`: a parameter must name the type it receives, since the generated call converts the value to that type; {fix}",
            param.name
        ),
    );
    false
}

fn require_reference(param: &Param, why: &str, cx: &mut Ctxt) {
    if !matches!(param.ty, Type::Reference(r) if r.mutability.is_none()) {
        let ty = param.ty;
        let inner = match ty {
            Type::Reference(r) => ast::type_string(&r.elem),
            _ => ast::type_string(ty),
        };
        cx.error_spanned_by(
            ty,
            format!(
                "parameter `{}` must be a shared reference: write `{}: &{inner}`, since {why}",
                param.name, param.name
            ),
        );
    }
}

fn backticked(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}
