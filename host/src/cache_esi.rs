//! ESI delivery (Varnish's `cache_esi_deliver`): an object fetched with
//! `beresp.do_esi` carries the parsed instructions of its body
//! ([`EsiData`], made by `cache_esi_parse` while it was fetched); its
//! delivery sends the verbatim pieces and runs a sub-request (`vcl_recv`
//! … `vcl_deliver`, `req.esi_level` + 1) for every include, inlining the
//! fragment's body, down to `max_esi_depth`.
//!
//! gzip is spliced, not recomputed: an ESI object stored gzipped keeps
//! its verbatim pieces as standalone deflate data, so a gzip client gets
//! them as they are, framed by one gzip header and trailer whose CRC is
//! combined from the pieces'. Fragments join that stream as their stored
//! deflate data (what Shellac gzipped itself), as stored blocks (plain
//! fragments), or inflated and stored (gzip made by a backend). A client
//! that does not take gzip gets every piece inflated on its own.

use crate::cache_esi_parse::Include;
use crate::cache_gzip::{Crc, Gunzipper};
use crate::cache_obj::{hdr_set, hdr_unset, Object, Progress};
use crate::cache_req_fsm::ReplyBody;
use bytes::Bytes;
use std::sync::Arc;

/// One instruction of a parsed ESI body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EsiOp {
    /// The next `len` stored bytes are delivered. In a gzipped body they
    /// are deflate data standing for `plain` (length and CRC).
    Verbatim {
        len: u64,
        plain: Crc,
    },
    /// The next bytes are left out.
    Skip(u64),
    Include(Include),
}

/// The ESI instructions of a body (Varnish's OA_ESIDATA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsiData {
    /// The body is stored gzipped (`esi_gzip`).
    pub gzip: bool,
    pub ops: Vec<EsiOp>,
}

/// What delivering one ESI object needs: the object, and the request it
/// is delivered for (includes start from that request as it arrived).
pub struct EsiJob {
    pub ctx: Arc<crate::cache_req_fsm::Ctx>,
    pub obj: Arc<Object>,
    /// The request as received (Varnish's `http0`).
    pub req0: crate::vrt_ctx::ReqMsg,
    pub client: std::net::IpAddr,
    pub server: std::net::IpAddr,
    pub level: u32,
    /// The client gets gzip (at the top level; includes follow the page).
    pub gzip_out: bool,
    /// The top request and its time (`req_top.*` in includes).
    pub top: Arc<crate::vrt_ctx::ReqTop>,
    /// The client request's `ReqStart` text, which includes log too.
    pub req_start: Option<Arc<str>>,
    /// The ports of `client.ip` and `server.ip`.
    pub ports: [u16; 2],
    /// The log of the request delivering the page: each include is its
    /// child (`Begin req PARENT esi`, `Link req CHILD esi`).
    pub parent: Arc<crate::vsl::Follow>,
}

/// Where assembled bytes go; an error closes the client's connection.
pub type Sink = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Why assembling stopped.
#[derive(Debug)]
enum Stop {
    /// The client went away.
    Gone,
    /// An include failed without `onerror="continue"` under
    /// `feature=+esi_include_onerror`.
    Abort,
}

/// The output of one page, plain or gzip (with the CRC and length of
/// everything sent so far).
struct Out<'a> {
    sink: &'a Sink,
    gz: Option<Crc>,
    /// Bytes sent so far (an include's `ReqAcct` counts its own).
    sent: u64,
}

impl Out<'_> {
    async fn send(&mut self, b: Bytes) -> Result<(), Stop> {
        if b.is_empty() {
            return Ok(());
        }
        self.sent += b.len() as u64;
        self.sink.send(Ok(b)).await.map_err(|_| Stop::Gone)
    }

    /// Uncompressed content; in a gzip page wrapped in stored blocks.
    async fn plain(&mut self, b: Bytes) -> Result<(), Stop> {
        match self.gz.as_mut() {
            None => self.send(b).await,
            Some(crc) => {
                if b.is_empty() {
                    return Ok(());
                }
                crc.update(&b);
                let mut blocks = Vec::new();
                crate::cache_gzip::stored_blocks(&b, &mut blocks);
                for p in blocks {
                    self.send(p).await?;
                }
                Ok(())
            }
        }
    }
}

/// Reads an object's body by byte counts, across its chunks.
struct Cursor<'a> {
    obj: &'a Object,
    idx: usize,
    off: usize,
}

impl Cursor<'_> {
    /// The next `n` bytes as slices of the stored chunks (`None` if the
    /// body ended or failed first).
    async fn take(&mut self, mut n: u64) -> Option<Vec<Bytes>> {
        let mut out = Vec::new();
        while n > 0 {
            let c = self.obj.body.chunk(self.idx).await.ok()??;
            let avail = (c.len() - self.off) as u64;
            let k = avail.min(n) as usize;
            out.push(c.slice(self.off..self.off + k));
            self.off += k;
            n -= k as u64;
            if self.off == c.len() {
                self.idx += 1;
                self.off = 0;
            }
        }
        Some(out)
    }
}

/// Delivers a top-level ESI page into `sink`: the gzip header and
/// trailer around it when the client gets gzip; an error into the sink
/// closes the connection when it was cut short.
pub async fn deliver_top(job: EsiJob, sink: &Sink) {
    let mut out = Out {
        sink,
        gz: job.gzip_out.then(Crc::default),
        sent: 0,
    };
    if job.gzip_out
        && out
            .send(Bytes::from_static(&crate::cache_gzip::GZIP_HEADER))
            .await
            .is_err()
    {
        return;
    }
    match Box::pin(deliver(&job, &mut out)).await {
        Ok(()) => {
            if let Some(crc) = out.gz {
                let mut tail = crate::cache_gzip::FINAL_STORED_BLOCK.to_vec();
                tail.extend_from_slice(&crc.trailer());
                let _ = out.send(Bytes::from(tail)).await;
            }
        }
        Err(Stop::Gone) => {}
        Err(Stop::Abort) => {
            let _ = sink
                .send(Err(std::io::Error::other("ESI include failed")))
                .await;
        }
    }
}

/// Delivers one ESI object into `out`.
async fn deliver(job: &EsiJob, out: &mut Out<'_>) -> Result<(), Stop> {
    let Some(esi) = job.obj.body.esi().cloned() else {
        // Not ESI after all: the body as it is.
        return object_body(&job.obj, job.obj.gzipped, out)
            .await
            .map(|_| ());
    };
    let max_depth = job.ctx.params().num("max_esi_depth") as u32;
    let onerror = job.ctx.params().feature("esi_include_onerror");
    let mut cur = Cursor {
        obj: &job.obj,
        idx: 0,
        off: 0,
    };
    let mut z = flate2::Decompress::new(false);
    for op in &esi.ops {
        match op {
            EsiOp::Skip(n) => {
                if cur.take(*n).await.is_none() {
                    return Ok(());
                }
            }
            EsiOp::Verbatim { len, plain } => {
                let Some(pieces) = cur.take(*len).await else {
                    return Ok(());
                };
                match (esi.gzip, out.gz.as_mut()) {
                    (true, Some(crc)) => {
                        crc.combine(plain.crc, plain.len);
                        for p in pieces {
                            out.send(p).await?;
                        }
                    }
                    (true, None) => {
                        let mut text = Vec::new();
                        if let Err(e) =
                            crate::cache_gzip::inflate_segment(&mut z, &pieces, &mut text)
                        {
                            tracing::warn!("ESI: stored gzip piece broken: {e}");
                            return Err(Stop::Abort);
                        }
                        for t in text {
                            out.send(t).await?;
                        }
                    }
                    (false, _) => {
                        for p in pieces {
                            out.plain(p).await?;
                        }
                    }
                }
            }
            EsiOp::Include(inc) => {
                if job.level >= max_depth {
                    tracing::warn!(
                        "ESI depth limit reach (param max_esi_depth = {max_depth}): {}",
                        inc.url
                    );
                    continue;
                }
                let ok = include(job, inc, esi.gzip, out).await?;
                if !ok && inc.abort && onerror {
                    return Err(Stop::Abort);
                }
            }
        }
    }
    Ok(())
}

/// Runs the sub-request of an include and delivers its body into `out`;
/// `Ok(false)` when the fragment failed (its fetch broke off).
async fn include(
    job: &EsiJob,
    inc: &Include,
    page_gzip: bool,
    out: &mut Out<'_>,
) -> Result<bool, Stop> {
    let mut req = job.req0.clone();
    req.method = "GET".into();
    req.proto = "HTTP/1.1".into();
    req.url = inc.url.clone();
    if let Some(h) = inc.host.as_deref().filter(|h| !h.is_empty()) {
        hdr_set(&mut req.headers, "Host", h);
    }
    // A fragment is fetched whole, never conditionally, and in the
    // encoding of the page.
    for h in [
        "if-modified-since",
        "if-none-match",
        "range",
        "content-length",
    ] {
        hdr_unset(&mut req.headers, h);
    }
    // `http_ForceHeader`: a change only when it was not `gzip` already
    // (then logged, see `req_begin`).
    let ae_forced =
        page_gzip && crate::cache_obj::hdr_get(&req.headers, "accept-encoding") != Some("gzip");
    if page_gzip {
        hdr_set(&mut req.headers, "Accept-Encoding", "gzip");
    } else {
        hdr_unset(&mut req.headers, "accept-encoding");
    }
    // The include's transaction lasts until its fragment is delivered
    // (its own includes link from it meanwhile).
    let mut vsl = crate::vsl::req_begin(
        &job.ctx,
        &req,
        job.level + 1,
        job.parent.vxid(),
        job.req_start.as_deref(),
        ae_forced,
    )
    .detach();
    let child = vsl.follow();
    let t_start = vsl.t_start;
    let cx = vsl.vxid();
    job.parent
        .append(|p| p.link(vapi::Tag::Link, "req", cx, "esi"));
    let reply = Box::pin(crate::cache_req_fsm::handle_include(
        job.ctx.clone(),
        req,
        (job.client, job.server),
        job.level + 1,
        job.top.clone(),
        (job.req_start.clone(), job.ports),
        vsl,
    ))
    .await;
    let sent0 = out.sent;
    let r = if reply.status < 200 || reply.status == 204 || reply.status == 304 {
        Ok(true)
    } else {
        let ce_gzip = crate::cache_gzip::is_gzip(&reply.headers);
        fragment(reply.body, ce_gzip, out).await
    };
    let mut b = child.resume(t_start);
    b.ts("Resp", crate::vrt_ctx::now());
    let n = out.sent - sent0;
    b.numbers(vapi::Tag::ReqAcct, &[0, 0, 0, 0, n, n]);
    b.end();
    r
}

fn fragment<'a>(
    body: ReplyBody,
    ce_gzip: bool,
    out: &'a mut Out<'_>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, Stop>> + Send + 'a>> {
    Box::pin(async move {
        match body {
            ReplyBody::Bytes(b) => out.plain(b).await.map(|_| true),
            ReplyBody::Object(o) => object_body(&o, o.gzipped && ce_gzip, out).await,
            ReplyBody::Esi(job) => deliver(&job, out).await.map(|_| true),
            // The fragment's own gunzip (its request had no gzip) would
            // have removed the Content-Encoding: the body is gzip.
            ReplyBody::Filtered(inner, vdp) => fragment(*inner, ce_gzip || vdp.gunzip, out).await,
            // A pipe inside an include has nothing to include.
            ReplyBody::Pipe(_) => Ok(true),
        }
    })
}

/// A fragment that is an object's body (`gzip`: stored gzipped).
async fn object_body(obj: &Object, gzip: bool, out: &mut Out<'_>) -> Result<bool, Stop> {
    if gzip && out.gz.is_some() {
        // Splicing needs the stored layout, known once the body is in.
        let Some(whole) = obj.body.collect().await else {
            // A failed fragment is left out.
            return Ok(false);
        };
        if let Some(info) = obj.body.attrs().and_then(|a| a.gzip) {
            let end = (info.body_end as usize).min(whole.len());
            let start = crate::cache_gzip::GZIP_HEADER.len().min(end);
            if let Some(crc) = out.gz.as_mut() {
                crc.combine(info.crc, info.plain_len);
            }
            out.send(whole.slice(start..end)).await?;
            return Ok(true);
        }
        // gzip made elsewhere: inflated, then stored.
        return match crate::cache_gzip::gunzip(&whole) {
            Ok(b) => out.plain(b).await.map(|_| true),
            Err(e) => {
                tracing::warn!("ESI: fragment's gzip is broken: {e}");
                Ok(false)
            }
        };
    }
    let mut g = gzip.then(|| {
        crate::vsc::MAIN.n_gunzip.inc();
        Gunzipper::new()
    });
    let mut i = 0;
    loop {
        let c = match obj.body.chunk(i).await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(()) => return Ok(false),
        };
        i += 1;
        match g.as_mut() {
            None => out.plain(c).await?,
            Some(g) => {
                let mut text = Vec::new();
                if g.write(&c, &mut text).is_err() {
                    return Ok(false);
                }
                for t in text {
                    out.plain(t).await?;
                }
            }
        }
    }
    if g.as_ref().is_some_and(|g| g.finish().is_err()) {
        return Ok(false);
    }
    Ok(matches!(obj.body.progress(), Progress::Done(_)))
}
