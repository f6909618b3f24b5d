//! `shellac log`: varnishlog for Shellac (and with `--ncsa`,
//! varnishncsa). Reads the transaction log of a running instance (found
//! by `-n`) from its admin HTTP listener, groups, filters and prints it
//! as varnishlog does. The work is in the `vapi` crate; this module maps
//! varnishlog's options, which it takes in order as varnishlog does
//! (`-i`, `-x`, `-I`, `-X` build one filter, the first `-i` hiding all
//! other tags).

use anyhow::{bail, Context};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vapi::stream::{Next, Source};
use vapi::{Dispatcher, Filter, Grouping, Item, Query};

#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// varnishlog's options: -n DIR, -d, -g raw|vxid|request|session,
    /// -i/-x TAGLIST, -I/-X [TAGLIST:]REGEX, -q QUERY, -Q FILE, -b, -c,
    /// -C, -E, -v, -k N, -T SECONDS, -L N, -t SECONDS; --ncsa [-F FORMAT] [-j]
    /// for varnishncsa's access log lines.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

const USAGE: &str = "Usage: shellac log [-n DIR] [-d] [-g raw|vxid|request|session] [-i|-x TAGLIST] [-I|-X [TAGLIST:]REGEX] [-q QUERY] [-Q FILE] [-b] [-c] [-C] [-E] [-v] [-k N] [-T SECONDS] [-L N] [-t SECONDS|off] [--ncsa [-F FORMAT] [-j]]";

struct Opts {
    name: Option<PathBuf>,
    dump: bool,
    grouping: Option<Grouping>,
    filter: Filter,
    query: Option<String>,
    verbose: bool,
    count: Option<u64>,
    timeout: Duration,
    limit: usize,
    wait: Duration,
    ncsa: bool,
    /// `-j` with `--ncsa`: values escaped for JSON.
    json: bool,
    format: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        name: None,
        dump: false,
        grouping: None,
        filter: Filter::new(),
        query: None,
        verbose: false,
        count: None,
        timeout: Duration::from_secs(120),
        limit: 1000,
        wait: Duration::from_secs(5),
        ncsa: false,
        json: false,
        format: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> anyhow::Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs an argument\n{USAGE}"))
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--ncsa" => o.ncsa = true,
            "-j" => o.json = true,
            "-F" => o.format = Some(val("-F")?),
            "-n" => o.name = Some(PathBuf::from(val("-n")?)),
            "-d" => o.dump = true,
            "-v" => o.verbose = true,
            "-b" | "-c" | "-C" => {
                let c = a.chars().nth(1).unwrap_or('c');
                o.filter.arg(c, "").map_err(anyhow::Error::msg)?;
            }
            "-E" => o.filter.arg('c', "").map_err(anyhow::Error::msg)?,
            "-g" => {
                let g = val("-g")?;
                match Grouping::parse(&g) {
                    Some(g) => o.grouping = Some(g),
                    None => bail!("Unknown grouping type: {g}"),
                }
            }
            "-i" | "-x" | "-I" | "-X" => {
                let v = val(a)?;
                let c = a.chars().nth(1).unwrap_or('i');
                o.filter.arg(c, &v).map_err(anyhow::Error::msg)?;
            }
            "-q" => {
                let q = val("-q")?;
                o.query = Some(match o.query.take() {
                    Some(prev) => format!("{prev}\n{q}"),
                    None => q,
                });
            }
            "-Q" => {
                let f = val("-Q")?;
                let q = std::fs::read_to_string(&f).with_context(|| format!("-Q {f}"))?;
                o.query = Some(q);
            }
            "-k" => {
                let k = val("-k")?;
                o.count = Some(
                    k.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .with_context(|| format!("-k: Invalid number '{k}'"))?,
                );
            }
            "-T" => {
                let t = val("-T")?;
                let s: f64 = t
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s >= 0.0 && s.is_finite())
                    .with_context(|| format!("-T: Syntax error ({t})"))?;
                o.timeout = Duration::from_secs_f64(s);
            }
            "-L" => {
                let l = val("-L")?;
                o.limit = l
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("-L: Range error ({l})"))?;
            }
            "-t" => {
                let t = val("-t")?;
                o.wait = if t == "off" {
                    Duration::from_secs(u32::MAX as u64)
                } else {
                    Duration::from_secs_f64(
                        t.parse::<f64>()
                            .ok()
                            .filter(|s| *s >= 0.0 && s.is_finite())
                            .with_context(|| format!("-t: Invalid argument: {t}"))?,
                    )
                };
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    Ok(o)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let o = match parse(&args.args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    // varnishncsa groups by request and logs client requests by default.
    let grouping = o.grouping.unwrap_or(if o.ncsa {
        Grouping::Request
    } else {
        Grouping::Vxid
    });
    let query = match &o.query {
        Some(q) => match Query::new(q, o.filter.caseless) {
            Ok(q) => Some(q),
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    let ncsa = match (&o.ncsa, &o.format) {
        (true, f) => {
            let f = vapi::ncsa::Format::new(f.as_deref().unwrap_or(vapi::ncsa::DEFAULT_FORMAT))
                .map_err(anyhow::Error::msg)?;
            Some(if o.json { f.json() } else { f })
        }
        (false, Some(_)) => bail!("-F needs --ncsa"),
        (false, None) if o.json => bail!("-j needs --ncsa"),
        (false, None) => None,
    };
    let inst = super::instance::find(o.name.as_deref(), o.wait)?;
    let dir = super::instance::dir(o.name.as_deref());
    let token = inst.token()?;
    let mut stream = Source::open(
        inst.vsl.as_deref(),
        inst.http.as_deref(),
        token.as_deref(),
        o.dump,
        !o.dump,
    )
    .with_context(|| format!("reading the log of {}", dir.display()))?;
    stream.set_timeout(Duration::from_millis(500))?;
    stream.pace(Duration::from_millis(5));
    let mut d = Dispatcher::new(grouping);
    d.timeout = o.timeout;
    d.limit = o.limit;
    let mut out = std::io::BufWriter::with_capacity(16 << 10, std::io::stdout().lock());
    let shown = std::cell::Cell::new(0u64);
    let full = |shown: &std::cell::Cell<u64>| o.count.is_some_and(|k| shown.get() >= k);
    let mut last_expire = Instant::now();
    // Items since the clock was last read: reading it per record cost a
    // fifth of the reader's time.
    let mut since_check = 0u32;
    let emit =
        |groups: Vec<vapi::Group>, out: &mut std::io::BufWriter<_>| -> std::io::Result<bool> {
            for g in groups {
                if let Some(q) = &query {
                    if !q.matches(&g) {
                        continue;
                    }
                }
                match &ncsa {
                    Some(f) => {
                        for l in vapi::ncsa::lines(&g, f, o.filter.backend) {
                            writeln!(out, "{l}")?;
                        }
                    }
                    None => vapi::print::group(out, &g, &o.filter, o.verbose)?,
                }
                shown.set(shown.get() + 1);
                if full(&shown) {
                    return Ok(false);
                }
            }
            Ok(true)
        };
    // varnishlog's default output (no query, every record shown, terse)
    // is printed straight from the log's bytes where it can be (see
    // `vapi::fast`): the same output for a fraction of the work.
    let fast = grouping == Grouping::Vxid
        && query.is_none()
        && ncsa.is_none()
        && o.filter.shows_all()
        && !o.verbose;
    // Transactions printed in place, before they go to `out`.
    let mut text: Vec<u8> = Vec::with_capacity(128 << 10);
    let r: std::io::Result<()> = (|| {
        loop {
            let next = if fast {
                if let Some(bytes) = stream.raw() {
                    let mut at = 0;
                    let mut stop = false;
                    while at < bytes.len() && !stop {
                        let rest = &bytes[at..];
                        if let Some(n) = vapi::fast::whole_txn(rest) {
                            vapi::fast::print_txn(&mut text, &rest[..n]).map_err(|e| {
                                std::io::Error::new(std::io::ErrorKind::InvalidData, e)
                            })?;
                            at += n;
                            shown.set(shown.get() + 1);
                            stop = full(&shown);
                            continue;
                        }
                        // Not a whole transaction here: kept in wire
                        // form until its end where it can be (a
                        // session's `Link`s), else decoded and grouped.
                        let fed = d
                            .feed_raw(rest)
                            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                        match fed {
                            (vapi::Fed::More, _) => at = bytes.len(),
                            (vapi::Fed::Whole(txn), n) => {
                                at += n;
                                vapi::fast::print_txn(&mut text, &txn).map_err(|e| {
                                    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
                                })?;
                                shown.set(shown.get() + 1);
                                stop = full(&shown);
                            }
                            (vapi::Fed::Decoded(groups, lost), n) => {
                                at += n;
                                if groups.is_empty() && lost.is_none() {
                                    continue;
                                }
                                // What is printed in place goes out first.
                                out.write_all(&text)?;
                                text.clear();
                                stop = stop || !emit(groups, &mut out)?;
                                if let Some(n) = lost {
                                    out.flush()?;
                                    eprintln!("Log overrun: {n} records lost");
                                }
                            }
                        }
                    }
                    out.write_all(&text)?;
                    text.clear();
                    stream.consume(at);
                    if stop {
                        break;
                    }
                    // A chunk done: nothing left to hand on (a count of
                    // 0 lost is ignored below), and the expiry check runs
                    // as after 4096 items.
                    since_check = 4096;
                    Next::Item(Item::Lost(0))
                } else {
                    match stream.fill()? {
                        None => continue,
                        Some(next) => next,
                    }
                }
            } else {
                stream.read()?
            };
            let idle = !matches!(next, Next::Item(_));
            match next {
                Next::Item(Item::Record(r)) => {
                    if !emit(d.feed(r), &mut out)? {
                        break;
                    }
                }
                Next::Item(Item::Lost(0)) => {}
                Next::Item(Item::Lost(n)) => {
                    out.flush()?;
                    eprintln!("Log overrun: {n} records lost");
                }
                Next::Idle => {
                    out.flush()?;
                }
                Next::Eof => {
                    emit(d.flush(), &mut out)?;
                    break;
                }
            }
            since_check += 1;
            if !idle && since_check < 4096 {
                continue;
            }
            since_check = 0;
            if last_expire.elapsed() >= Duration::from_secs(1) {
                last_expire = Instant::now();
                if !emit(d.expire(), &mut out)? {
                    break;
                }
                out.flush()?;
            }
        }
        out.flush()
    })();
    match r {
        // `shellac log | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}
