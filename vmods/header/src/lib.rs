//! varnish-modules' vmod_header as a Shellac component: every operation
//! goes through the host's `task` import, which enforces VCL's rules on
//! which message is writable where.

wit_bindgen::generate!({
    world: "vmod:header/vmod-header",
    path: ["../../wit", "wit"],
    generate_all,
});

use exports::vmod::header::header::Guest;
use shellac::vmod::types::{Header, Http, Regex};
use shellac::vmod::{host, task};

struct Component;
shellac_vmod_sdk::lifecycle!(Component);
export!(Component);

fn matches(re: &Regex, s: &str) -> Result<bool, String> {
    host::regex_match(&re.pattern, s)
}

impl Guest for Component {
    fn append(header: Header, value: String) -> Result<(), String> {
        task::add_header(header.part, &header.name, &value)
    }

    fn copy(src: Header, dst: Header) -> Result<(), String> {
        for v in task::get_all(src.part, &src.name) {
            task::add_header(dst.part, &dst.name, &v)?;
        }
        Ok(())
    }

    fn get(header: Header, regex: Regex) -> Result<Option<String>, String> {
        for v in task::get_all(header.part, &header.name) {
            if matches(&regex, &v)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    fn remove(header: Header, regex: Regex) -> Result<(), String> {
        let values = task::get_all(header.part, &header.name);
        let mut kept = Vec::with_capacity(values.len());
        for v in &values {
            if !matches(&regex, v)? {
                kept.push(v);
            }
        }
        if kept.len() == values.len() {
            return Ok(());
        }
        // The remaining lines of this header move after the other headers.
        task::unset_header(header.part, &header.name)?;
        for v in kept {
            task::add_header(header.part, &header.name, v)?;
        }
        Ok(())
    }

    fn regsub(http: Http, regex: Regex, sub: String, all: Option<bool>) -> Result<(), String> {
        let all = all.unwrap_or(false);
        let lines = task::headers(http);
        let mut out = Vec::with_capacity(lines.len());
        let mut changed = false;
        for (name, value) in &lines {
            let line = format!("{name}: {value}");
            if !matches(&regex, &line)? {
                out.push((name.clone(), value.clone()));
                continue;
            }
            let new = host::regex_sub(&regex.pattern, &line, &sub, all)?;
            if new == line {
                out.push((name.clone(), value.clone()));
                continue;
            }
            match new.split_once(':') {
                Some((n, v)) if !n.is_empty() => {
                    out.push((n.to_string(), v.trim_start_matches([' ', '\t']).to_string()));
                    changed = true;
                }
                _ => {
                    host::error(&format!(
                        "header.regsub: \"{new}\" is not a header line, left as it was"
                    ));
                    out.push((name.clone(), value.clone()));
                }
            }
        }
        if !changed {
            return Ok(());
        }
        // Rewrite the whole message so that the order of lines is kept.
        let mut seen: Vec<&str> = Vec::new();
        for (name, _) in &lines {
            if !seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
                seen.push(name);
                task::unset_header(http, name)?;
            }
        }
        for (name, value) in &out {
            task::add_header(http, name, value)?;
        }
        Ok(())
    }

    fn dyn_(http: Http, name: String) -> Header {
        Header { part: http, name }
    }
}
