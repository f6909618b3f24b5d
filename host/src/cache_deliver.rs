//! Delivery of a response body to the client (Varnish's
//! `cache_deliver_proc`): a body made here, or an object's body followed
//! chunk by chunk while its fetch may still be running.

use crate::cache_obj::Object;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

type ChunkFuture = Pin<Box<dyn Future<Output = Result<Option<Bytes>, ()>> + Send>>;

/// The body written to the client.
pub enum RespBody {
    /// Whole, made here; `None` once sent.
    Full(Option<Bytes>),
    /// Assembled elsewhere (ESI) and handed over through a channel.
    Channel(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>),
    /// An object's body from chunk `next` on.
    Object {
        obj: Arc<Object>,
        next: usize,
        wait: Option<ChunkFuture>,
    },
}

impl RespBody {
    /// A body of these bytes.
    pub fn full(b: Bytes) -> RespBody {
        RespBody::Full((!b.is_empty()).then_some(b))
    }

    /// The body of `obj`.
    pub fn object(obj: Arc<Object>) -> RespBody {
        RespBody::Object {
            obj,
            next: 0,
            wait: None,
        }
    }

    /// The body of a reply. ESI and gunzip output are made by a task of
    /// their own, so includes run and inflation happens as the client
    /// reads; a full channel holds that task back. A pipe has no body.
    pub fn from_reply(body: crate::cache_req_fsm::ReplyBody) -> RespBody {
        use crate::cache_req_fsm::ReplyBody;
        match body {
            ReplyBody::Bytes(b) => RespBody::full(b),
            ReplyBody::Object(o) => RespBody::object(o),
            b @ ReplyBody::Gunzip(_) => {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tokio::spawn(async move {
                    crate::cache_esi::send_body(b, &tx).await;
                });
                RespBody::Channel(rx)
            }
            ReplyBody::Esi(job) => {
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                tokio::spawn(async move {
                    crate::cache_esi::deliver(*job, &tx).await;
                });
                RespBody::Channel(rx)
            }
            ReplyBody::Pipe(_) => RespBody::Full(None),
        }
    }
}

/// The fetch behind a streamed body failed: the connection is then
/// closed without finishing the body, as Varnish does.
fn fetch_failed() -> std::io::Error {
    std::io::Error::other("backend fetch failed while streaming")
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
            RespBody::Object { obj, next, wait } => {
                let r = match wait {
                    None => match obj.body.try_chunk(*next) {
                        Some(r) => r,
                        None => {
                            let (o, i) = (obj.clone(), *next);
                            let mut f: ChunkFuture = Box::pin(async move { o.body.chunk(i).await });
                            match f.as_mut().poll(cx) {
                                Poll::Ready(r) => r,
                                Poll::Pending => {
                                    *wait = Some(f);
                                    return Poll::Pending;
                                }
                            }
                        }
                    },
                    Some(f) => match f.as_mut().poll(cx) {
                        Poll::Ready(r) => {
                            *wait = None;
                            r
                        }
                        Poll::Pending => return Poll::Pending,
                    },
                };
                match r {
                    Ok(Some(b)) => {
                        *next += 1;
                        Poll::Ready(Some(Ok(Frame::data(b))))
                    }
                    Ok(None) => Poll::Ready(None),
                    Err(()) => Poll::Ready(Some(Err(fetch_failed()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Channel(_) => false,
            RespBody::Object { obj, next, .. } => {
                matches!(obj.body.try_chunk(*next), Some(Ok(None)))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespBody::Object { obj, next: 0, .. } => match obj.body.progress() {
                crate::cache_obj::Progress::Done(_) => SizeHint::with_exact(obj.body.len()),
                _ => SizeHint::default(),
            },
            RespBody::Object { .. } | RespBody::Channel(_) => SizeHint::default(),
        }
    }
}
