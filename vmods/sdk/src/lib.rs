//! The runtime of a Shellac VMOD component (`shellac:vmod@0.1.0`, see
//! `wit/vmod.wit` and `wit/README.md` at the top of the repository).
//!
//! A VMOD crate generates its bindings with `wit_bindgen::generate!` and
//! links this crate, which brings:
//!
//! - **The workspace arena** ([`arena`]): the crate's `#[global_allocator]`
//!   on wasm32. A bump allocator over the instance's linear memory, like
//!   Varnish's `WS_Alloc`: what is allocated before the `warm` event (in
//!   `load` and while `vcl_init` runs) is permanent, `warm` records that
//!   point as the floor, and every `end-task` drops everything above it.
//!   `dealloc` frees nothing (except the very last allocation, which is
//!   popped), `realloc` grows in place when it is the last allocation. An
//!   allocation the host's memory cap refuses traps at once.
//! - **Task-local state** ([`TaskLocal`]): Varnish's `PRIV_TASK`. A value
//!   that lives until the task's `end-task`, then is gone (forgotten, not
//!   dropped: its memory went with the arena).
//! - **State built in `vcl_init`** ([`InitOnly`]): Varnish's `PRIV_VCL` and
//!   object state. Changeable only before `warm`; afterwards every task sees
//!   the image `vcl_init` left. Object methods get `&self` from wit-bindgen,
//!   so a VCL object is naturally read-only during tasks; keep anything an
//!   object must change during `vcl_init` (like `querystring.filter`'s
//!   criteria) in an `InitOnly`.
//! - **The lifecycle export in one line**: [`lifecycle!`] implements
//!   `shellac:vmod/lifecycle` (`on-event`, `end-task`) for your component.
//! - Small helpers: [`fail`], [`split_list`].
//!
//! State shared across tasks (counters, rate limits) is never kept in guest
//! memory: use the `shared` import, which the host keeps per tenant and
//! VMOD. Guest statics written during a task are a bug: the arena under
//! them is reset when the task ends. Write statics in `load` or in
//! `vcl_init` only, or use a [`TaskLocal`].
//!
//! ```ignore
//! wit_bindgen::generate!({
//!     world: "vmod-hello",
//!     path: ["../../wit", "wit"],
//!     generate_all,
//! });
//!
//! struct Component;
//! shellac_vmod_sdk::lifecycle!(Component);
//! export!(Component);
//!
//! impl exports::vmod::hello::hello::Guest for Component {
//!     type Greeter = Greeter;
//!     fn hello(name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//! ```

#![warn(missing_docs)]

pub mod arena;
mod cell;
pub mod rt;

pub use cell::{InitOnly, TaskLocal};

/// A lifecycle event, as the host sends it (Varnish's `VCL_EVENT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// After instantiation, before `vcl_init`'s calls are replayed.
    Load,
    /// After `vcl_init`: what exists now is the image every task starts from.
    Warm,
    /// The VCL went cold.
    Cold,
    /// The VCL is being discarded.
    Discard,
}

/// `Err(msg)`: fails the VCL task (503) with `msg` logged, when returned
/// from a function whose WIT result is `result<T, string>`.
pub fn fail<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

/// The items of a list as VCL users write them: separated by commas and/or
/// whitespace, trimmed, empty items skipped (`"a, b,,c d"` → a b c d).
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
}

/// Implements the `shellac:vmod/lifecycle` export for a component type.
///
/// Invoke it in the module where `wit_bindgen::generate!` put the bindings
/// (normally the crate root):
///
/// ```ignore
/// struct Component;
/// shellac_vmod_sdk::lifecycle!(Component);
/// // or, with a hook that runs on every event (after the SDK's handling
/// // for load, cold and discard; before the floor is recorded for warm):
/// shellac_vmod_sdk::lifecycle!(Component, on_event = my_hook);
/// fn my_hook(ev: shellac_vmod_sdk::Event) -> Result<(), String> { Ok(()) }
/// ```
#[macro_export]
macro_rules! lifecycle {
    ($component:ty) => {
        $crate::lifecycle!($component, on_event = $crate::rt::no_hook);
    };
    ($component:ty, on_event = $hook:path) => {
        impl self::exports::shellac::vmod::lifecycle::Guest for $component {
            fn on_event(
                event: self::shellac::vmod::types::Event,
            ) -> ::core::result::Result<(), ::std::string::String> {
                use self::shellac::vmod::types::Event as E;
                let ev = match event {
                    E::Load => $crate::Event::Load,
                    E::Warm => $crate::Event::Warm,
                    E::Cold => $crate::Event::Cold,
                    E::Discard => $crate::Event::Discard,
                };
                $crate::rt::on_event(ev, $hook)
            }
            fn end_task() {
                $crate::rt::end_task()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        let v: Vec<&str> = split_list(" a, b,,c\td ").collect();
        assert_eq!(v, ["a", "b", "c", "d"]);
        assert_eq!(split_list("").count(), 0);
    }
}
