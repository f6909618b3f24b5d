//! The `return (…)` actions each built-in subroutine allows in Varnish 7.1,
//! and the arguments each action takes.
//!
//! Checked against `varnishd -C` of Varnish 7.1.1 for every method and
//! action. Facts a checker needs:
//!
//! - Action names are lower case and matched case-sensitively; anything
//!   else (`Hash`, and also `miss`, which is no return action in 7.1) is
//!   "Expected return action name.".
//! - An action outside the method's list is reported after parsing as
//!   `Invalid return "deliver"`, then `...in subroutine "vcl_recv"`, then
//!   `...which is the "vcl_recv" subroutine` and
//!   `Legal returns are: "fail" "hash" …` (names sorted alphabetically; see
//!   [`legal_returns_note`]). Returns in user subroutines are checked
//!   against every method that calls them.
//! - `return;` without an action is allowed only in user subroutines.
//! - The VCL version (4.0/4.1) makes no difference.

use crate::types::{Action, Method, Type};

/// The actions `return (…)` may name in method `m`, in Varnish's order.
pub fn allowed_returns(m: Method) -> &'static [Action] {
    use Action::*;
    match m {
        Method::Recv => &[Fail, Synth, Restart, Pass, Pipe, Hash, Purge, Vcl],
        Method::Pipe => &[Fail, Synth, Pipe],
        Method::Pass => &[Fail, Synth, Restart, Fetch],
        Method::Hash => &[Fail, Lookup],
        Method::Purge => &[Fail, Synth, Restart],
        Method::Miss => &[Fail, Synth, Restart, Pass, Fetch],
        Method::Hit => &[Fail, Synth, Restart, Pass, Deliver],
        Method::Deliver => &[Fail, Synth, Restart, Deliver],
        Method::Synth => &[Fail, Restart, Deliver],
        Method::BackendFetch => &[Fail, Fetch, Abandon, Error],
        Method::BackendResponse => &[Fail, Deliver, Retry, Abandon, Pass, Error],
        Method::BackendError => &[Fail, Deliver, Retry, Abandon],
        Method::Init => &[Ok, Fail],
        Method::Fini => &[Ok],
    }
}

/// Whether `name` is a return action Varnish 7.1 knows at all (in some
/// method). `miss` is not: `Action::Miss` exists for the host's state
/// machine only.
pub fn is_return_action(name: &str) -> bool {
    Action::from_name(name)
        .is_some_and(|a| Method::ALL.iter().any(|m| allowed_returns(*m).contains(&a)))
}

/// Varnish's last line for an invalid return, e.g. for `vcl_synth`:
/// `Legal returns are: "deliver" "fail" "restart"`.
pub fn legal_returns_note(m: Method) -> String {
    let mut names: Vec<&str> = allowed_returns(m).iter().map(|a| a.name()).collect();
    names.sort_unstable();
    let mut s = String::from("Legal returns are:");
    for n in names {
        s.push_str(" \"");
        s.push_str(n);
        s.push('"');
    }
    s
}

/// What may follow an action's name inside `return (…)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionArgs {
    /// Whether the action may appear without a parenthesised argument
    /// list. If not, Varnish says "Missing argument.".
    pub bare: bool,
    /// The argument types when a list is given; empty means a list is not
    /// allowed ("Arguments not allowed.").
    pub args: &'static [Type],
    /// How many of `args` are required when a list is given.
    pub required: usize,
}

/// The arguments of each action, independent of the method (Varnish checks
/// the action against the method separately):
///
/// - `synth(INT status[, STRING reason])`: the list is required.
/// - `error([INT status[, STRING reason]])`: `error` alone is fine.
/// - `vcl(LABEL)`: required; the argument is a VCL label name (type VCL),
///   resolved by the symbol table. `varnishd -C` knows no labels, so it
///   reports `Symbol not found: 'x'`.
/// - `pass([DURATION ttl])`: the hit-for-pass TTL. Accepted by the compiler
///   wherever `pass` is allowed; outside `vcl_backend_response` Varnish
///   ignores it at run time and logs
///   `Note: Ignoring DURATION argument to return(pass);`.
/// - `fail([STRING reason])`: the reason is logged (default
///   "Failed from VCL").
/// - every other action takes no list.
pub fn action_args(a: Action) -> ActionArgs {
    const NONE: ActionArgs = ActionArgs {
        bare: true,
        args: &[],
        required: 0,
    };
    match a {
        Action::Synth => ActionArgs {
            bare: false,
            args: &[Type::Int, Type::String],
            required: 1,
        },
        Action::Error => ActionArgs {
            bare: true,
            args: &[Type::Int, Type::String],
            required: 1,
        },
        Action::Vcl => ActionArgs {
            bare: false,
            args: &[Type::Vcl],
            required: 1,
        },
        Action::Pass => ActionArgs {
            bare: true,
            args: &[Type::Duration],
            required: 1,
        },
        Action::Fail => ActionArgs {
            bare: true,
            args: &[Type::String],
            required: 1,
        },
        _ => NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_checks() {
        assert!(allowed_returns(Method::Recv).contains(&Action::Restart));
        assert!(allowed_returns(Method::Recv).contains(&Action::Vcl));
        assert!(!allowed_returns(Method::Recv).contains(&Action::Deliver));
        assert!(allowed_returns(Method::BackendResponse).contains(&Action::Pass));
        assert!(!allowed_returns(Method::BackendError).contains(&Action::Error));
        assert_eq!(allowed_returns(Method::Fini), &[Action::Ok]);
        assert!(!allowed_returns(Method::Miss).contains(&Action::Deliver));
    }

    #[test]
    fn every_method_allows_fail_but_fini() {
        for m in Method::ALL {
            assert_eq!(
                allowed_returns(m).contains(&Action::Fail),
                m != Method::Fini,
                "{}",
                m.sub_name()
            );
        }
    }

    #[test]
    fn names() {
        assert!(is_return_action("lookup"));
        assert!(!is_return_action("miss"));
        assert!(!is_return_action("Hash"));
        assert_eq!(
            legal_returns_note(Method::Recv),
            "Legal returns are: \"fail\" \"hash\" \"pass\" \"pipe\" \"purge\" \"restart\" \"synth\" \"vcl\""
        );
    }

    #[test]
    fn args() {
        assert!(!action_args(Action::Synth).bare);
        assert!(action_args(Action::Error).bare);
        assert_eq!(action_args(Action::Pass).args, &[Type::Duration]);
        assert!(action_args(Action::Hash).args.is_empty());
    }
}
