//! `server sN …`: a scripted origin server, one thread per server (plus one
//! per connection with `-dispatch`), like varnishtest.
//!
//! The listening socket is bound by `-start` and kept until the test ends;
//! a later `-start` re-binds the same address and port, so backends in
//! already loaded VCLs stay valid. The `sN_addr`, `sN_port` and `sN_sock`
//! macros are defined when it binds. A running server that is touched by
//! any option other than `-wait`/`-break` is waited for first.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::ctx::{Abort, Ctx, R};
use crate::http::{accept, parse, Listener, Session, Stream};
use crate::token::Token;

/// A declared server.
#[derive(Debug)]
pub struct Server {
    /// `s1`.
    pub name: String,
    listen: String,
    listener: Option<Arc<Listener>>,
    /// Bound address (empty until the first `-start`).
    pub addr: String,
    /// Bound port (empty until the first `-start`).
    pub port: String,
    spec: Option<Token>,
    repeat: u32,
    keepalive: bool,
    dispatch: bool,
    thread: Option<JoinHandle<()>>,
    cancel: Arc<AtomicBool>,
}

/// Resolves `host:port`, `[v6]:port` or `host port`.
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let a = addr.trim();
    let candidate = match a.split_once(' ') {
        Some((h, p)) => format!("{}:{}", h.trim(), p.trim()),
        None => {
            // A bare address takes port 0 (any), as varnishtest's default.
            let bare = a.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:0"),
                Ok(v4) => format!("{v4}:0"),
                Err(_) if !a.contains(':') => format!("{a}:0"),
                Err(_) => a.to_string(),
            }
        }
    };
    candidate
        .to_socket_addrs()
        .map_err(|e| format!("{a}: {e}"))?
        .next()
        .ok_or_else(|| format!("{a}: no address"))
}

impl Server {
    /// A new, unbound server.
    pub fn new(ctx: &Ctx, name: &str) -> Server {
        let listen = crate::ctx::lock(&ctx.macros)
            .get("listen_addr")
            .unwrap_or("127.0.0.1:0")
            .to_string();
        Server {
            name: name.to_string(),
            listen,
            listener: None,
            addr: String::new(),
            port: String::new(),
            spec: None,
            repeat: 1,
            keepalive: false,
            dispatch: false,
            thread: None,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// This server's line in a `-vcl+backend` VCL: host and port as bound
    /// (empty strings before the first `-start`), or the socket path.
    pub fn backend_decl(&self) -> String {
        if self.listen.starts_with('/') {
            format!("backend {} {{ .path = \"{}\"; }}\n", self.name, self.listen)
        } else {
            format!(
                "backend {} {{ .host = \"{}\"; .port = \"{}\"; }}\n",
                self.name, self.addr, self.port
            )
        }
    }

    /// Whether the server's thread is running.
    pub fn running(&self) -> bool {
        self.thread.is_some()
    }

    fn listen(&mut self, ctx: &Ctx) -> R<()> {
        self.listener = None;
        if self.listen.starts_with('/') {
            let path = self.listen.clone();
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(ctx.fatal(
                        &self.name,
                        format!("Could not unlink {path} before bind: {e}"),
                    ));
                }
            }
            let l = UnixListener::bind(&path).map_err(|e| {
                ctx.fatal(
                    &self.name,
                    format!("Server listen address ({path}) cannot be resolved: {e}"),
                )
            })?;
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777));
            }
            self.addr = "0.0.0.0".into();
            self.port = "0".into();
            ctx.define(&self.name, "addr", "0.0.0.0");
            ctx.define(&self.name, "port", "0");
            ctx.define(&self.name, "sock", path.clone());
            ctx.log.log(1, &self.name, &format!("Listen on {path}"));
            self.listener = Some(Arc::new(Listener::Unix(l)));
            return Ok(());
        }
        let sa = resolve(&self.listen).map_err(|e| {
            ctx.fatal(
                &self.name,
                format!(
                    "Server listen address ({}) cannot be resolved: {e}",
                    self.listen
                ),
            )
        })?;
        let l = TcpListener::bind(sa).map_err(|e| {
            ctx.fatal(
                &self.name,
                format!("Server listen ({}) failed: {e}", self.listen),
            )
        })?;
        let local = l
            .local_addr()
            .map_err(|e| ctx.fatal(&self.name, format!("getsockname: {e}")))?;
        self.addr = local.ip().to_string();
        self.port = local.port().to_string();
        self.listen = match local {
            SocketAddr::V4(_) => format!("{}:{}", self.addr, self.port),
            SocketAddr::V6(_) => format!("[{}]:{}", self.addr, self.port),
        };
        ctx.define(&self.name, "addr", self.addr.clone());
        ctx.define(&self.name, "port", self.port.clone());
        ctx.define(&self.name, "sock", self.listen.clone());
        ctx.log
            .log(1, &self.name, &format!("Listen on {}", self.listen));
        self.listener = Some(Arc::new(Listener::Tcp(l)));
        Ok(())
    }

    fn start(&mut self, ctx: &Arc<Ctx>) -> R<()> {
        ctx.log.log(2, &self.name, "Starting server");
        self.listen(ctx)?;
        // A server without a spec accepts and closes connections.
        let spec = self
            .spec
            .clone()
            .unwrap_or_else(|| Token::new(crate::token::TokenKind::Braced, 0, Vec::new()));
        let cmds = parse(ctx, &self.name, &spec.bytes, spec.line)?;
        let Some(l) = self.listener.clone() else {
            return Err(Abort);
        };
        self.cancel = Arc::new(AtomicBool::new(false));
        let cancel = self.cancel.clone();
        let ctx2 = ctx.clone();
        let name = self.name.clone();
        let (repeat, keepalive, dispatch) = (self.repeat, self.keepalive, self.dispatch);
        let h = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                crate::ctx::set_thread_cancel(Some(cancel.clone()));
                if dispatch {
                    let _ = dispatch_loop(&ctx2, &name, &l, &cmds, &cancel);
                } else {
                    let _ = serve(&ctx2, &name, &l, &cmds, &cancel, repeat, keepalive);
                }
            })
            .map_err(|e| ctx.fatal(&self.name, format!("cannot start thread: {e}")))?;
        self.thread = Some(h);
        Ok(())
    }

    /// Waits for the server thread to finish.
    pub fn wait(&mut self, ctx: &Ctx) {
        if let Some(h) = self.thread.take() {
            ctx.log.log(2, &self.name, "Waiting for server");
            if h.join().is_err() {
                ctx.fatal(&self.name, "server thread panicked");
            }
        }
    }

    /// Stops the server thread without failing (`-break`, end of test).
    pub fn stop(&mut self, ctx: &Ctx) {
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(h) = self.thread.take() {
            ctx.log.log(2, &self.name, "Breaking for server");
            let _ = h.join();
        }
    }

    /// Runs the arguments of one `server` command, left to right.
    pub fn command(&mut self, ctx: &Arc<Ctx>, args: &[Token]) -> R<()> {
        let mut i = 0;
        while i < args.len() {
            if ctx.stopped() {
                return Err(Abort);
            }
            let a = &args[i];
            let me = self.name.clone();
            let val = |k: usize| -> R<String> {
                args.get(i + k)
                    .map(|t| t.text().into_owned())
                    .ok_or_else(|| ctx.fatal(&me, format!("Missing argument to {}", a.text())))
            };
            if a.is("-wait") {
                if !self.running() {
                    return Err(ctx.fatal(&self.name, "Server not -started"));
                }
                self.wait(ctx);
                i += 1;
                continue;
            }
            if a.is("-break") {
                self.stop(ctx);
                i += 1;
                continue;
            }
            if self.running() {
                self.wait(ctx);
            }
            match a.text().as_ref() {
                "-repeat" => {
                    self.repeat = crate::expect::strtoul(&val(1)?) as u32;
                    i += 1;
                }
                "-rcvbuf" => i += 1,
                "-keepalive" => self.keepalive = true,
                "-listen" => {
                    self.listener = None;
                    self.listen = val(1)?;
                    i += 1;
                }
                "-start" => self.start(ctx)?,
                "-dispatch" => {
                    if self.name != "s0" {
                        return Err(ctx.fatal(&self.name, "server -dispatch only works on s0"));
                    }
                    self.dispatch = true;
                    self.start(ctx)?;
                }
                s if s.starts_with('-') => {
                    return Err(ctx.fatal(&self.name, format!("Unknown server argument: {s}")));
                }
                _ => self.spec = Some(a.clone()),
            }
            i += 1;
        }
        Ok(())
    }
}

/// Ends a connection like varnishtest: shut down the sending side, then
/// close. A connection the spec already closed is an error there
/// ("Shutdown failed"), and so it is here.
fn disc(ctx: &Ctx, name: &str, s: Option<Stream>) -> R<()> {
    match s {
        Some(s) => {
            ctx.log.log(3, name, "shutting fd");
            let _ = s.shutdown_write();
            Ok(())
        }
        None => Err(ctx.fatal(name, "Shutdown failed: Bad file descriptor")),
    }
}

fn serve(
    ctx: &Ctx,
    name: &str,
    l: &Listener,
    cmds: &[crate::token::Command],
    cancel: &AtomicBool,
    repeat: u32,
    keepalive: bool,
) -> R<()> {
    ctx.log.log(
        2,
        name,
        &format!(
            "Started ({repeat} iterations{})",
            if keepalive { " using keepalive" } else { "" }
        ),
    );
    let mut conn: Option<Stream> = None;
    for _ in 0..repeat {
        let s = match conn.take() {
            Some(s) => s,
            None => match accept(ctx, l, Some(cancel))? {
                Ok(s) => {
                    ctx.log.log(3, name, &format!("accepted fd {}", s.peer().0));
                    s
                }
                Err(e) => return Err(ctx.fatal(name, format!("Accept failed: {e}"))),
            },
        };
        let mut sess = Session::new(ctx, name, s, Some(l), Some(cancel));
        sess.process(cmds)?;
        conn = sess.into_stream();
        if !keepalive {
            disc(ctx, name, conn.take())?;
        }
    }
    if keepalive {
        disc(ctx, name, conn.take())?;
    }
    ctx.log.log(2, name, "Ending");
    Ok(())
}

fn dispatch_loop(
    ctx: &Arc<Ctx>,
    name: &str,
    l: &Arc<Listener>,
    cmds: &[crate::token::Command],
    cancel: &Arc<AtomicBool>,
) -> R<()> {
    ctx.log.log(2, name, "Dispatch started");
    let mut n = 1;
    loop {
        let s = match accept(ctx, l, Some(cancel))? {
            Ok(s) => s,
            Err(e) => return Err(ctx.fatal(name, format!("Accepted failed: {e}"))),
        };
        let id = format!("s{n}");
        n += 1;
        let (ctx2, l2, cmds2, cancel2) = (ctx.clone(), l.clone(), cmds.to_vec(), cancel.clone());
        let spawned = std::thread::Builder::new().name(id.clone()).spawn(move || {
            crate::ctx::set_thread_cancel(Some(cancel2.clone()));
            let mut sess = Session::new(&ctx2, &id, s, Some(&l2), Some(&cancel2));
            if sess.process(&cmds2).is_ok() && disc(&ctx2, &id, sess.into_stream()).is_ok() {
                ctx2.log.log(2, &id, "Ending");
            }
        });
        if let Err(e) = spawned {
            return Err(ctx.fatal(name, format!("cannot start thread: {e}")));
        }
    }
}
