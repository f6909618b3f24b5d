//! `shellac stat`: varnishstat for Shellac. Reads the counters of a
//! running instance (found by `-n`) from its admin HTTP listener and
//! prints them as varnishstat does: `-1` one line per counter, `-j`
//! JSON, `-x` XML, `-l` the field list, and without those a view that
//! refreshes every second.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Print the counters once and exit.
    #[arg(short = '1')]
    pub once: bool,
    /// Print the counters once as JSON.
    #[arg(short = 'j')]
    pub json: bool,
    /// Print the counters once as XML.
    #[arg(short = 'x')]
    pub xml: bool,
    /// List the counter names and descriptions.
    #[arg(short = 'l')]
    pub list: bool,
    /// Only counters matching GLOB (`^GLOB` excludes); may repeat, the
    /// first match decides.
    #[arg(short = 'f', value_name = "GLOB")]
    pub filter: Vec<String>,
    /// Include counters matching GLOB.
    #[arg(short = 'I', value_name = "GLOB")]
    pub include: Vec<String>,
    /// Exclude counters matching GLOB.
    #[arg(short = 'X', value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// The instance directory (serve's `-n`).
    #[arg(short = 'n', value_name = "DIR")]
    pub name: Option<PathBuf>,
    /// Seconds to wait for the instance to appear.
    #[arg(short = 't', value_name = "SECONDS", default_value_t = 5.0)]
    pub timeout: f64,
}

/// One counter as `/stats` gives it.
#[derive(Debug, Clone)]
pub struct Point {
    pub name: String,
    pub flag: char,
    pub format: char,
    pub desc: String,
    pub value: u64,
}

fn parse(body: &[u8]) -> anyhow::Result<Vec<Point>> {
    let v: serde_json::Value = serde_json::from_slice(body).context("reading /stats")?;
    let arr = v.as_array().context("/stats is not a list")?;
    let s = |p: &serde_json::Value, k: &str| {
        p.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Ok(arr
        .iter()
        .map(|p| Point {
            name: s(p, "name"),
            flag: s(p, "flag").chars().next().unwrap_or('c'),
            format: s(p, "format").chars().next().unwrap_or('i'),
            desc: s(p, "description"),
            value: p.get("value").and_then(|x| x.as_u64()).unwrap_or(0),
        })
        .collect())
}

/// varnishstat's filter: patterns in order, the first that matches
/// decides; when none matches, the counter shows unless an include
/// pattern was given.
struct Filter(Vec<(String, bool)>);

impl Filter {
    fn new(a: &Args) -> Filter {
        let mut v = Vec::new();
        for f in &a.filter {
            match f.strip_prefix('^') {
                Some(x) => v.push((x.to_string(), false)),
                None => v.push((f.clone(), true)),
            }
        }
        v.extend(a.include.iter().map(|g| (g.clone(), true)));
        v.extend(a.exclude.iter().map(|g| (g.clone(), false)));
        Filter(v)
    }

    fn shows(&self, name: &str) -> bool {
        let mut default = true;
        for (g, include) in &self.0 {
            if shellac::vmod_std::fnmatch(g, name, false) {
                return *include;
            }
            if *include {
                default = false;
            }
        }
        default
    }
}

fn local_timestamp() -> String {
    // SAFETY: time(NULL) and localtime_r with valid pointers to locals;
    // strftime writes at most the buffer's size.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        let mut buf = [0u8; 32];
        let n = libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            c"%Y-%m-%dT%H:%M:%S".as_ptr(),
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `-1`: varnishstat's one-shot lines (rate per second of uptime for
/// counters, `.` for gauges).
pub fn once(points: &[Point], up: u64, out: &mut impl Write) -> std::io::Result<()> {
    let up = up as f64;
    let mut pad = 18usize;
    for p in points {
        let i = p.name.len();
        if i >= pad {
            pad = i + 1;
        }
        write!(out, "{}{:w$}", p.name, "", w = pad - i)?;
        if p.flag == 'c' {
            let rate = if up > 0.0 { p.value as f64 / up } else { 0.0 };
            writeln!(out, "{:12} {:12.2} {}", p.value, rate, p.desc)?;
        } else {
            writeln!(out, "{:12} {:>12} {}", p.value, ".  ", p.desc)?;
        }
    }
    Ok(())
}

fn json(points: &[Point], out: &mut impl Write) -> std::io::Result<()> {
    write!(
        out,
        "{{\n  \"version\": 1,\n  \"timestamp\": \"{}\",\n  \"counters\": {{\n",
        local_timestamp()
    )?;
    let mut sep = "";
    for p in points {
        write!(
            out,
            "{sep}    \"{}\": {{\n      \"description\": \"{}\",\n      \"flag\": \"{}\",\n      \"format\": \"{}\",\n      \"value\": {}\n    }}",
            json_escape(&p.name),
            json_escape(&p.desc),
            p.flag,
            p.format,
            p.value
        )?;
        sep = ",\n";
    }
    writeln!(out, "\n  }}\n}}")
}

fn xml(points: &[Point], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "<?xml version=\"1.0\"?>")?;
    writeln!(out, "<varnishstat timestamp=\"{}\">", local_timestamp())?;
    for p in points {
        writeln!(
            out,
            "\t<stat>\n\t\t<name>{}</name>\n\t\t<value>{}</value>\n\t\t<flag>{}</flag>\n\t\t<format>{}</format>\n\t\t<description>{}</description>\n\t</stat>",
            p.name, p.value, p.flag, p.format, p.desc
        )?;
    }
    writeln!(out, "</varnishstat>")
}

fn list(points: &[Point], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "Varnishstat -f option fields:")?;
    writeln!(out, "Field name                     Description")?;
    writeln!(out, "----------                     -----------")?;
    for p in points {
        writeln!(out, "{:<30} {}", p.name, p.desc)?;
    }
    Ok(())
}

/// The live view: every second, the counters that are not zero with
/// their value, change per second and average since start.
fn live(addr: &str, token: Option<&str>, filter: &Filter) -> anyhow::Result<ExitCode> {
    let mut last: Option<(std::time::Instant, Vec<Point>)> = None;
    loop {
        let points: Vec<Point> = parse(&super::instance::http_get_all(addr, "/stats", token)?)?
            .into_iter()
            .filter(|p| filter.shows(&p.name))
            .collect();
        let now = std::time::Instant::now();
        let up = points
            .iter()
            .find(|p| p.name == "MAIN.uptime")
            .map_or(0, |p| p.value);
        let mut o = String::from("\x1b[H\x1b[2J");
        o.push_str(&format!(
            "Uptime child: {}:{:02}:{:02}:{:02}\n\n",
            up / 86400,
            up / 3600 % 24,
            up / 60 % 60,
            up % 60
        ));
        o.push_str(&format!(
            "{:<40} {:>14} {:>12} {:>12}\n",
            "NAME", "CURRENT", "CHANGE", "AVERAGE"
        ));
        for p in points.iter().filter(|p| p.value != 0) {
            let change = match &last {
                Some((t, prev)) => {
                    let before = prev
                        .iter()
                        .find(|q| q.name == p.name)
                        .map_or(0, |q| q.value);
                    let dt = now.duration_since(*t).as_secs_f64().max(0.001);
                    format!("{:.2}", (p.value as f64 - before as f64) / dt)
                }
                None => String::new(),
            };
            let avg = if p.flag == 'c' && up > 0 {
                format!("{:.2}", p.value as f64 / up as f64)
            } else {
                ".".into()
            };
            o.push_str(&format!(
                "{:<40} {:>14} {:>12} {:>12}\n",
                p.name, p.value, change, avg
            ));
        }
        let mut so = std::io::stdout().lock();
        so.write_all(o.as_bytes())?;
        so.flush()?;
        last = Some((now, points));
        std::thread::sleep(Duration::from_secs(1));
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inst = super::instance::find(
        args.name.as_deref(),
        Duration::from_secs_f64(args.timeout.max(0.0)),
    )?;
    let addr = inst.http()?.to_string();
    let token = inst.token()?;
    let filter = Filter::new(&args);
    if !(args.once || args.json || args.xml || args.list) {
        return live(&addr, token.as_deref(), &filter);
    }
    let all = parse(&super::instance::http_get_all(
        &addr,
        "/stats",
        token.as_deref(),
    )?)?;
    // Rates are per second of the child's uptime, filtered or not.
    let up = all
        .iter()
        .find(|p| p.name == "MAIN.uptime")
        .map_or(0, |p| p.value);
    let points: Vec<Point> = all.into_iter().filter(|p| filter.shows(&p.name)).collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let r = if args.list {
        list(&points, &mut out)
    } else if args.json {
        json(&points, &mut out)
    } else if args.xml {
        xml(&points, &mut out)
    } else {
        once(&points, up, &mut out)
    }
    .and_then(|()| out.flush());
    match r {
        // `shellac stat -1 | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => {
            r?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
