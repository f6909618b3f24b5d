//! Top-level structure of a .vtc file: which command each line is, which
//! instance it addresses, and which of its arguments are options (with their
//! values) and which are positional (mostly nested specs).
//!
//! The classification is done on unexpanded tokens. That is sound because a
//! macro expands *inside* one token and never changes the number of tokens;
//! option names are never written as macros. A runner still expands each
//! command just before running it ([`TopCommand::expand`]), like
//! varnishtest.

use crate::error::VtcError;
use crate::macros::Macros;
use crate::token::{tokenize, Command, Token};

/// Which top-level command a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopKind {
    /// `varnishtest "description"`.
    Varnishtest,
    /// `vtest "description"` (the same as `varnishtest`).
    Vtest,
    /// `feature F…` (skip the test unless the features hold).
    Feature,
    /// `server sN …`: a scripted origin server.
    Server,
    /// `client cN …`: a scripted HTTP client.
    Client,
    /// `varnish vN …`: a varnishd instance and actions on it.
    Varnish,
    /// `barrier bN cond|sock N [-cyclic]` or `barrier bN sync`.
    Barrier,
    /// `delay SECONDS`.
    Delay,
    /// `shell [-err] [-exit N] [-expect S] [-match RE] CMD`.
    Shell,
    /// `logexpect lN -v vN …`: expectations on the shared-memory log.
    Logexpect,
    /// `process pN …`: an arbitrary child process with a terminal.
    Process,
    /// `setenv [-ifunset] NAME VALUE`.
    Setenv,
    /// `syslog SN …`: a syslog receiver.
    Syslog,
    /// `tunnel tN …`: a TCP relay that can pause traffic.
    Tunnel,
    /// `haproxy hN …`: an HAProxy instance.
    Haproxy,
    /// `loop N SPEC`: run SPEC N times (valid in any spec).
    Loop,
    /// Any other name; varnishtest fails the test on it, a runner may too.
    Unknown,
}

impl TopKind {
    /// The kind for a command name.
    pub fn from_name(name: &[u8]) -> TopKind {
        match name {
            b"varnishtest" => TopKind::Varnishtest,
            b"vtest" => TopKind::Vtest,
            b"feature" => TopKind::Feature,
            b"server" => TopKind::Server,
            b"client" => TopKind::Client,
            b"varnish" => TopKind::Varnish,
            b"barrier" => TopKind::Barrier,
            b"delay" => TopKind::Delay,
            b"shell" => TopKind::Shell,
            b"logexpect" => TopKind::Logexpect,
            b"process" => TopKind::Process,
            b"setenv" => TopKind::Setenv,
            b"syslog" => TopKind::Syslog,
            b"tunnel" => TopKind::Tunnel,
            b"haproxy" => TopKind::Haproxy,
            b"loop" => TopKind::Loop,
            _ => TopKind::Unknown,
        }
    }

    /// Whether the first argument names an instance (`s1`, `v1`, `b1` …).
    pub fn has_instance(self) -> bool {
        matches!(
            self,
            TopKind::Server
                | TopKind::Client
                | TopKind::Varnish
                | TopKind::Barrier
                | TopKind::Logexpect
                | TopKind::Process
                | TopKind::Syslog
                | TopKind::Tunnel
                | TopKind::Haproxy
        )
    }

    /// How many values follow `opt` for this command, from varnishtest's
    /// argument loops. `None` means the token is positional. `next` is the
    /// token after the option (needed for `varnish -expect !COUNTER`).
    fn arity(self, opt: &Token, next: Option<&Token>) -> Option<usize> {
        let o = opt.bytes.as_slice();
        let known = match (self, o) {
            // Session options shared by server and client.
            (TopKind::Server | TopKind::Client, b"-repeat" | b"-rcvbuf") => Some(1),
            (TopKind::Server | TopKind::Client, b"-keepalive") => Some(0),
            (TopKind::Server, b"-listen") => Some(1),
            (TopKind::Client, b"-connect" | b"-proxy1" | b"-proxy2") => Some(1),
            (
                TopKind::Varnish,
                b"-arg" | b"-cli" | b"-clijson" | b"-cliok" | b"-expectexit" | b"-jail" | b"-proto"
                | b"-syntax" | b"-vcl" | b"-vcl+backend" | b"-vsc",
            ) => Some(1),
            (TopKind::Varnish, b"-clierr" | b"-cliexpect" | b"-errvcl") => Some(2),
            (TopKind::Varnish, b"-expect") => {
                // `-expect !PATTERN` takes one value, `-expect A OP B` three.
                match next {
                    Some(t) if t.bytes.first() == Some(&b'!') => Some(1),
                    _ => Some(3),
                }
            }
            (TopKind::Barrier, b"cond" | b"sock") => Some(1),
            (TopKind::Barrier, b"sync" | b"-cyclic") => Some(0),
            (TopKind::Feature, b"cmd") => Some(1),
            (TopKind::Shell, b"-exit" | b"-expect" | b"-match") => Some(1),
            (TopKind::Logexpect, b"-m" | b"-err" | b"-start" | b"-run" | b"-wait") => Some(0),
            // -v -d -g -q and every VSL option (-i -I -x -X -c -b -C -T -L …)
            // take one value in logexpect.
            (TopKind::Logexpect, _) if opt.is_option() => Some(1),
            (
                TopKind::Process,
                b"-expect-exit" | b"-expect-signal" | b"-kill" | b"-need-bytes" | b"-write"
                | b"-writehex" | b"-writeln",
            ) => Some(1),
            (TopKind::Process, b"-expect-cursor" | b"-winsz") => Some(2),
            (TopKind::Process, b"-expect-text") => Some(3),
            (TopKind::Syslog, b"-repeat" | b"-bind" | b"-level") => Some(1),
            (TopKind::Tunnel, b"-connect" | b"-listen") => Some(1),
            (
                TopKind::Haproxy,
                b"-conf-OK" | b"-arg" | b"-cli" | b"-mcli" | b"-conf" | b"-conf+backend"
                | b"-expectexit",
            ) => Some(1),
            (TopKind::Haproxy, b"-conf-BAD") => Some(2),
            _ => None,
        };
        match known {
            Some(n) => Some(n),
            None if opt.is_option() && self != TopKind::Delay => Some(0),
            None => None,
        }
    }
}

/// An argument of a top-level command after classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// An option (`-start`, `-vcl+backend`, or a keyword such as barrier's
    /// `cond`) with the values it consumes, in order.
    Option {
        /// The option token itself.
        name: Token,
        /// Its values (as many as varnishtest consumes).
        values: Vec<Token>,
    },
    /// Anything else: typically the nested spec of a server or client, the
    /// text of a `shell` command, a feature name.
    Positional(Token),
}

impl Arg {
    /// The option name, if this is an option.
    pub fn option_name(&self) -> Option<&Token> {
        match self {
            Arg::Option { name, .. } => Some(name),
            Arg::Positional(_) => None,
        }
    }

    /// Whether this is the option `name`.
    pub fn is_option(&self, name: &str) -> bool {
        self.option_name().is_some_and(|t| t.is(name))
    }
}

/// One top-level command, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopCommand {
    /// What the command is.
    pub kind: TopKind,
    /// The raw command (all tokens, unexpanded), kept so a runner can
    /// expand and re-classify it at execution time.
    pub command: Command,
    /// The instance name (`s1`, `v1`, …) for commands that take one.
    pub instance: Option<Token>,
    /// The remaining arguments, classified, in order (order matters:
    /// `varnish v1 -syntax 4.0 -vcl {…} -start` acts left to right).
    pub args: Vec<Arg>,
}

impl TopCommand {
    /// Classifies a tokenized command.
    pub fn classify(command: Command) -> Result<TopCommand, VtcError> {
        let kind = TopKind::from_name(&command.name().bytes);
        let line = command.line;
        let cmd_name = || command.name().text().into_owned();
        let mut rest = command.args();
        let mut instance = None;
        if kind.has_instance() {
            match rest.split_first() {
                Some((first, tail)) => {
                    instance = Some(first.clone());
                    rest = tail;
                }
                None => {
                    return Err(VtcError::MissingName {
                        line,
                        command: cmd_name(),
                    })
                }
            }
        }
        let mut args = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            let tok = &rest[i];
            match kind.arity(tok, rest.get(i + 1)) {
                Some(n) => {
                    let values =
                        rest.get(i + 1..i + 1 + n)
                            .ok_or_else(|| VtcError::MissingValue {
                                line: tok.line,
                                command: cmd_name(),
                                option: tok.text().into_owned(),
                                needed: n,
                            })?;
                    args.push(Arg::Option {
                        name: tok.clone(),
                        values: values.to_vec(),
                    });
                    i += 1 + n;
                }
                None => {
                    args.push(Arg::Positional(tok.clone()));
                    i += 1;
                }
            }
        }
        Ok(TopCommand {
            kind,
            command,
            instance,
            args,
        })
    }

    /// 1-based line of the command.
    pub fn line(&self) -> u32 {
        self.command.line
    }

    /// The command's name token (`server`, `varnish`, …).
    pub fn name(&self) -> &Token {
        self.command.name()
    }

    /// The instance name as text (`"s1"`), if any.
    pub fn instance_name(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.instance.as_ref().map(Token::text)
    }

    /// Positional arguments in order.
    pub fn positionals(&self) -> impl Iterator<Item = &Token> {
        self.args.iter().filter_map(|a| match a {
            Arg::Positional(t) => Some(t),
            Arg::Option { .. } => None,
        })
    }

    /// The nested spec of a `server`, `client`, `logexpect`, `process`,
    /// `syslog`, `tunnel` or `loop` command: its last positional argument
    /// (varnishtest keeps the last one it sees). Parse it with
    /// [`parse_spec`].
    pub fn spec(&self) -> Option<&Token> {
        self.positionals().last()
    }

    /// The description of `varnishtest`/`vtest`.
    pub fn description(&self) -> Option<&Token> {
        match self.kind {
            TopKind::Varnishtest | TopKind::Vtest => self.command.args().first(),
            _ => None,
        }
    }

    /// Expands macros in all tokens (as varnishtest does right before the
    /// command runs) and classifies the result again.
    pub fn expand(&self, macros: &Macros) -> Result<TopCommand, VtcError> {
        TopCommand::classify(self.command.expand(macros)?)
    }
}

/// A whole .vtc file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The top-level commands in file order.
    pub commands: Vec<TopCommand>,
}

impl Script {
    /// The `varnishtest` description, if the file has one.
    pub fn description(&self) -> Option<&Token> {
        self.commands.iter().find_map(TopCommand::description)
    }
}

/// Parses a .vtc file into its top-level commands. Nested specs stay raw
/// (braced tokens with their starting line) until [`parse_spec`].
pub fn parse_script(src: &[u8]) -> Result<Script, VtcError> {
    let commands = tokenize(src, 1)?
        .into_iter()
        .map(TopCommand::classify)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Script { commands })
}

/// Tokenizes a nested spec (the body of a `server`, `client`, `loop` …)
/// keeping the line numbers of the enclosing file. Works for quoted specs
/// too (`server s1 "rxreq"`), although their escapes are already decoded.
pub fn parse_spec(spec: &Token) -> Result<Vec<Command>, VtcError> {
    tokenize(&spec.bytes, spec.line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenKind;

    const SRC: &str = r#"varnishtest "Test \"x\""

# comment
server s1 {
	rxreq
	txresp -body "hi"
} -start

varnish v1 -arg "-p a=b" -syntax 4.0 -vcl+backend {
	sub vcl_recv { }
} -start -expect !MAIN.foo

varnish v1 -expect MAIN.a == 1 -cliok "param.set x y" -errvcl {Nope} {x} -clierr 300 "x"

client c1 -connect ${v1_sock} {
	txreq
	rxresp
	expect resp.status == 200
} -run

barrier b1 cond 2 -cyclic
logexpect l1 -v v1 -g raw -q "x" {
	expect * * Begin
} -start
feature cmd "true" 64bit
shell -match "x" {echo x}
delay .1
frob x -y
"#;

    #[test]
    fn classify_all() {
        let s = parse_script(SRC.as_bytes()).unwrap();
        let kinds: Vec<_> = s.commands.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            vec![
                TopKind::Varnishtest,
                TopKind::Server,
                TopKind::Varnish,
                TopKind::Varnish,
                TopKind::Client,
                TopKind::Barrier,
                TopKind::Logexpect,
                TopKind::Feature,
                TopKind::Shell,
                TopKind::Delay,
                TopKind::Unknown,
            ]
        );
        assert_eq!(s.description().unwrap().text(), "Test \"x\"");

        let srv = &s.commands[1];
        assert_eq!(srv.line(), 4);
        assert_eq!(srv.instance_name().unwrap(), "s1");
        let spec = srv.spec().unwrap();
        assert_eq!(spec.line, 4);
        let inner = parse_spec(spec).unwrap();
        assert_eq!(inner.len(), 2);
        assert_eq!(inner[1].line, 6);
        assert_eq!(inner[1].tokens[2].text(), "hi");
        assert!(srv.args.last().unwrap().is_option("-start"));

        let v = &s.commands[2];
        let names: Vec<_> = v
            .args
            .iter()
            .map(|a| a.option_name().unwrap().text().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["-arg", "-syntax", "-vcl+backend", "-start", "-expect"]
        );
        let v2 = &s.commands[3];
        let n: Vec<_> = v2
            .args
            .iter()
            .map(|a| match a {
                Arg::Option { values, .. } => values.len(),
                Arg::Positional(_) => 99,
            })
            .collect();
        assert_eq!(n, vec![3, 1, 2, 2]);

        let c = &s.commands[4];
        assert!(c.args[0].is_option("-connect"));
        assert_eq!(c.spec().unwrap().kind, TokenKind::Braced);

        let b = &s.commands[5];
        assert_eq!(b.args.len(), 2);
        let l = &s.commands[6];
        assert_eq!(l.args.len(), 5);
        assert_eq!(l.spec().unwrap().line, 22);
        let f = &s.commands[7];
        assert!(f.args[0].is_option("cmd"));
        assert_eq!(f.positionals().next().unwrap().text(), "64bit");
        let sh = &s.commands[8];
        assert_eq!(sh.spec().unwrap().text(), "echo x");
        assert_eq!(s.commands[9].positionals().next().unwrap().text(), ".1");
    }

    #[test]
    fn expand_at_run_time() {
        let s = parse_script(SRC.as_bytes()).unwrap();
        let mut m = Macros::new();
        assert!(matches!(
            s.commands[4].expand(&m),
            Err(VtcError::UnknownMacro { line: 15, .. })
        ));
        m.define("v1_sock", "127.0.0.1:8080");
        let c = s.commands[4].expand(&m).unwrap();
        match &c.args[0] {
            Arg::Option { values, .. } => assert_eq!(values[0].text(), "127.0.0.1:8080"),
            Arg::Positional(_) => panic!(),
        }
    }

    #[test]
    fn missing() {
        assert!(matches!(
            parse_script(b"varnish v1 -vcl"),
            Err(VtcError::MissingValue { line: 1, .. })
        ));
        assert!(matches!(
            parse_script(b"\nserver"),
            Err(VtcError::MissingName { line: 2, .. })
        ));
    }
}
