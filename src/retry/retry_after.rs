//! `Retry-After` (RFC 9110 §10.2.3) in delay-seconds or HTTP-date form, as milliseconds.

/// The statuses whose `Retry-After` the filter honours (429 Too Many Requests, 503).
pub const HONOURED_STATUSES: [u16; 2] = [429, 503];

/// Whether a `Retry-After` on this status is honoured.
pub fn honoured_on(status: u16) -> bool {
    HONOURED_STATUSES.contains(&status)
}

/// The delay a `Retry-After` value asks for, in ms from `now_unix_ms`; `None` if unparsable.
/// A date in the past means 0.
pub fn delay_ms(value: &str, now_unix_ms: u64) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Very long digit strings saturate rather than fail: "wait forever" stays "too long".
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(secs.saturating_mul(1000));
    }
    let at = http_date_unix_secs(v)?;
    Some(at.saturating_mul(1000).saturating_sub(now_unix_ms))
}

/// Parses IMF-fixdate, RFC 850 and asctime dates (all three MUST be accepted) to Unix seconds.
pub fn http_date_unix_secs(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        [wd, d, m, y, t, "GMT"] if wd.ends_with(',') => (*d, *m, parse_num(y)?, *t),
        // Sunday, 06-Nov-94 08:49:37 GMT
        [wd, dmy, t, "GMT"] if wd.ends_with(',') => {
            let mut it = dmy.split('-');
            let (d, m, y) = (it.next()?, it.next()?, parse_num(it.next()?)?);
            if it.next().is_some() {
                return None;
            }
            // RFC 9110: a two-digit year more than 50 years ahead is in the past century.
            let y = if y < 100 {
                if y < 70 {
                    2000 + y
                } else {
                    1900 + y
                }
            } else {
                y
            };
            (d, m, y, *t)
        }
        // Sun Nov  6 08:49:37 1994
        [_wd, m, d, t, y] => (*d, *m, parse_num(y)?, *t),
        _ => return None,
    };
    let day = parse_num(day)?;
    let month = month_number(month)?;
    let mut hms = time.split(':');
    let (h, mi, se) = (
        parse_num(hms.next()?)?,
        parse_num(hms.next()?)?,
        parse_num(hms.next()?)?,
    );
    if hms.next().is_some() || h > 23 || mi > 59 || se > 60 || !(1..=31).contains(&day) {
        return None;
    }
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let days = days_from_civil(year as i64, month, day as i64);
    if days < 0 {
        return None;
    }
    Some(days as u64 * 86_400 + h * 3600 + mi * 60 + se)
}

fn parse_num(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_number(m: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|x| *x == m).map(|i| i as i64 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn seconds_form() {
        assert_eq!(delay_ms("120", 0), Some(120_000));
        assert_eq!(delay_ms(" 0 ", 5), Some(0));
        assert_eq!(delay_ms("99999999999999999999999", 0), Some(u64::MAX));
        assert_eq!(delay_ms("-1", 0), None);
        assert_eq!(delay_ms("1.5", 0), None);
        assert_eq!(delay_ms("", 0), None);
    }

    #[test]
    fn all_three_date_forms() {
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(http_date_unix_secs(s), Some(T), "{s}");
        }
    }

    #[test]
    fn date_relative_to_now() {
        let now = (T - 3) * 1000 + 500;
        assert_eq!(delay_ms("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(2_500));
        assert_eq!(
            delay_ms("Sun, 06 Nov 1994 08:49:37 GMT", T * 1000 + 10),
            Some(0)
        );
    }

    #[test]
    fn garbage_is_none() {
        for s in [
            "tomorrow",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 PST",
        ] {
            assert_eq!(delay_ms(s, 0), None, "{s}");
        }
    }

    #[test]
    fn leap_years() {
        assert_eq!(
            http_date_unix_secs("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800)
        );
        assert_eq!(
            http_date_unix_secs("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(0)
        );
    }
}
