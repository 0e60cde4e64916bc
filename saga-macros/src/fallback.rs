//! What is emitted when the saga has errors: the errors, the user's impl
//! (so its methods exist and calls to them do not fail too), and, when the
//! shape is known, the outputs struct and a placeholder `Saga` impl, so that
//! code using the saga elsewhere does not fail for an unrelated reason.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{ImplItem, Item, ItemImpl};

use crate::ast::Saga;
use crate::ctxt::Ctxt;
use crate::{attr, expand};

pub fn emit(item: &ItemImpl, saga: Option<&Saga>, cx: Ctxt) -> TokenStream {
    let errors = cx.into_error().map(|e| e.to_compile_error());
    let mut stripped = strip(item);
    if saga.is_some_and(|s| s.steps.is_empty()) {
        // The saga has no steps, likely because a macro inside the impl
        // writes them (reported at the invocation): expanded here, each
        // would add a second error from its `#[step]`, found outside a saga.
        // The invocation is left out instead, though helpers it writes go
        // too, and rustc warns that the macro is unused.
        stripped.items.retain(|i| !matches!(i, ImplItem::Macro(_)));
    }
    let placeholder = saga.and_then(placeholder);
    quote! {
        #errors
        #stripped
        #placeholder
    }
}

/// The impl as written, minus the `#[step]` attributes `#[saga]` consumed
/// (and any `#[cfg_attr(.., step)]`, reported already, which would expand
/// to a `#[step]` outside the saga).
pub fn strip(item: &ItemImpl) -> ItemImpl {
    let mut item = item.clone();
    for impl_item in &mut item.items {
        let attrs = match impl_item {
            ImplItem::Fn(f) => &mut f.attrs,
            ImplItem::Const(c) => &mut c.attrs,
            ImplItem::Type(t) => &mut t.attrs,
            ImplItem::Macro(m) => &mut m.attrs,
            _ => continue,
        };
        attrs.retain(|a| !attr::is_step(a) && attr::step_in_cfg_attr(a).is_none());
    }
    item
}

/// `#[saga]` on something that is not an impl block: the error, at the
/// item's keyword, and the item unchanged.
pub fn not_an_impl(item: TokenStream) -> TokenStream {
    let (what, span) = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(f)) => ("a function", f.sig.fn_token.span),
        Ok(Item::Struct(s)) => ("a struct", s.struct_token.span),
        Ok(Item::Enum(e)) => ("an enum", e.enum_token.span),
        Ok(Item::Trait(t)) => ("a trait", t.trait_token.span),
        Ok(Item::Mod(m)) => ("a module", m.mod_token.span),
        _ => (
            "this item",
            item.clone()
                .into_iter()
                .next()
                .map_or_else(Span::call_site, |t| t.span()),
        ),
    };
    let error = syn::Error::new(
        span,
        format!(
            "`#[saga]` goes on an inherent impl block, not on {what}: write the steps as async methods of `#[saga(input = MyInput)] impl MySaga {{ .. }}`"
        ),
    )
    .to_compile_error();
    quote!(#error #item)
}

/// A stand-in `Saga` impl, so that code using the saga elsewhere (calling
/// `definition()`, starting it) does not fail for an unrelated reason.
fn placeholder(saga: &Saga) -> Option<TokenStream> {
    if !saga.has_known_shape() {
        return None;
    }
    let input = saga.args.input.as_ref()?;
    let self_ty = &saga.item.self_ty;
    let outputs = saga.outputs_ident();
    let outputs_struct = expand::outputs_struct(saga);
    let name = saga.name();
    Some(quote! {
        #outputs_struct

        const _: () = {
            static __SAGA_DEFINITION: ::saga::__private::Definition =
                ::saga::__private::Definition::__new(#name, 0, 0, &[], ::core::option::Option::None);

            impl ::saga::__private::Saga for #self_ty {
                type Input = #input;
                type Outputs = #outputs;
                type State = ();
                type StepOutput = ();

                fn definition() -> &'static ::saga::__private::Definition {
                    &__SAGA_DEFINITION
                }

                fn __run_step<'__saga>(
                    &'__saga self,
                    _: usize,
                    _: &'__saga Self::Input,
                    _: &'__saga (),
                    _: &'__saga ::saga::__private::StepContext,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::saga::__private::StepError>,
                > + ::core::marker::Send + '__saga {
                    async { ::core::unreachable!("this saga did not compile") }
                }

                fn __store(_: &mut (), _: ()) {
                    ::core::unreachable!("this saga did not compile")
                }

                fn __has_output(_: &(), _: usize) -> bool {
                    ::core::unreachable!("this saga did not compile")
                }

                fn __compensate<'__saga>(
                    &'__saga self,
                    _: usize,
                    _: &'__saga Self::Input,
                    _: &'__saga (),
                    _: &'__saga ::saga::__private::StepContext,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::saga::__private::StepError>,
                > + ::core::marker::Send + '__saga {
                    async { ::core::unreachable!("this saga did not compile") }
                }

                fn __outputs(_: ()) -> #outputs {
                    ::core::unreachable!("this saga did not compile")
                }

                fn __encode_step_output(
                    _: &(),
                ) -> ::core::result::Result<::saga::__private::serde_json::Value, ::saga::__private::serde_json::Error> {
                    ::core::unreachable!("this saga did not compile")
                }

                fn __decode_output(
                    _: &mut (),
                    _: usize,
                    _: ::saga::__private::serde_json::Value,
                ) -> ::core::result::Result<(), ::saga::__private::serde_json::Error> {
                    ::core::unreachable!("this saga did not compile")
                }
            }
        };
    })
}
