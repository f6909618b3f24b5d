//! The cache "child" as the management side sees it (Varnish's
//! `mgt_child`): the `-a` sockets are bound once at start-up, and `start`
//! / `stop` on the admin CLI begin and end serving them. Varnish runs the
//! cache in a child process; Shellac runs it in-process, so "the child"
//! is the set of accept loops, and stopping it drops the cache contents
//! as a restarted varnishd child would.

use crate::cache_req_fsm::Ctx;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// Why the child could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("No VCL available")]
    NoVcl,
    #[error("No active VCL")]
    NoActive,
    #[error("Child in state running")]
    Running,
    #[error("cannot serve {addr}: {err}")]
    Listen {
        addr: SocketAddr,
        err: std::io::Error,
    },
}

/// One `-a` socket: its name (`a0`, or `name=` from the flag) and address.
pub struct Listen {
    pub name: String,
    pub addr: SocketAddr,
    socket: std::net::TcpListener,
}

/// The listeners and whether they are being served.
pub struct Child {
    ctx: Arc<Ctx>,
    listens: Vec<Listen>,
    accepting: Mutex<Vec<JoinHandle<()>>>,
}

/// Splits varnishd's `-a [name=]address[:port][,PROTO]` into name and
/// address; the name defaults to `a<index>`.
pub fn parse_listen(spec: &str, index: usize) -> (String, String) {
    let spec = spec.split(',').next().unwrap_or(spec);
    match spec.split_once('=') {
        Some((n, a)) if !n.is_empty() && !n.contains(':') => (n.to_string(), a.to_string()),
        _ => (format!("a{index}"), spec.to_string()),
    }
}

/// Binds every `-a` spec (before anything is served, so a bad address
/// fails start-up). An address without a host (`:6081`) binds every
/// interface, as varnishd does.
pub fn bind(specs: &[String]) -> std::io::Result<Vec<Listen>> {
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let (name, addr) = parse_listen(spec, i);
        let addr = if addr.starts_with(':') {
            format!("0.0.0.0{addr}")
        } else if !addr.contains(':') {
            format!("{addr}:80")
        } else {
            addr
        };
        let socket = std::net::TcpListener::bind(addr.as_str())?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        out.push(Listen { name, addr, socket });
    }
    Ok(out)
}

impl Child {
    /// A stopped child over bound listeners.
    pub fn new(ctx: Arc<Ctx>, listens: Vec<Listen>) -> Child {
        Child {
            ctx,
            listens,
            accepting: Mutex::new(Vec::new()),
        }
    }

    /// The shared context.
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// The bound listeners.
    pub fn listens(&self) -> &[Listen] {
        &self.listens
    }

    /// Whether the listeners are being served.
    pub fn running(&self) -> bool {
        self.accepting
            .lock()
            .map(|g| !g.is_empty())
            .unwrap_or(false)
    }

    /// Starts serving every listener (needs an active VCL). Must be called
    /// inside the tokio runtime.
    pub fn start(&self) -> Result<(), StartError> {
        let mut g = self.accepting.lock().unwrap_or_else(|p| p.into_inner());
        if !g.is_empty() {
            return Err(StartError::Running);
        }
        if !self.ctx.vcls.has_programs() {
            return Err(StartError::NoVcl);
        }
        if !self.ctx.has_active_vcl() {
            return Err(StartError::NoActive);
        }
        let mut tasks = Vec::new();
        for l in &self.listens {
            let socket = l
                .socket
                .try_clone()
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|err| StartError::Listen { addr: l.addr, err })?;
            tasks.push(tokio::spawn(crate::cache_http1::serve(
                self.ctx.clone(),
                socket,
                l.name.clone(),
            )));
        }
        *g = tasks;
        crate::vsc::child_started();
        Ok(())
    }

    /// Stops serving and drops the cache contents.
    pub fn stop(&self) {
        let mut g = self.accepting.lock().unwrap_or_else(|p| p.into_inner());
        for t in g.drain(..) {
            t.abort();
        }
        for t in self.ctx.tenants.all() {
            t.cache.clear();
        }
    }
}
