//! Object lifetimes (Varnish's `cache_expire` and `rfc2616.c`): the TTL,
//! grace and keep a fetched object starts with, before
//! `vcl_backend_response` may change them.

use crate::cache_obj::{hdr_get, Headers};

/// Varnish's `VTIM_format`: an RFC 1123 date.
pub fn http_date(t: f64) -> String {
    // Years 1..=9999 only, so no arithmetic below can overflow.
    let secs = (t.floor() as i64).clamp(-62_135_596_800, 253_402_300_799);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let (y, mon, d) = civil(days);
    let wd = (days + 4).rem_euclid(7) as usize;
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WDAY[wd],
        d,
        MONTH[(mon - 1) as usize],
        y,
        h,
        m,
        s
    )
}

const WDAY: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTH: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mon = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(mon <= 2), mon, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A cursor over a date string, for [`parse_http_date`].
struct DateCursor<'a>(&'a [u8]);

impl DateCursor<'_> {
    fn byte(&mut self, c: u8) -> Option<()> {
        let (&first, rest) = self.0.split_first()?;
        (first == c).then(|| self.0 = rest)
    }

    /// `n` digits as a number.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let d = self.0.get(..n)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[n..];
        Some(d.iter().fold(0, |a, c| a * 10 + i64::from(c - b'0')))
    }

    /// One of `names` (exact case), as its index.
    fn name(&mut self, names: &[&str]) -> Option<usize> {
        let i = names
            .iter()
            .position(|n| self.0.starts_with(n.as_bytes()))?;
        self.0 = &self.0[names[i].len()..];
        Some(i)
    }

    fn hms(&mut self) -> Option<(i64, i64, i64)> {
        let h = self.digits(2)?;
        self.byte(b':')?;
        let m = self.digits(2)?;
        self.byte(b':')?;
        Some((h, m, self.digits(2)?))
    }
}

/// Parses a date as Varnish's `VTIM_parse` does: RFC 1123 (`Sun, 06 Nov
/// 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`),
/// asctime (`Sun Nov  6 08:49:37 1994`) or ISO 8601 (`1994-11-06T08:49:37`).
/// Strictly: names in their exact case, a weekday that matches the date,
/// a real calendar day, years from 1899; anything else is no date.
pub fn parse_http_date(s: &str) -> Option<f64> {
    const LONG_WDAY: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let mut c = DateCursor(s.trim_start_matches(' ').as_bytes());
    let mut wday = None;
    let (y, mon, d, (h, mi, se));
    if c.0.first().is_some_and(u8::is_ascii_digit) {
        y = c.digits(4)?;
        c.byte(b'-')?;
        mon = c.digits(2)?;
        c.byte(b'-')?;
        d = c.digits(2)?;
        c.byte(b'T')?;
        (h, mi, se) = c.hms()?;
    } else {
        // The long weekday names start with the short ones.
        let w = c.name(&WDAY)?;
        wday = Some(w as i64);
        if c.byte(b',').is_some() {
            c.byte(b' ')?;
            d = c.digits(2)?;
            c.byte(b' ')?;
            mon = c.name(&MONTH)? as i64 + 1;
            c.byte(b' ')?;
            y = c.digits(4)?;
            c.byte(b' ')?;
            (h, mi, se) = c.hms()?;
            c.byte(b' ')?;
            c.name(&["GMT"])?;
        } else if c.byte(b' ').is_some() {
            mon = c.name(&MONTH)? as i64 + 1;
            c.byte(b' ')?;
            d = if c.byte(b' ').is_some() {
                c.digits(1)?
            } else {
                c.digits(2)?
            };
            c.byte(b' ')?;
            (h, mi, se) = c.hms()?;
            c.byte(b' ')?;
            y = c.digits(4)?;
        } else {
            c.name(&[&LONG_WDAY[w][3..]])?;
            c.byte(b',')?;
            c.byte(b' ')?;
            d = c.digits(2)?;
            c.byte(b'-')?;
            mon = c.name(&MONTH)? as i64 + 1;
            c.byte(b'-')?;
            let yy = c.digits(2)? + 1900;
            y = if yy < 1969 { yy + 100 } else { yy };
            c.byte(b' ')?;
            (h, mi, se) = c.hms()?;
            c.byte(b' ')?;
            c.name(&["GMT"])?;
        }
    }
    if c.0.iter().any(|&b| b != b' ') {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    const DAYS: [i64; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if se > 60
        || mi > 59
        || h > 23
        || !(1..=12).contains(&mon)
        || d < 1
        || d > DAYS[(mon - 1) as usize]
        || y < 1899
        || (mon == 2 && d > 28 && !leap)
    {
        return None;
    }
    let days = days_from_civil(y, mon, d);
    if wday.is_some_and(|w| (days + 4).rem_euclid(7) != w) {
        return None;
    }
    // A leap second counts as the second before it.
    let se = se.min(59);
    Some((days * 86400 + h * 3600 + mi * 60 + se) as f64)
}

/// The starting lifetime of a fetched object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lifetime {
    /// The object's birth: the fetch time minus the backend's `Age`.
    pub t_origin: f64,
    pub age: f64,
    pub ttl: f64,
    pub grace: f64,
    pub keep: f64,
}

fn cc_param(cc: &str, name: &str) -> Option<f64> {
    cc.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case(name) {
            v.trim().trim_matches('"').parse::<f64>().ok()
        } else {
            None
        }
    })
}

/// Varnish's RFC2616_Ttl: `s-maxage`, then `max-age`, then `Expires`
/// (relative to `Date`), else `default_ttl`; responses whose status is not
/// cacheable by default get a negative TTL. `stale-while-revalidate`
/// gives the grace.
pub fn rfc2616_ttl(
    status: u16,
    h: &Headers,
    now: f64,
    default_ttl: f64,
    default_grace: f64,
    default_keep: f64,
) -> Lifetime {
    let age = hdr_get(h, "age")
        .and_then(|a| a.trim().parse::<f64>().ok())
        .filter(|a| *a >= 0.0)
        .unwrap_or(0.0);
    let mut lt = Lifetime {
        t_origin: now - age,
        age,
        ttl: default_ttl,
        grace: default_grace,
        keep: default_keep,
    };
    let cc = hdr_get(h, "cache-control").unwrap_or("");
    match status {
        200 | 203 | 204 | 300 | 301 | 304 | 404 | 410 | 414 => {}
        302 | 307 => {
            // Only cacheable with explicit freshness.
            lt.ttl = 0.0;
        }
        _ => {
            // Not cacheable by default: no TTL, and the default grace.
            lt.ttl = 0.0;
            lt.t_origin = now;
            lt.age = 0.0;
            return lt;
        }
    }
    if let Some(swr) = cc_param(cc, "stale-while-revalidate") {
        lt.grace = swr.max(0.0);
    }
    if let Some(max) = cc_param(cc, "s-maxage").or_else(|| cc_param(cc, "max-age")) {
        lt.ttl = max.max(0.0);
        return lt;
    }
    if let Some(exp) = hdr_get(h, "expires") {
        let date = hdr_get(h, "date").and_then(parse_http_date).unwrap_or(now);
        lt.ttl = match parse_http_date(exp) {
            Some(e) if e > date => e - date,
            _ => 0.0,
        };
        // Expires is absolute: the Age does not shorten it again.
        lt.t_origin = now;
    }
    lt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[(&str, &str)]) -> Headers {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn dates_round_trip() {
        let t = 784111777.0;
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
    }

    #[test]
    fn dates_as_vtim_parse_reads_them() {
        let t = Some(784111777.0);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), t);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), t);
        assert_eq!(parse_http_date("1994-11-06T08:49:37"), t);
        assert_eq!(parse_http_date("  Sun, 06 Nov 1994 08:49:37 GMT  "), t);
        // Wrong case, wrong weekday, no such day, trailing junk.
        for bad in [
            "SUN, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 NOV 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT x",
            "Tue, 29 Feb 2022 00:00:00 GMT",
            "",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
        assert!(parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT").is_some());
    }

    #[test]
    fn ttl_rules() {
        let now = 1000.0;
        let lt = rfc2616_ttl(200, &h(&[]), now, 120.0, 10.0, 0.0);
        assert_eq!(lt.ttl, 120.0);
        let lt = rfc2616_ttl(
            200,
            &h(&[
                (
                    "Cache-Control",
                    "max-age=60, s-maxage=30, stale-while-revalidate=5",
                ),
                ("Age", "10"),
            ]),
            now,
            120.0,
            10.0,
            0.0,
        );
        assert_eq!((lt.ttl, lt.grace, lt.t_origin), (30.0, 5.0, 990.0));
        // Not cacheable by default: no TTL, the default grace (b00043).
        let lt = rfc2616_ttl(
            500,
            &h(&[("Cache-Control", "max-age=30, stale-while-revalidate=30")]),
            now,
            120.0,
            10.0,
            0.0,
        );
        assert_eq!((lt.ttl, lt.grace), (0.0, 10.0));
        let lt = rfc2616_ttl(
            200,
            &h(&[
                ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("Expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
            ]),
            now,
            120.0,
            10.0,
            0.0,
        );
        assert_eq!(lt.ttl, 60.0);
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    #[test]
    fn absurd_dates_do_not_panic() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 99999999999999999 08:49:37 GMT"),
            None
        );
        assert_eq!(parse_http_date("Sun, -5 Nov 1994 08:49:37 GMT"), None);
        assert!(http_date(1e300).contains("9999"));
        assert!(http_date(-1e300).starts_with("Mon, 01 Jan 0001"));
        assert!(http_date(f64::NAN).contains("1970"));
    }
}

/// The expiry task (Varnish's `exp_thread`): removes each object from the
/// cache when its ttl + grace + keep is over, so memory and `n_object`
/// follow lifetimes without waiting for a lookup; ends when the context
/// is gone. It looks at least every second, and when an insert wakes it.
pub async fn expiry(ctx: std::sync::Weak<crate::cache_req_fsm::Ctx>) {
    loop {
        let (wait, cache) = {
            let Some(ctx) = ctx.upgrade() else { return };
            let now = crate::vrt_ctx::now();
            let wait = match ctx.cache.expire_due(now) {
                Some(next) => (next - now).clamp(0.001, 1.0),
                None => 1.0,
            };
            (wait, ctx.cache.clone())
        };
        // An insert wakes it early (its `EXP_When`).
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs_f64(wait)) => {}
            _ = cache.expiry_wake.notified() => {}
        }
    }
}
