//! Finding a running `shellac serve` by its instance directory (`-n`):
//! serve writes `_.admin` there with the admin CLI address (`T`), the
//! secret file (`S`) and the admin HTTP address (`H`); `adm`, `stat` and
//! `log` read it, as Varnish's tools find varnishd by its `-n`.

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the instance directory says.
#[derive(Debug, Default)]
pub struct Instance {
    /// The admin CLI (`-T`).
    pub cli: Option<String>,
    /// Its secret file (`-S`).
    pub secret: Option<PathBuf>,
    /// The admin HTTP listener.
    pub http: Option<String>,
    /// The transaction log's shared memory.
    pub vsl: Option<PathBuf>,
}

/// The directory `-n DIR` names (serve's default when not given).
pub fn dir(n: Option<&Path>) -> PathBuf {
    n.map(Path::to_path_buf)
        .unwrap_or_else(crate::cmd::serve::default_instance)
}

/// Reads the instance directory, waiting up to `wait` for it to appear.
pub fn find(n: Option<&Path>, wait: Duration) -> anyhow::Result<Instance> {
    let d = dir(n);
    let f = d.join("_.admin");
    let deadline = Instant::now() + wait;
    let text = loop {
        match std::fs::read_to_string(&f) {
            Ok(t) => break t,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "no Shellac instance at {} (is `shellac serve -n {}` running?)",
                        d.display(),
                        d.display()
                    )
                })
            }
        }
    };
    let mut i = Instance::default();
    for l in text.lines() {
        match l.split_once(' ') {
            Some(("T", v)) => i.cli = Some(v.to_string()),
            Some(("S", v)) => i.secret = Some(PathBuf::from(v)),
            Some(("H", v)) => i.http = Some(v.to_string()),
            Some(("V", v)) => i.vsl = Some(PathBuf::from(v)),
            _ => {}
        }
    }
    Ok(i)
}

impl Instance {
    /// The admin HTTP address, or why there is none.
    pub fn http(&self) -> anyhow::Result<&str> {
        match &self.http {
            Some(h) => Ok(h),
            None => bail!("the instance has no admin HTTP listener (serve --admin-http none)"),
        }
    }
}

impl Instance {
    /// The admin HTTP API's bearer token, from the secret file (`None`
    /// without `-S`).
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        match &self.secret {
            Some(f) => {
                let secret = std::fs::read(f).with_context(|| format!("-S {}", f.display()))?;
                Ok(Some(shellac::mgt_auth::http_token(&secret)))
            }
            None => Ok(None),
        }
    }
}

/// Connects to the admin HTTP listener and sends `GET path` (with the
/// bearer token, if any); returns the stream positioned after the
/// response head (the status must be 200).
pub fn http_get(
    addr: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<std::io::BufReader<TcpStream>> {
    use std::io::BufRead;
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut r = std::io::BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).context("reading the answer")?;
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("{addr}{path}: {}", status.trim());
    }
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 || l == "\r\n" || l == "\n" {
            break;
        }
    }
    Ok(r)
}

/// `GET path`, the whole body.
pub fn http_get_all(addr: &str, path: &str, token: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut r = http_get(addr, path, token)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok(out)
}
