//! A model of the `#[saga]` impl that borrows the syn nodes: its steps with
//! their options and parameters, and the other methods (compensations among
//! them). Problems local to one function are reported here; rules that span
//! several items live in `check`.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{
    FnArg, GenericArgument, GenericParam, Generics, Ident, ImplItem, ImplItemFn, ItemImpl, Pat,
    PathArguments, ReceiverKind, ReturnType, Safety, Type, TypeParamBound,
};

use crate::attr::{self, SagaArgs, StepArgs};
use crate::ctxt::Ctxt;

pub struct Saga<'a> {
    pub item: &'a ItemImpl,
    pub self_ident: Ident,
    pub args: SagaArgs,
    pub steps: Vec<Step<'a>>,
    /// Every method without `#[step]`, in order: compensations and helpers.
    pub methods: Vec<Method<'a>>,
}

pub struct Step<'a> {
    pub name: &'a Ident,
    pub args: StepArgs,
    pub sig: Signature<'a>,
}

pub struct Method<'a> {
    pub func: &'a ImplItemFn,
    pub name: &'a Ident,
}

/// What the macro needs of an async method's signature.
pub struct Signature<'a> {
    pub func: &'a ImplItemFn,
    pub params: Vec<Param<'a>>,
    /// The declared return type (absent if the method has none).
    pub ret: Option<&'a Type>,
}

pub struct Param<'a> {
    pub name: &'a Ident,
    pub ty: &'a Type,
}

impl<'a> Signature<'a> {
    /// `T` in `Result<T, E>` (or in an alias such as `io::Result<T>`), when it
    /// can be read from the tokens.
    pub fn output_type(&self) -> Option<&'a Type> {
        self.result_arg(0)
    }

    /// `E` in `Result<T, E>`, when written.
    pub fn error_type(&self) -> Option<&'a Type> {
        self.result_arg(1)
    }

    /// The `n`th type argument of the `Result` returned, when written.
    fn result_arg(&self, n: usize) -> Option<&'a Type> {
        let Type::Path(path) = self.ret? else {
            return None;
        };
        let last = path.path.segments.last()?;
        if last.ident != "Result" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        match args.args.iter().nth(n)? {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        }
    }
}

impl<'a> Saga<'a> {
    /// Models the impl, recording every problem in `cx`. `None` only when
    /// there is no saga to speak of (a trait impl, or no named self type);
    /// otherwise the model is returned even beside errors, so that `check`
    /// still reports the rest and the fallback can stand in for the saga.
    pub fn from_impl(item: &'a ItemImpl, args: SagaArgs, cx: &mut Ctxt) -> Option<Saga<'a>> {
        if let Some((path, _)) = &item.trait_ {
            let self_ty = &item.self_ty;
            cx.error_spanned_by(
                path,
                format!(
                    "`#[saga]` goes on an inherent impl, not on an impl of a trait: move the steps into `impl {} {{ .. }}`",
                    type_string(self_ty)
                ),
            );
            return None;
        }
        if let Some(borrowed) =
            borrowed_part(&item.self_ty).filter(|_| lifetimes_only(&item.generics))
        {
            // `impl Ledger<'_>` or `impl<'a> Ledger<'a>`: one error at the
            // lifetime, rather than rustc's about the `Saga` impl's bounds.
            cx.error_spanned_by(
                borrowed,
                "the saga's type must be `'static`: the runtime keeps the saga and runs its steps on tasks of their own for as long as a run lasts, so it cannot borrow; hold shared services in an `Arc<..>` instead of a reference, and remove the lifetime",
            );
        } else if !item.generics.params.is_empty() {
            cx.error_spanned_by(
                &item.generics,
                "a `#[saga]` impl cannot be generic: the saga log must name one concrete type; wrap generic services in a concrete struct",
            );
        } else if let Some(where_clause) = &item.generics.where_clause {
            // Spanned at the clause: `item.generics` prints no tokens for
            // a bare `where`, and the error would fall on `#[saga]`.
            cx.error_spanned_by(
                where_clause,
                "a `#[saga]` impl cannot have a `where` clause: the saga is one concrete type, so there is nothing to constrain; remove the `where` clause",
            );
        }
        if let Some(unsafety) = &item.unsafety {
            cx.error_spanned_by(
                unsafety,
                "a `#[saga]` impl cannot be `unsafe`: remove `unsafe`",
            );
        }
        let self_ident = match &*item.self_ty {
            Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
            _ => None,
        };
        let Some(self_ident) = self_ident else {
            cx.error_spanned_by(
                &item.self_ty,
                "`#[saga]` goes on an impl of a named struct, such as `impl Transfer { .. }`",
            );
            return None;
        };
        if args.input.is_none() && !args.input_reported {
            cx.syn_error(syn::Error::new(
                Span::call_site(),
                "`#[saga]` needs the saga's input type: write `#[saga(input = MyInput)]` (use `input = ()` for none)",
            ));
        }

        let mut steps = Vec::new();
        let mut methods = Vec::new();
        for impl_item in &item.items {
            let ImplItem::Fn(func) = impl_item else {
                let (attrs, what) = match impl_item {
                    ImplItem::Const(c) => (&c.attrs, "a constant"),
                    ImplItem::Type(t) => (&t.attrs, "an associated type"),
                    ImplItem::Macro(m) => (&m.attrs, "a macro invocation"),
                    _ => continue,
                };
                for a in attrs.iter().filter(|a| attr::is_step(a)) {
                    cx.error_spanned_by(
                        a,
                        format!("`#[step]` goes on an async method of this impl, not on {what}"),
                    );
                }
                continue;
            };
            // `#[cfg_attr(.., step(..))]` is reported, and then read as the
            // step it would make, so that no error follows from its absence.
            let conditional_step = func.attrs.iter().find_map(|a| {
                let step = attr::step_in_cfg_attr(a)?;
                cx.error_spanned_by(
                    a,
                    format!("`#[step]` inside `#[cfg_attr]` is not supported: {NO_CFG}; write `#[step(..)]` on its own"),
                );
                Some(step)
            });
            let mut step_attrs = func.attrs.iter().filter(|a| attr::is_step(a));
            let Some(step_attr) = step_attrs.next().or(conditional_step.as_ref()) else {
                methods.push(Method {
                    func,
                    name: &func.sig.ident,
                });
                continue;
            };
            if conditional_step.is_none() {
                report_cfg(func, "step", cx);
            }
            let mut step_args = attr::step_args(step_attr, cx);
            for extra in step_attrs {
                cx.error_spanned_by(
                    extra,
                    "duplicate `#[step]`: give all options in one attribute, such as `#[step(compensate = undo, timeout = \"2s\")]`",
                );
                step_args.malformed = true;
            }
            // A second step of the same name is the other side of a
            // `#[cfg]`, reported above: the first stands for both.
            if steps
                .iter()
                .any(|s: &Step| same_name(s.name, &func.sig.ident))
                && conditional(func)
            {
                continue;
            }
            steps.push(Step {
                name: &func.sig.ident,
                args: step_args,
                sig: signature(func, "step", cx),
            });
        }
        for method in &methods {
            let compensates = steps.iter().any(|s| {
                s.args
                    .compensate
                    .as_ref()
                    .is_some_and(|c| same_name(c, method.name))
            });
            if compensates {
                report_cfg(method.func, "compensation", cx);
            }
        }
        // A macro invoked inside the impl is expanded after `#[saga]` has
        // read it, so a step it writes is never seen. Without any other
        // step, that is the likely reason for the saga having none, and is
        // reported at the invocation. Beside steps, a macro is left alone:
        // it may well write helpers (constants, plain methods), which are
        // fine, and a `#[step]` it writes is reported by `#[step]` itself.
        let invoked = item.items.iter().find_map(|i| match i {
            ImplItem::Macro(m) => Some(&m.mac),
            _ => None,
        });
        match invoked {
            _ if !steps.is_empty() => {}
            Some(mac) => {
                let path = mac
                    .path
                    .segments
                    .iter()
                    .map(|s| s.ident.to_string())
                    .collect::<Vec<_>>()
                    .join("::");
                cx.error_spanned_by(
                    mac,
                    format!(
                        "this saga has no steps `#[saga]` can see: steps written by a macro inside the impl are not seen, because `#[saga]` reads the impl before `{path}!` is expanded; write the steps in the impl itself, or have the macro write the whole `#[saga] impl`"
                    ),
                );
            }
            None => cx.error_spanned_by(
                &item.self_ty,
                "this saga has no steps: mark its async methods with `#[step]` (and pair each with `compensate = ..`)",
            ),
        }
        Some(Saga {
            item,
            self_ident,
            args,
            steps,
            methods,
        })
    }

    /// Whether a stand-in `Saga` impl can be emitted beside errors: the impl
    /// names one concrete type, the input is known, and the outputs struct
    /// does not clash with the saga's own type.
    pub fn has_known_shape(&self) -> bool {
        self.item.generics.params.is_empty()
            && borrowed_part(&self.item.self_ty).is_none()
            && self
                .args
                .input
                .as_ref()
                .is_some_and(|t| borrowed_part(t).is_none())
            && self.outputs_ident() != self.self_ident
    }

    /// The saga's stable name: `async` for `impl r#async`.
    pub fn name(&self) -> String {
        match &self.args.name {
            Some(lit) => lit.value(),
            None => self.self_ident.unraw().to_string(),
        }
    }

    pub fn outputs_ident(&self) -> Ident {
        match &self.args.outputs {
            Some(ident) => ident.clone(),
            None => Ident::new(
                &format!("{}Outputs", self.self_ident.unraw()),
                self.self_ident.span(),
            ),
        }
    }

    /// The step called `name` (`r#move` and `move` are one name).
    pub fn step_index(&self, name: &Ident) -> Option<usize> {
        self.steps.iter().position(|s| same_name(s.name, name))
    }

    pub fn method(&self, name: &Ident) -> Option<&Method<'a>> {
        self.methods.iter().find(|m| same_name(m.name, name))
    }
}

/// Whether two identifiers name the same thing, as rustc sees it: `r#try`
/// and `try` do.
pub fn same_name(a: &Ident, b: &Ident) -> bool {
    a.unraw() == b.unraw()
}

/// A name as recorded in the log and shown to users: without `r#`.
pub fn name_string(ident: &Ident) -> String {
    ident.unraw().to_string()
}

/// Why a step or a compensation cannot be conditional.
const NO_CFG: &str = "the saga's definition must be the same in every build, as a run logged by one build may be recovered by another";

/// Whether `func` has a `#[cfg]` (or a `#[cfg_attr]` that can change it).
fn conditional(func: &ImplItemFn) -> bool {
    func.attrs.iter().any(attr::is_conditional)
}

/// Reports each `#[cfg]` or `#[cfg_attr]` that would make a step or a
/// compensation differ between builds; `what` is "step" or "compensation".
fn report_cfg(func: &ImplItemFn, what: &str, cx: &mut Ctxt) {
    for a in func.attrs.iter().filter(|a| attr::is_conditional(a)) {
        let which = if a.path().is_ident("cfg") {
            "#[cfg]"
        } else {
            "#[cfg_attr]"
        };
        cx.error_spanned_by(
            a,
            format!(
                "`{which}` on a {what} is not supported: {NO_CFG}; branch inside the body with `if cfg!(..)` instead, or put the `#[cfg]` on the whole impl"
            ),
        );
    }
}

/// Reads an async method's signature; `what` is "step" or "compensation".
/// Problems are recorded in `cx`; what could be read is returned anyway, so
/// that the rules about names and pairing still run.
pub fn signature<'a>(func: &'a ImplItemFn, what: &str, cx: &mut Ctxt) -> Signature<'a> {
    let sig = &func.sig;
    let name = &sig.ident;
    let expected = if what == "step" {
        "Result<Output, MyError>"
    } else {
        "Result<(), MyError>"
    };
    // A plain `fn` returning a future (`impl Future<Output = ..>`) is one
    // mistake, not two: the fix, `async fn`, also fixes the return type.
    // Its `Output` is read as the return type.
    let future = match (&sig.asyncness, &sig.output) {
        (None, ReturnType::Type(_, ty)) => future_output(ty),
        _ => None,
    };
    if sig.asyncness.is_none() {
        let fix = match future {
            Some(output) => {
                let output = match output {
                    Some(ty) if not_a_result(ty).is_none() => type_string(ty),
                    _ => expected.to_string(),
                };
                format!(
                    "write `async fn {name}(&self, ..) -> {output}` instead of returning a future"
                )
            }
            None => format!("write `async fn {name}(&self, ..)`"),
        };
        cx.error_spanned_by(
            sig.fn_token,
            format!("{what} `{name}` must be an `async fn`: {fix}"),
        );
    }
    if let Safety::Unsafe(unsafety) = &sig.safety {
        cx.error_spanned_by(
            unsafety,
            format!(
                "{what} `{name}` cannot be `unsafe`: the saga calls it with no way to uphold its safety contract; make it safe and put `unsafe` blocks inside"
            ),
        );
    }
    if !sig.generics.params.is_empty() && lifetimes_only(&sig.generics) {
        let declared: Vec<String> = sig
            .generics
            .lifetimes()
            .map(|l| l.lifetime.to_string())
            .collect();
        let mut fix = format!("remove `<{}>`", declared.join(", "));
        if let Some((last, rest)) = elided_references(sig).split_last() {
            let refs = if rest.is_empty() {
                last.clone()
            } else {
                format!("{} and {last}", rest.join(", "))
            };
            fix.push_str(&format!(" and write {refs}"));
        }
        cx.error_spanned_by(
            &sig.generics.params,
            format!(
                "{what} `{name}` needs no lifetime parameters: the saga lends each reference for the whole call, which is what elided lifetimes say; {fix}"
            ),
        );
    } else if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            format!(
                "{what} `{name}` cannot be generic: the saga runs it with concrete types; remove the generic parameters"
            ),
        );
    } else if let Some(where_clause) = &sig.generics.where_clause {
        cx.error_spanned_by(
            where_clause,
            format!(
                "{what} `{name}` cannot have a `where` clause: the saga calls it on one concrete type with concrete parameters, so there is nothing to constrain; remove the `where` clause"
            ),
        );
    }
    match sig.receiver() {
        None => {
            cx.error_spanned_by(
                name,
                format!(
                    "{what} `{name}` has no `self`: write `async fn {name}(&self, ..)`, since the saga calls its steps and compensations on its shared services"
                ),
            );
        }
        Some(receiver) => match &receiver.kind {
            ReceiverKind::Reference(_, _, None) => {}
            ReceiverKind::Reference(_, _, Some(mutability)) => {
                cx.error_spanned_by(
                    mutability,
                    format!(
                        "{what} `{name}` takes `&mut self`, but steps of one saga share the saga's services: take `&self` and use interior mutability (a `Mutex`, an atomic) where you must"
                    ),
                );
            }
            _ => {
                cx.error_spanned_by(
                    receiver,
                    format!(
                        "{what} `{name}` must take `&self`: the saga is shared by every run; write `async fn {name}(&self, ..)`"
                    ),
                );
            }
        },
    }
    let mut params = Vec::new();
    for arg in sig.inputs.iter() {
        let FnArg::Typed(pat_type) = arg else {
            continue;
        };
        match &*pat_type.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => params.push(Param {
                name: &p.ident,
                ty: &pat_type.ty,
            }),
            other => {
                let names = if what == "step" {
                    "`input`, `cx`, or the name of an earlier step"
                } else {
                    "its step's name, `input`, `cx`, or the name of an earlier step its step uses"
                };
                cx.error_spanned_by(
                    other,
                    format!(
                        "parameters of a {what} must be plain names, because the name says what is passed: {names}; destructure inside the body instead"
                    ),
                );
            }
        }
    }
    let ret = match &sig.output {
        ReturnType::Type(..) if future.is_some() => {
            future.flatten().filter(|ty| not_a_result(ty).is_none())
        }
        ReturnType::Type(_, ty) => match not_a_result(ty) {
            Some(kind) => {
                cx.error_spanned_by(
                    ty,
                    format!(
                        "{what} `{name}` returns {kind}, but a {what} must return `Result<T, E>`: write `-> {expected}`"
                    ),
                );
                // Read as "no return type", so that the fallback's outputs
                // struct does not ask rustc about it again.
                None
            }
            None => Some(&**ty),
        },
        ReturnType::Default => {
            cx.error_spanned_by(
                name,
                format!("{what} `{name}` must return `Result<T, E>`: add `-> {expected}`"),
            );
            None
        }
    };
    Signature { func, params, ret }
}

/// Whether every generic parameter (if any) is a lifetime.
fn lifetimes_only(generics: &Generics) -> bool {
    generics
        .params
        .iter()
        .all(|p| matches!(p, GenericParam::Lifetime(_)))
}

/// Whether `ty` is a future, and if so its `Output` when written:
/// `impl Future<Output = T>`, `Pin<Box<dyn Future<Output = T>>>` or
/// `BoxFuture<'_, T>`.
fn future_output(ty: &Type) -> Option<Option<&Type>> {
    let bounds = match ty {
        Type::ImplTrait(t) => &t.bounds,
        Type::TraitObject(t) => &t.bounds,
        Type::Paren(p) => return future_output(&p.elem),
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last()?;
            let PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            let mut types = args.args.iter().filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            });
            return match last.ident.to_string().as_str() {
                "Pin" | "Box" => future_output(types.next()?),
                "BoxFuture" | "LocalBoxFuture" => Some(types.next()),
                _ => None,
            };
        }
        _ => return None,
    };
    bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(t) = bound else {
            return None;
        };
        let last = t.path.segments.last()?;
        if last.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return Some(None);
        };
        Some(args.args.iter().find_map(|a| match a {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
            _ => None,
        }))
    })
}

/// The references of `sig` that name a lifetime, as they are written with
/// it elided: `&self`, `&u32`.
fn elided_references(sig: &syn::Signature) -> Vec<String> {
    sig.inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Receiver(r) => match &r.kind {
                ReceiverKind::Reference(_, Some(_), mutability) => Some(if mutability.is_some() {
                    "`&mut self`".to_string()
                } else {
                    "`&self`".to_string()
                }),
                _ => None,
            },
            FnArg::Typed(t) => match &*t.ty {
                Type::Reference(r) if r.lifetime.is_some() => {
                    let mut r = r.clone();
                    r.lifetime = None;
                    Some(format!("`{}`", type_string(&Type::Reference(r))))
                }
                _ => None,
            },
        })
        .collect()
}

/// The primitive types, by name.
pub const PRIMITIVES: [&str; 17] = [
    "bool", "char", "str", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64",
    "i128", "isize", "f32", "f64",
];

/// What `ty` is, when it is certainly not a `Result`: not a path, or a path
/// naming a well-known type. Any other path may be an alias of `Result`
/// (`io::Result<T>`, `Fallible<T>`), which only rustc can tell.
fn not_a_result(ty: &Type) -> Option<String> {
    const KNOWN: &[&str] = &[
        "Option", "String", "Vec", "VecDeque", "Box", "Arc", "Rc", "HashMap", "BTreeMap",
        "HashSet", "BTreeSet",
    ];
    let kind = match ty {
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            if !KNOWN.iter().chain(&PRIMITIVES).any(|k| last.ident == k) {
                return None;
            }
            return Some(format!("`{}`", type_string(ty)));
        }
        Type::Paren(inner) => return not_a_result(&inner.elem),
        Type::Tuple(t) if t.elems.is_empty() => "`()`",
        Type::Tuple(_) => "a tuple",
        Type::Reference(_) => "a reference",
        Type::Array(_) | Type::Slice(_) => "an array",
        Type::ImplTrait(_) => "an `impl Trait`",
        Type::TraitObject(_) => "a trait object",
        Type::Ptr(_) => "a pointer",
        Type::FnPtr(_) => "a function pointer",
        Type::Never(_) => "`!`",
        _ => return None,
    };
    Some(kind.to_string())
}

/// A type as the user would write it, for messages: `Option<u32>`, not
/// `Option < u32 >` as tokens print.
pub fn type_string(ty: &Type) -> String {
    let mut text = quote::quote!(#ty).to_string();
    for (from, to) in [
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" ,", ","),
        (" :: ", "::"),
        (":: ", "::"),
        ("& ", "&"),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
    ] {
        text = text.replace(from, to);
    }
    text
}

/// Whether `ty` can be a field of the outputs struct: no borrow, no `impl
/// Trait`, no `Self` (each reported by `check`, with `()` standing in).
pub fn storable(ty: &Type) -> bool {
    borrowed_part(ty).is_none() && impl_trait_part(ty).is_none() && self_part(ty).is_none()
}

/// The first `impl Trait` written in `ty`: a step's output is named in the
/// generated outputs struct and a parameter's type in the call that passes
/// it, where only a concrete type can stand.
pub fn impl_trait_part(ty: &Type) -> Option<&syn::TypeImplTrait> {
    find_in_type(ty, &mut |t| match t {
        Type::ImplTrait(i) => Some(i),
        _ => None,
    })
}

/// The first `Self` written in `ty` (as `Self`, `Self::X` or `<Self as
/// Trait>::X`).
pub fn self_part(ty: &Type) -> Option<&Ident> {
    find_in_type(ty, &mut |t| match t {
        Type::Path(p) if p.qself.is_none() => {
            let first = p.path.segments.first()?;
            (p.path.leading_colon.is_none() && first.ident == "Self").then_some(&first.ident)
        }
        _ => None,
    })
}

/// The first `f(t)` that is `Some`, for `ty` and every type written inside
/// it, outermost first.
fn find_in_type<'a, T>(ty: &'a Type, f: &mut impl FnMut(&'a Type) -> Option<T>) -> Option<T> {
    if let Some(found) = f(ty) {
        return Some(found);
    }
    match ty {
        Type::Array(a) => find_in_type(&a.elem, f),
        Type::Group(g) => find_in_type(&g.elem, f),
        Type::Paren(p) => find_in_type(&p.elem, f),
        Type::Ptr(p) => find_in_type(&p.elem, f),
        Type::Reference(r) => find_in_type(&r.elem, f),
        Type::Slice(s) => find_in_type(&s.elem, f),
        Type::Tuple(t) => t.elems.iter().find_map(|t| find_in_type(t, f)),
        Type::FnPtr(b) => b
            .inputs
            .iter()
            .find_map(|arg| find_in_type(&arg.ty, f))
            .or_else(|| find_in_return(&b.output, f)),
        Type::ImplTrait(i) => find_in_bounds(&i.bounds, f),
        Type::TraitObject(o) => find_in_bounds(&o.bounds, f),
        Type::Path(p) => p
            .qself
            .as_ref()
            .and_then(|q| find_in_type(&q.ty, f))
            .or_else(|| find_in_path(&p.path, f)),
        _ => None,
    }
}

fn find_in_path<'a, T>(
    path: &'a syn::Path,
    f: &mut impl FnMut(&'a Type) -> Option<T>,
) -> Option<T> {
    path.segments.iter().find_map(|seg| match &seg.arguments {
        PathArguments::None => None,
        PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
            GenericArgument::Type(t) => find_in_type(t, f),
            GenericArgument::AssocType(a) => find_in_type(&a.ty, f),
            _ => None,
        }),
        PathArguments::Parenthesized(args) => args
            .inputs
            .iter()
            .find_map(|arg| find_in_type(&arg.ty, f))
            .or_else(|| find_in_return(&args.output, f)),
    })
}

fn find_in_bounds<'a, T>(
    bounds: &'a syn::punctuated::Punctuated<TypeParamBound, syn::Token![+]>,
    f: &mut impl FnMut(&'a Type) -> Option<T>,
) -> Option<T> {
    bounds.iter().find_map(|bound| match bound {
        TypeParamBound::Trait(t) => find_in_path(&t.path, f),
        _ => None,
    })
}

fn find_in_return<'a, T>(
    ret: &'a ReturnType,
    f: &mut impl FnMut(&'a Type) -> Option<T>,
) -> Option<T> {
    match ret {
        ReturnType::Type(_, t) => find_in_type(t, f),
        ReturnType::Default => None,
    }
}

/// The part of `ty` that borrows: a reference (even `&'static`, which the
/// log could not read back) or a lifetime other than `'static`. Step outputs
/// and the input are stored in the saga log and outlive any borrow, so they
/// must be owned.
pub fn borrowed_part(ty: &Type) -> Option<&dyn quote::ToTokens> {
    match ty {
        Type::Reference(r) => Some(r),
        Type::Path(p) => {
            if let Some(found) = p.qself.as_ref().and_then(|q| borrowed_part(&q.ty)) {
                return Some(found);
            }
            p.path.segments.iter().find_map(|seg| {
                let PathArguments::AngleBracketed(args) = &seg.arguments else {
                    return None;
                };
                args.args.iter().find_map(|arg| match arg {
                    GenericArgument::Lifetime(l) if l.ident != "static" => {
                        Some(l as &dyn quote::ToTokens)
                    }
                    GenericArgument::Type(t) => borrowed_part(t),
                    _ => None,
                })
            })
        }
        Type::Tuple(t) => t.elems.iter().find_map(borrowed_part),
        Type::Array(a) => borrowed_part(&a.elem),
        Type::Slice(s) => borrowed_part(&s.elem),
        Type::Paren(p) => borrowed_part(&p.elem),
        Type::Group(g) => borrowed_part(&g.elem),
        _ => None,
    }
}
