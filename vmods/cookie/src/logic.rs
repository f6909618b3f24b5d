//! Cookie parsing and formatting, without bindings (unit-testable).

/// Cookies in header order; a name occurs once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Jar(pub Vec<(String, String)>);

impl Jar {
    /// Parses a Cookie header: `name=value` pairs separated by `;`, spaces
    /// around them ignored; pairs without `=` or with an empty name are
    /// skipped; a repeated name keeps its first place and its last value.
    pub fn parse(header: &str) -> Jar {
        let mut jar = Jar::default();
        for part in header.split(';') {
            let part = part.trim_matches(|c: char| c == ' ' || c == '\t');
            let Some((name, value)) = part.split_once('=') else {
                continue;
            };
            let name = name.trim_end_matches([' ', '\t']);
            if name.is_empty() {
                continue;
            }
            jar.set(name, value.trim_start_matches([' ', '\t']));
        }
        jar
    }

    pub fn set(&mut self, name: &str, value: &str) {
        if name.is_empty() {
            return;
        }
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value.to_string(),
            None => self.0.push((name.to_string(), value.to_string())),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn delete(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    /// `a=1; b=2;`: each cookie ends with `;`, as vmod_cookie writes it.
    pub fn to_header(&self) -> String {
        let mut s = String::new();
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(n);
            s.push('=');
            s.push_str(v);
            s.push(';');
        }
        s
    }
}

/// The names of a comma-separated list (spaces around names ignored).
pub fn names(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect()
}

/// `Thu, 01 Jan 1970 00:00:00 GMT` for a time in seconds since the epoch,
/// clamped to what an HTTP date can say (1970 to 9999).
pub fn rfc1123(t: f64) -> String {
    const LAST: f64 = 253_402_300_799.0; // 9999-12-31T23:59:59Z
    let secs = if t.is_finite() {
        t.floor().clamp(0.0, LAST)
    } else {
        0.0
    };
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    httpdate::fmt_http_date(when)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let j = Jar::parse("cookie1=value1; cookie2=value2;cookie3=; bad; =x; cookie1=again");
        assert_eq!(j.to_header(), "cookie1=again; cookie2=value2; cookie3=;");
        assert_eq!(j.get("cookie2"), Some("value2"));
        assert_eq!(j.get("bad"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc1123(0.0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(rfc1123(784111777.0), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(rfc1123(951782400.0), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(rfc1123(-5.0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(rfc1123(1e300), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn lists() {
        assert_eq!(names("a, b,,c "), ["a", "b", "c"]);
    }
}
