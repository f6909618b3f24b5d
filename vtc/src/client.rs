//! `client cN …`: a scripted HTTP client, one thread per client.
//!
//! The connect address defaults to `${v1_sock}` and is expanded when the
//! client starts (so it sees the varnish instance's port). Without
//! `-keepalive` every repeat opens a new connection; with it, one
//! connection carries all repeats.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::ctx::{Abort, Ctx, R};
use crate::http::{parse, Session, Stream};
use crate::server::resolve;
use crate::token::Token;

/// A declared client.
#[derive(Debug)]
pub struct Client {
    name: String,
    connect: String,
    spec: Option<Token>,
    repeat: u32,
    keepalive: bool,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    /// A new client connecting to `${v1_sock}`.
    pub fn new(name: &str) -> Client {
        Client {
            name: name.to_string(),
            connect: "${v1_sock}".to_string(),
            spec: None,
            repeat: 1,
            keepalive: false,
            thread: None,
        }
    }

    /// The client's name (`c1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the client thread.
    pub fn wait(&mut self, ctx: &Ctx) {
        if let Some(h) = self.thread.take() {
            ctx.log.log(2, &self.name, "Waiting for client");
            if h.join().is_err() {
                ctx.fatal(&self.name, "client thread panicked");
            }
        }
    }

    fn start(&mut self, ctx: &Arc<Ctx>) -> R<()> {
        let Some(spec) = self.spec.clone() else {
            return Err(ctx.fatal(&self.name, "Client has no spec"));
        };
        let cmds = parse(ctx, &self.name, &spec.bytes, spec.line)?;
        ctx.log.log(2, &self.name, "Starting client");
        let (ctx2, name, connect) = (ctx.clone(), self.name.clone(), self.connect.clone());
        let (repeat, keepalive) = (self.repeat, self.keepalive);
        let h = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _ = run(&ctx2, &name, &connect, &cmds, repeat, keepalive);
            })
            .map_err(|e| ctx.fatal(&self.name, format!("cannot start thread: {e}")))?;
        self.thread = Some(h);
        Ok(())
    }

    /// Runs the arguments of one `client` command, left to right.
    pub fn command(&mut self, ctx: &Arc<Ctx>, args: &[Token]) -> R<()> {
        let mut i = 0;
        while i < args.len() {
            if ctx.stopped() {
                return Err(Abort);
            }
            let a = &args[i];
            let me = self.name.clone();
            let val = || -> R<String> {
                args.get(i + 1)
                    .map(|t| t.text().into_owned())
                    .ok_or_else(|| ctx.fatal(&me, format!("Missing argument to {}", a.text())))
            };
            if a.is("-wait") {
                self.wait(ctx);
                i += 1;
                continue;
            }
            if self.thread.is_some() {
                self.wait(ctx);
            }
            match a.text().as_ref() {
                "-connect" => {
                    self.connect = val()?;
                    i += 1;
                }
                "-repeat" => {
                    self.repeat = crate::expect::strtoul(&val()?) as u32;
                    i += 1;
                }
                "-rcvbuf" => i += 1,
                "-keepalive" => self.keepalive = true,
                "-proxy1" | "-proxy2" => {
                    return Err(ctx.skip(
                        &self.name,
                        "PROXY protocol clients are not supported; skipping test",
                    ));
                }
                "-start" => self.start(ctx)?,
                "-run" => {
                    self.start(ctx)?;
                    self.wait(ctx);
                }
                s if s.starts_with('-') => {
                    return Err(ctx.fatal(&self.name, format!("Unknown client argument: {s}")));
                }
                _ => self.spec = Some(a.clone()),
            }
            i += 1;
        }
        Ok(())
    }
}

fn connect(ctx: &Ctx, name: &str, addr: &str) -> R<Stream> {
    if addr.starts_with('/') {
        return match UnixStream::connect(addr) {
            Ok(s) => {
                ctx.log.log(3, name, &format!("connected fd to {addr}"));
                Ok(Stream::Unix(s))
            }
            Err(e) => Err(ctx.fatal(name, format!("Failed to open {addr}: {e}"))),
        };
    }
    let sa = resolve(addr).map_err(|e| ctx.fatal(name, format!("Failed to open {addr}: {e}")))?;
    match TcpStream::connect_timeout(&sa, Duration::from_secs(10)) {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            ctx.log.log(3, name, &format!("connected fd to {addr}"));
            Ok(Stream::Tcp(s))
        }
        Err(e) => Err(ctx.fatal(name, format!("Failed to open {addr}: {e}"))),
    }
}

fn run(
    ctx: &Ctx,
    name: &str,
    connect_to: &str,
    cmds: &[crate::token::Command],
    repeat: u32,
    keepalive: bool,
) -> R<()> {
    let addr = ctx.expand(name, connect_to, 0)?;
    ctx.log.log(
        2,
        name,
        &format!(
            "Started on {addr} ({repeat} iterations{})",
            if keepalive { " using keepalive" } else { "" }
        ),
    );
    let mut conn: Option<Stream> = None;
    for _ in 0..repeat {
        let s = match conn.take() {
            Some(s) => s,
            None => connect(ctx, name, &addr)?,
        };
        let mut sess = Session::new(ctx, name, s, None, None);
        sess.process(cmds)?;
        conn = sess.into_stream();
        if !keepalive {
            ctx.log.log(3, name, "closing fd");
            conn = None;
        }
    }
    ctx.log.log(2, name, "Ending");
    Ok(())
}
