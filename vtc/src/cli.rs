//! A client for Varnish's administrative CLI protocol (what `varnishadm`
//! speaks on the `-T` port), used by `varnish vN` to drive an instance.
//!
//! Protocol (Varnish reference, "varnish-cli"): every answer is a 13-byte
//! header `SSS LLLLLLLL\n` — the status, a space, the body length padded
//! to 8 characters, a newline — then the body and one more newline. A
//! request is one line; `<< TOKEN` starts a here-document that ends with a
//! line holding just TOKEN. With `-S`, the first answer is status 107 whose
//! body starts with a 32-character challenge; the client answers
//! `auth H` where H is the lowercase hex SHA-256 of
//! `challenge "\n" secret-file-contents challenge "\n"`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::ctx::{Abort, Ctx, R, SLICE};

/// Status codes of the CLI protocol.
pub mod status {
    /// Syntax error.
    pub const SYNTAX: u32 = 100;
    /// Unknown request.
    pub const UNKNOWN: u32 = 101;
    /// Authentication required.
    pub const AUTH: u32 = 107;
    /// OK.
    pub const OK: u32 = 200;
    /// Cannot do that (e.g. no panic to show).
    pub const CANT: u32 = 300;
}

/// An open CLI connection.
#[derive(Debug)]
pub struct Cli {
    stream: TcpStream,
    timeout: Duration,
}

/// The admin HTTP API's bearer token for a secret file's bytes (Shellac's:
/// hex of HMAC-SHA256 keyed with the secret over "shellac admin http v1").
pub fn http_token(secret: &[u8]) -> String {
    use hmac::Mac;
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(b"shellac admin http v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Computes the `auth` answer for a challenge and the secret file's bytes.
pub fn auth_response(challenge: &str, secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(challenge.as_bytes());
    h.update(b"\n");
    h.update(secret);
    h.update(challenge.as_bytes());
    h.update(b"\n");
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Cli {
    /// Wraps a connected stream; answers must arrive within `timeout`.
    pub fn new(stream: TcpStream, timeout: Duration) -> Cli {
        let _ = stream.set_nodelay(true);
        Cli { stream, timeout }
    }

    fn read_exact(&mut self, ctx: &Ctx, buf: &mut [u8]) -> R<Result<(), String>> {
        let deadline = Instant::now() + self.timeout;
        let mut got = 0;
        while got < buf.len() {
            if ctx.stopped() {
                return Err(Abort);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Err("CLI answer timed out".into()));
            }
            let _ = self.stream.set_read_timeout(Some(
                (deadline - now).clamp(Duration::from_millis(1), SLICE),
            ));
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return Ok(Err("CLI connection closed".into())),
                Ok(n) => got += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Ok(Err(format!("CLI read failed: {e}"))),
            }
        }
        Ok(Ok(()))
    }

    /// Reads one answer: `(status, body)`.
    pub fn read_answer(&mut self, ctx: &Ctx) -> R<Result<(u32, String), String>> {
        let mut hdr = [0u8; 13];
        if let Err(e) = self.read_exact(ctx, &mut hdr)? {
            return Ok(Err(e));
        }
        let h = String::from_utf8_lossy(&hdr).into_owned();
        let mut it = h.split_whitespace();
        let st = it.next().and_then(|s| s.parse::<u32>().ok());
        let len = it.next().and_then(|s| s.parse::<usize>().ok());
        let (Some(st), Some(len)) = (st, len) else {
            return Ok(Err(format!("bad CLI answer header {h:?}")));
        };
        let mut body = vec![0u8; len + 1];
        if let Err(e) = self.read_exact(ctx, &mut body)? {
            return Ok(Err(e));
        }
        body.truncate(len);
        Ok(Ok((st, String::from_utf8_lossy(&body).into_owned())))
    }

    /// Sends one request (a newline is added) and reads its answer.
    pub fn ask(&mut self, ctx: &Ctx, cmd: &str) -> R<Result<(u32, String), String>> {
        let mut data = cmd.as_bytes().to_vec();
        data.push(b'\n');
        if let Err(e) = self.stream.write_all(&data) {
            return Ok(Err(format!("CLI write failed: {e}")));
        }
        self.read_answer(ctx)
    }

    /// Handles the banner/authentication exchange right after connecting.
    pub fn authenticate(&mut self, ctx: &Ctx, secret: &[u8]) -> R<Result<(), String>> {
        let (st, body) = match self.read_answer(ctx)? {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        match st {
            status::OK => Ok(Ok(())),
            status::AUTH => {
                let challenge: String = body.lines().next().unwrap_or("").to_string();
                let resp = auth_response(&challenge, secret);
                match self.ask(ctx, &format!("auth {resp}"))? {
                    Ok((status::OK, _)) => Ok(Ok(())),
                    Ok((s, b)) => Ok(Err(format!("CLI auth command failed: {s} {b}"))),
                    Err(e) => Ok(Err(e)),
                }
            }
            s => Ok(Err(format!("CLI auth demand expected: {s} {body}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_hash_is_sha256_of_framed_secret() {
        // sha256("abc\nsecretabc\n")
        let r = auth_response("abc", b"secret");
        let mut h = Sha256::new();
        h.update(b"abc\nsecretabc\n");
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r, want);
        assert_eq!(r.len(), 64);
    }
}
