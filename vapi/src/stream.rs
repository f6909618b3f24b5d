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
}

impl Stream {
    /// Connects to the admin HTTP listener at `addr` and asks for the
    /// log from the oldest record the ring holds (`head`) or from the
    /// next one written; with `follow` the stream goes on, else it ends
    /// at the newest record. Returns once the server placed the reader:
    /// everything logged from then on will come.
    pub fn connect(addr: &str, head: bool, follow: bool) -> io::Result<Stream> {
        let mut s = TcpStream::connect(addr)?;
        let _ = s.set_nodelay(true);
        write!(
            s,
            "GET /log?from={}&follow={} HTTP/1.1\r\nHost: {addr}\r\n\r\n",
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
        Ok(Stream { r, buf: Vec::new() })
    }

    /// Waits at most `t` for data in [`Stream::read`] (`None`: forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.r.get_ref().set_read_timeout(t)
    }

    /// The next item.
    pub fn read(&mut self) -> io::Result<Next> {
        loop {
            match decode(&self.buf) {
                Ok(Some((item, n))) => {
                    self.buf.drain(..n);
                    return Ok(Next::Item(item));
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
