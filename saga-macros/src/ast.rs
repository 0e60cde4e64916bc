//! A model of the `#[saga]` impl that borrows the syn nodes: its steps with
//! their options and parameters, and the other methods (compensations among
//! them). Problems local to one function are reported here; rules that span
//! several items live in `check`.

use syn::{
    FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemImpl, Pat, PathArguments,
    ReceiverKind, ReturnType, Type,
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
        match args.args.first()? {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        }
    }

    /// `E` in `Result<T, E>`, when written.
    pub fn error_type(&self) -> Option<&'a Type> {
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
        match args.args.iter().nth(1)? {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        }
    }
}

impl<'a> Saga<'a> {
    pub fn from_impl(item: &'a ItemImpl, args: SagaArgs, cx: &mut Ctxt) -> Option<Saga<'a>> {
        let mut ok = true;
        if let Some((path, _)) = &item.trait_ {
            cx.error_spanned_by(
                path,
                "`#[saga]` goes on an inherent impl (`impl MySaga { .. }`), not on a trait impl",
            );
            ok = false;
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            cx.error_spanned_by(
                &item.generics,
                "a `#[saga]` impl cannot be generic: the saga log must name one concrete type; wrap generic services in a concrete struct",
            );
            ok = false;
        }
        if let Some(unsafety) = &item.unsafety {
            cx.error_spanned_by(unsafety, "a `#[saga]` impl cannot be `unsafe`");
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
        if args.input.is_none() {
            cx.error_spanned_by(
                item.impl_token,
                "`#[saga]` needs the saga's input type: write `#[saga(input = MyInput)]` (use `input = ()` for none)",
            );
            ok = false;
        }

        let mut steps = Vec::new();
        let mut methods = Vec::new();
        for impl_item in &item.items {
            let ImplItem::Fn(func) = impl_item else {
                continue;
            };
            let mut step_attrs = func.attrs.iter().filter(|a| attr::is_step(a));
            let Some(step_attr) = step_attrs.next() else {
                methods.push(Method {
                    func,
                    name: &func.sig.ident,
                });
                continue;
            };
            for extra in step_attrs {
                cx.error_spanned_by(
                    extra,
                    "duplicate `#[step]`: give all options in one attribute",
                );
            }
            let step_args = attr::step_args(step_attr, cx);
            let Some(sig) = signature(func, "step", cx) else {
                ok = false;
                continue;
            };
            steps.push(Step {
                name: &func.sig.ident,
                args: step_args,
                sig,
            });
        }
        if steps.is_empty() && ok {
            cx.error_spanned_by(
                &item.self_ty,
                "this saga has no steps: mark its async methods with `#[step]` (and pair each with `compensate = ..`)",
            );
        }
        ok.then_some(Saga {
            item,
            self_ident,
            args,
            steps,
            methods,
        })
    }

    /// The saga's stable name.
    pub fn name(&self) -> String {
        match &self.args.name {
            Some(lit) => lit.value(),
            None => self.self_ident.to_string(),
        }
    }

    pub fn outputs_ident(&self) -> Ident {
        match &self.args.outputs {
            Some(ident) => ident.clone(),
            None => Ident::new(
                &format!("{}Outputs", self.self_ident),
                self.self_ident.span(),
            ),
        }
    }

    pub fn step_index(&self, name: &Ident) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    pub fn method(&self, name: &Ident) -> Option<&Method<'a>> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// Reads an async method's signature; `what` is "step" or "compensation".
pub fn signature<'a>(func: &'a ImplItemFn, what: &str, cx: &mut Ctxt) -> Option<Signature<'a>> {
    let sig = &func.sig;
    let name = &sig.ident;
    let mut ok = true;
    if sig.asyncness.is_none() {
        cx.error_spanned_by(
            sig.fn_token,
            format!("{what} `{name}` must be an `async fn`: write `async fn {name}(&self, ..)`"),
        );
        ok = false;
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &sig.generics,
            format!("{what} `{name}` cannot be generic: the saga runs it with concrete types"),
        );
        ok = false;
    }
    match sig.receiver() {
        None => {
            cx.error_spanned_by(
                name,
                format!("{what} `{name}` must take `&self` as its first parameter"),
            );
            ok = false;
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
                ok = false;
            }
            _ => {
                cx.error_spanned_by(
                    receiver,
                    format!("{what} `{name}` must take `&self`: the saga is shared by every run"),
                );
                ok = false;
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
                cx.error_spanned_by(
                    other,
                    format!(
                        "parameters of a {what} must be plain names, because the name says what is passed: `input`, `cx`, or the name of an earlier step"
                    ),
                );
                ok = false;
            }
        }
    }
    let ret = match &sig.output {
        ReturnType::Type(_, ty) => Some(&**ty),
        ReturnType::Default => {
            cx.error_spanned_by(
                name,
                format!(
                    "{what} `{name}` must return `Result<T, E>`: add `-> Result<{}, MyError>`",
                    if what == "step" { "Output" } else { "()" }
                ),
            );
            ok = false;
            None
        }
    };
    ok.then_some(Signature { func, params, ret })
}
