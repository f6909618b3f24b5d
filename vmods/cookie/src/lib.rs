//! vmod_cookie (Varnish 7.1) as a Shellac component.

wit_bindgen::generate!({
    world: "vmod:cookie/vmod-cookie",
    path: ["../../wit", "wit"],
    generate_all,
});

mod logic;

use exports::vmod::cookie::cookie::Guest;
use shellac::vmod::host;
use shellac::vmod::types::{Duration, Regex, Time};
use shellac_vmod_sdk::TaskLocal;

struct Component;
shellac_vmod_sdk::lifecycle!(Component);
export!(Component);

/// The task's cookies, in order (PRIV_TASK).
static JAR: TaskLocal<logic::Jar> = TaskLocal::new();

fn matches(re: &Regex, name: &str) -> Result<bool, String> {
    host::regex_match(&re.pattern, name)
}

/// Keeps the cookies for which `keep(name)` says so.
fn retain(mut keep: impl FnMut(&str) -> Result<bool, String>) -> Result<(), String> {
    let jar = JAR.take().unwrap_or_default();
    let mut out = logic::Jar::default();
    for (n, v) in jar.0 {
        if keep(&n)? {
            out.0.push((n, v));
        }
    }
    JAR.set(out);
    Ok(())
}

impl Guest for Component {
    fn clean() {
        JAR.clear();
    }

    fn delete(cookiename: String) {
        JAR.with_default(|j| j.delete(&cookiename));
    }

    fn filter(filterstring: String) {
        let names = logic::names(&filterstring);
        JAR.with_default(|j| j.0.retain(|(n, _)| !names.contains(&n.as_str())));
    }

    fn filter_re(expression: Regex) -> Result<(), String> {
        retain(|n| matches(&expression, n).map(|m| !m))
    }

    fn keep(filterstring: String) {
        let names = logic::names(&filterstring);
        JAR.with_default(|j| j.0.retain(|(n, _)| names.contains(&n.as_str())));
    }

    fn filter_except(filterstring: String) {
        Self::keep(filterstring)
    }

    fn keep_re(expression: Regex) -> Result<(), String> {
        retain(|n| matches(&expression, n))
    }

    fn format_date(now: Time, timedelta: Duration) -> String {
        logic::rfc1123(now.epoch_seconds + timedelta.seconds)
    }

    fn format_rfc1123(now: Time, timedelta: Duration) -> String {
        Self::format_date(now, timedelta)
    }

    fn get(cookiename: String) -> Option<String> {
        JAR.with_default(|j| j.get(&cookiename).map(str::to_string))
    }

    fn get_re(expression: Regex) -> Result<Option<String>, String> {
        let jar = JAR.take().unwrap_or_default();
        let mut found = None;
        for (n, v) in &jar.0 {
            if matches(&expression, n)? {
                found = Some(v.clone());
                break;
            }
        }
        JAR.set(jar);
        Ok(found)
    }

    fn get_string() -> String {
        JAR.with_default(|j| j.to_header())
    }

    fn isset(cookiename: String) -> bool {
        JAR.with_default(|j| j.get(&cookiename).is_some())
    }

    fn parse(cookieheader: String) {
        JAR.set(logic::Jar::parse(&cookieheader));
    }

    fn set(cookiename: String, value: String) {
        JAR.with_default(|j| j.set(&cookiename, &value));
    }
}
