//! Commands valid in every spec (top level, client, server): `barrier`,
//! `delay` and `shell` — varnishtest's "global" commands.

use std::process::Command as Proc;
use std::time::Duration;

use crate::barrier::cmd_barrier;
use crate::ctx::{Ctx, R};
use crate::expect::vnum;

/// Runs a global command; `None` if `args[0]` is not one.
pub fn global_cmd(ctx: &Ctx, id: &str, args: &[String]) -> Option<R<()>> {
    let name = args.first()?;
    match name.as_str() {
        "barrier" => Some(cmd_barrier(ctx, id, &args[1..])),
        "delay" => Some(cmd_delay(ctx, id, &args[1..])),
        "shell" => Some(cmd_shell(ctx, id, &args[1..])),
        _ => None,
    }
}

fn cmd_delay(ctx: &Ctx, id: &str, args: &[String]) -> R<()> {
    let Some(a) = args.first() else {
        return Err(ctx.fatal(id, "delay: missing argument"));
    };
    let d = vnum(a);
    if d.is_nan() || d < 0.0 {
        return Err(ctx.fatal(id, format!("delay: bad number ({a})")));
    }
    ctx.log.log(3, id, &format!("delaying {a} second(s)"));
    ctx.sleep(Duration::from_secs_f64(d))
}

/// Varnish's tools as the Shellac instance's (`varnishlog` is `shellac
/// log`, `varnishncsa` `shellac log --ncsa`, `varnishstat` `shellac
/// stat`, `varnishadm` `shellac adm`): small scripts in the test's
/// temporary directory, first in a shell command's `PATH`, so a test's
/// `shell` reads the instance it started.
fn tool_dir(ctx: &Ctx) -> std::io::Result<std::path::PathBuf> {
    let dir = ctx.tmpdir.join("_tools");
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir)?;
    let shellac =
        std::fs::canonicalize(&ctx.config.shellac).unwrap_or_else(|_| ctx.config.shellac.clone());
    let bin = shellac.to_string_lossy().replace('\'', "'\\''");
    for (tool, sub) in [
        ("varnishlog", "log"),
        ("varnishncsa", "log --ncsa"),
        ("varnishstat", "stat"),
        ("varnishadm", "adm"),
    ] {
        let path = dir.join(tool);
        std::fs::write(&path, format!("#!/bin/sh\nexec '{bin}' {sub} \"$@\"\n"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(dir)
}

/// `shell [-err] [-exit N] [-expect TEXT] [-match REGEX] CMD`: runs CMD
/// with `/bin/sh -c` in the test's temporary directory (with a Shellac
/// instance, its tools as Varnish's: see [`tool_dir`]).
fn cmd_shell(ctx: &Ctx, id: &str, args: &[String]) -> R<()> {
    let mut exit: Option<i32> = Some(0);
    let mut err = false;
    let mut expect: Option<&str> = None;
    let mut re: Option<&str> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-err" => {
                err = true;
                exit = None;
            }
            "-exit" => {
                exit = args.get(i + 1).and_then(|s| s.trim().parse().ok());
                i += 1;
            }
            "-expect" => {
                expect = args.get(i + 1).map(String::as_str);
                i += 1;
            }
            "-match" => {
                re = args.get(i + 1).map(String::as_str);
                i += 1;
            }
            _ => break,
        }
        i += 1;
    }
    let Some(cmd) = args.get(i) else {
        return Err(ctx.fatal(id, "shell: missing command"));
    };
    ctx.log.log(3, id, &format!("shell_cmd|{cmd}"));
    let mut sh = Proc::new("/bin/sh");
    sh.arg("-c").arg(cmd).current_dir(&ctx.tmpdir);
    if ctx.config.varnishd.is_none() {
        match tool_dir(ctx) {
            Ok(dir) => {
                let path = std::env::var_os("PATH").unwrap_or_default();
                let mut dirs = vec![dir];
                dirs.extend(std::env::split_paths(&path));
                if let Ok(p) = std::env::join_paths(dirs) {
                    sh.env("PATH", p);
                }
            }
            Err(e) => return Err(ctx.fatal(id, format!("shell: cannot make the tools: {e}"))),
        }
    }
    let out = sh.output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return Err(ctx.fatal(id, format!("shell: cannot run: {e}"))),
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    ctx.log.dump(4, id, "shell_out", text.as_bytes());
    let code = out.status.code().unwrap_or(-1);
    ctx.log.log(4, id, &format!("shell_status = {code}"));
    if err && code == 0 {
        return Err(ctx.fatal(id, "shell_exit not as expected: got 0 wanted non-zero"));
    }
    if let Some(e) = exit {
        if code != e {
            return Err(ctx.fatal(
                id,
                format!("shell_exit not as expected: got {code} wanted {e}"),
            ));
        }
    }
    if let Some(x) = expect {
        if !text.contains(x) {
            return Err(ctx.fatal(id, format!("shell_expect not found: (\"{x}\")")));
        }
    }
    if let Some(r) = re {
        match pcre2::bytes::RegexBuilder::new().build(r) {
            Ok(rx) if rx.is_match(text.as_bytes()).unwrap_or(false) => {}
            Ok(_) => return Err(ctx.fatal(id, format!("shell_match failed: (\"{r}\")"))),
            Err(e) => return Err(ctx.fatal(id, format!("shell_match: bad regex {r}: {e}"))),
        }
    }
    Ok(())
}
