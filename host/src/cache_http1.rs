//! The HTTP/1 listeners (Varnish's acceptor): bind every `-a` address and
//! hand each accepted connection to its own session task
//! ([`crate::cache_http1_fsm::session`]).

use crate::cache_req_fsm::Ctx;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Binds every `-a` address (before anything is served, so a bad address
/// fails start-up) and returns the listeners with their local addresses.
pub async fn bind(addrs: &[String]) -> std::io::Result<Vec<(TcpListener, SocketAddr)>> {
    let mut out = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a.as_str()).await?;
        let local = l.local_addr()?;
        out.push((l, local));
    }
    Ok(out)
}

/// Serves connections from `listener` forever.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, name: String) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning on the error.
                tracing::warn!("accept: {e}");
                crate::vsc::sess_fail(&e);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        // The session has its own XID, as in Varnish: the first request
        // on a connection is the session's XID + 1.
        let sess = crate::cache_session::Sess::new(&ctx, &stream, peer, local, &name);
        tokio::spawn(crate::cache_http1_fsm::session(ctx.clone(), stream, sess));
    }
}
