//! Reading the log of a running Shellac: its admin HTTP listener's
//! `/log` stream (see `shellac serve`), decoded into records.

use crate::record::{decode, Item};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What the stream had.
#[derive(Debug)]
pub enum Next {
    /// A record, or a count of records lost.
    Item(Item),
    /// Nothing within the read timeout.
    Idle,
    /// The stream ended.
    Eof,
}

/// A log stream.
pub struct Stream {
    r: BufReader<TcpStream>,
    buf: Vec<u8>,
    /// Items decoded and not handed out yet, last first.
    pending: Vec<Item>,
}

impl Stream {
    /// Connects to the admin HTTP listener at `addr` and asks for the
    /// log from the oldest record the ring holds (`head`) or from the
    /// next one written; with `follow` the stream goes on, else it ends
    /// at the newest record; `token` is the API's bearer token (with
    /// `-S`). Returns once the server placed the reader:
    /// everything logged from then on will come.
    pub fn connect(
        addr: &str,
        token: Option<&str>,
        head: bool,
        follow: bool,
    ) -> io::Result<Stream> {
        let mut s = TcpStream::connect(addr)?;
        let _ = s.set_nodelay(true);
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "GET /log?from={}&follow={} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n",
            if head { "head" } else { "tail" },
            if follow { 1 } else { 0 }
        )?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status)?;
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(io::Error::other(format!("{addr}/log: {}", status.trim())));
        }
        loop {
            let mut l = String::new();
            if r.read_line(&mut l)? == 0 || l == "\r\n" || l == "\n" {
                break;
            }
        }
        Ok(Stream {
            r,
            buf: Vec::new(),
            pending: Vec::new(),
        })
    }

    /// Waits at most `t` for data in [`Stream::read`] (`None`: forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.r.get_ref().set_read_timeout(t)
    }

    /// The next item.
    pub fn read(&mut self) -> io::Result<Next> {
        loop {
            if let Some(item) = self.pending.pop() {
                return Ok(Next::Item(item));
            }
            match decode(&self.buf, &mut self.pending) {
                Ok(Some(n)) => {
                    self.buf.drain(..n);
                    self.pending.reverse();
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = [0u8; 16384];
            match self.r.read(&mut chunk) {
                Ok(0) => return Ok(Next::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Ok(Next::Idle)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// How much of the shared log one read copies out: enough that a busy
/// server's few milliseconds of records come in a few reads, and their
/// output in as few writes (a system call each); small enough to stay
/// in the CPU's cache.
const CHUNK: usize = 64 << 10;

/// The log of a running Shellac, read from its shared-memory file
/// (`DIR/_.vsl`) when there is one, else from its admin HTTP listener.
pub enum Source {
    /// The shared mapping: polled, costs the server nothing.
    Shm {
        /// The mapping.
        reader: crate::shm::Reader,
        /// Records copied out, not decoded yet.
        buf: Vec<u8>,
        /// Decoded up to here.
        pos: usize,
        /// Items decoded and not handed out yet, last first.
        pending: Vec<Item>,
        /// Stop at the end (`-d`) instead of waiting for more.
        dump: bool,
        /// How long [`Source::read`] waits before saying [`Next::Idle`].
        timeout: Duration,
        /// The last read found less than half a chunk: caught up.
        caught_up: bool,
        /// Set by [`Source::pace`].
        pause: Option<Duration>,
    },
    /// The `/log` stream.
    Http(Stream),
}

impl Source {
    /// Opens the log of an instance: its shared memory at `shm` when
    /// given and readable, else its admin HTTP listener `http` (with the
    /// bearer `token` when the instance has `-S`); from the
    /// oldest record kept (`head`) or the next written; `follow` goes on
    /// after the newest.
    pub fn open(
        shm: Option<&std::path::Path>,
        http: Option<&str>,
        token: Option<&str>,
        head: bool,
        follow: bool,
    ) -> io::Result<Source> {
        let mapped = match shm {
            Some(p) => crate::shm::Reader::open(p, head),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no shared log")),
        };
        match mapped {
            Ok(reader) => Ok(Source::Shm {
                reader,
                buf: Vec::new(),
                pos: 0,
                pending: Vec::new(),
                dump: !follow,
                timeout: Duration::from_millis(500),
                caught_up: false,
                pause: None,
            }),
            Err(shm_err) => match http {
                Some(a) => Stream::connect(a, token, head, follow).map(Source::Http),
                None => Err(shm_err),
            },
        }
    }

    /// Waits at most `t` for data in [`Source::read`].
    pub fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
        match self {
            Source::Shm { timeout, .. } => {
                *timeout = t;
                Ok(())
            }
            Source::Http(s) => s.set_timeout(Some(t)),
        }
    }

    /// The next item.
    pub fn read(&mut self) -> io::Result<Next> {
        loop {
            let (buf, pos, pending) = match self {
                Source::Http(s) => return s.read(),
                Source::Shm {
                    buf, pos, pending, ..
                } => (buf, pos, pending),
            };
            if let Some(item) = pending.pop() {
                return Ok(Next::Item(item));
            }
            match decode(&buf[*pos..], pending) {
                Ok(Some(n)) => {
                    *pos += n;
                    pending.reverse();
                    continue;
                }
                // The ring holds whole batches of whole records: a
                // piece of one is garbage, dropped.
                Ok(None) => *pos = buf.len(),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if let Some(next) = self.fill()? {
                return Ok(next);
            }
        }
    }

    /// A live reader that has caught up waits `pause` before it reads
    /// again, so that it reads many transactions at a time rather than
    /// each as it comes: on a busy server that is a fraction of the
    /// wakeups, and of the CPU the reader takes from everything else
    /// (`shellac log` sets 5 ms; the records wait in the ring meanwhile).
    pub fn pace(&mut self, pause: Duration) {
        if let Source::Shm { pause: p, .. } = self {
            *p = Some(pause);
        }
    }

    /// Whole records read from the shared log and not decoded yet, for
    /// readers that print them in place ([`crate::fast`]); they say how
    /// many bytes they used with [`Source::consume`].
    pub fn raw(&self) -> Option<&[u8]> {
        match self {
            Source::Shm {
                buf, pos, pending, ..
            } if pending.is_empty() && *pos < buf.len() => Some(&buf[*pos..]),
            _ => None,
        }
    }

    /// Marks `n` bytes of [`Source::raw`] used.
    pub fn consume(&mut self, n: usize) {
        if let Source::Shm { buf, pos, .. } = self {
            *pos = (*pos + n).min(buf.len());
        }
    }

    /// Reads more of the shared log once what was read is used up:
    /// `None` when there is more to take (through [`Source::raw`] or
    /// [`Source::read`]), else what there is to say instead (records
    /// lost, nothing new for a while, the end of a dump). The HTTP
    /// stream has no raw form: its next item.
    pub fn fill(&mut self) -> io::Result<Option<Next>> {
        let (reader, buf, pos, pending, dump, timeout, caught_up, pause) = match self {
            Source::Http(s) => return s.read().map(Some),
            Source::Shm {
                reader,
                buf,
                pos,
                pending,
                dump,
                timeout,
                caught_up,
                pause,
            } => (
                reader, buf, pos, pending, *dump, *timeout, caught_up, *pause,
            ),
        };
        if let Some(item) = pending.pop() {
            return Ok(Some(Next::Item(item)));
        }
        if *pos < buf.len() {
            return Ok(None);
        }
        // The clock is read only once there is nothing to read: a reader
        // that keeps up handles millions of records a second.
        let mut deadline = None;
        if let (true, Some(p)) = (*caught_up && !dump, pause) {
            std::thread::sleep(p);
        }
        loop {
            buf.clear();
            *pos = 0;
            let mut lost = reader.read(CHUNK, buf);
            *caught_up = buf.len() < CHUNK / 2;
            if lost > 0 && !dump {
                // Overrun: like varnishlog, go on from the newest record.
                lost += reader.skip_to_head();
            }
            if lost > 0 {
                return Ok(Some(Next::Item(Item::Lost(lost))));
            }
            if !buf.is_empty() {
                return Ok(None);
            }
            if dump {
                return Ok(Some(Next::Eof));
            }
            let now = std::time::Instant::now();
            match deadline {
                None => deadline = Some(now + timeout),
                Some(d) if now >= d => return Ok(Some(Next::Idle)),
                Some(_) => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
