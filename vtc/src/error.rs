//! Errors of the VTC front end.

use thiserror::Error;

/// Everything that can go wrong while tokenizing, expanding or classifying
/// a VTC script.
///
/// Every variant carries the 1-based line number in the .vtc file, because a
/// test author fixes a test by going to that line; varnishtest reports its
/// failures per command line too.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VtcError {
    /// A `"…"` token reached the end of its line (varnishtest: "Unterminated
    /// quoted string in line") or the end of the input.
    #[error("line {line}: unterminated quoted string")]
    UnterminatedQuote {
        /// Line of the opening quote.
        line: u32,
    },
    /// A `{…}` token whose braces never balance (varnishtest asserts).
    #[error("line {line}: unbalanced '{{' (no matching '}}')")]
    UnterminatedBrace {
        /// Line of the opening brace.
        line: u32,
    },
    /// A backslash sequence inside `"…"` that varnishtest does not know.
    /// varnishtest itself misbehaves on these (it corrupts the token), so we
    /// refuse them instead of guessing.
    #[error("line {line}: invalid backslash sequence {sequence:?} in quoted string")]
    InvalidEscape {
        /// Line of the sequence.
        line: u32,
        /// The backslash and the character(s) after it.
        sequence: String,
    },
    /// varnishtest accepts at most 199 tokens per command.
    #[error("line {line}: more than {max} tokens in one command")]
    TooManyTokens {
        /// Line of the command.
        line: u32,
        /// The limit.
        max: usize,
    },
    /// `${name}` with no such macro (and `feature ignore_unknown_macro` off).
    #[error("line {line}: Macro ${{{text}}} not found")]
    UnknownMacro {
        /// Line of the token holding the macro.
        line: u32,
        /// Text between `${` and `}`.
        text: String,
    },
    /// `${…}` whose inside cannot be split into arguments.
    #[error("line {line}: Macro ${{{text}}} parsing failed: {reason}")]
    MacroParse {
        /// Line of the token holding the macro.
        line: u32,
        /// Text between `${` and `}`.
        text: String,
        /// Why splitting failed.
        reason: String,
    },
    /// A macro was found but could not produce a value (bad arguments).
    #[error("line {line}: Macro ${{{text}}} failed: {reason}")]
    MacroFailed {
        /// Line of the token holding the macro.
        line: u32,
        /// Text between `${` and `}`.
        text: String,
        /// The macro's complaint.
        reason: String,
    },
    /// An option that needs values came last on its command.
    #[error("line {line}: option {option} of '{command}' needs {needed} value(s)")]
    MissingValue {
        /// Line of the command.
        line: u32,
        /// The command name.
        command: String,
        /// The option lacking values.
        option: String,
        /// How many values it takes.
        needed: usize,
    },
    /// `server`, `client`, `varnish`, … without the instance name.
    #[error("line {line}: '{command}' needs an instance name")]
    MissingName {
        /// Line of the command.
        line: u32,
        /// The command name.
        command: String,
    },
    /// A token that must be text (a name, a number, a VCL) holds bytes that
    /// are not UTF-8 (e.g. from a `\xNN` escape).
    #[error("line {line}: token is not valid UTF-8")]
    NotUtf8 {
        /// Line of the token.
        line: u32,
    },
}

impl VtcError {
    /// The line the error refers to, for callers that prefix file names.
    pub fn line(&self) -> u32 {
        match self {
            VtcError::UnterminatedQuote { line }
            | VtcError::UnterminatedBrace { line }
            | VtcError::InvalidEscape { line, .. }
            | VtcError::TooManyTokens { line, .. }
            | VtcError::UnknownMacro { line, .. }
            | VtcError::MacroParse { line, .. }
            | VtcError::MacroFailed { line, .. }
            | VtcError::MissingValue { line, .. }
            | VtcError::MissingName { line, .. }
            | VtcError::NotUtf8 { line } => *line,
        }
    }
}
