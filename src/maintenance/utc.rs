//! UTC instants and times of day as the config writes them: RFC 3339 timestamps and `HH:MM`,
//! to and from ms (since the Unix epoch, or after midnight), with the calendar arithmetic
//! they need and nothing else (no date crate: every dependency ends up in the `.wasm`).

use std::fmt;

pub(super) const DAY_MS: u64 = 86_400_000;
pub(super) const HOUR_MS: u64 = 3_600_000;
pub(super) const MINUTE_MS: u64 = 60_000;
/// The latest instant accepted in a timestamp's year field (four digits).
const MAX_YEAR: u64 = 9999;

/// `HH:MM`, 00:00 to 23:59, to ms after midnight.
pub(super) fn parse_time_of_day(text: &str) -> Result<u64, String> {
    const SHAPE: &str = "expected a time of day \"HH:MM\" in UTC, e.g. \"01:00\" or \"23:30\"";
    let b = text.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return Err(SHAPE.to_string());
    }
    let (Some(hour), Some(minute)) = (number(b, 0, 2), number(b, 3, 5)) else {
        return Err(SHAPE.to_string());
    };
    if hour == 24 && minute == 0 {
        return Err("24:00 is not a time of day; write midnight as \"00:00\"".to_string());
    }
    if hour > 23 {
        return Err(format!("hour {hour:02} is out of range 00 to 23"));
    }
    if minute > 59 {
        return Err(format!("minute {minute:02} is out of range 00 to 59"));
    }
    Ok(hour * HOUR_MS + minute * MINUTE_MS)
}

/// RFC 3339 in UTC (`YYYY-MM-DDTHH:MM:SS[.fraction]` then `Z` or `+00:00`) to ms since
/// the Unix epoch. Fractions finer than a millisecond are truncated.
pub fn parse_timestamp(text: &str) -> Result<u64, String> {
    const SHAPE: &str = "expected an RFC 3339 timestamp in UTC like \"2026-12-01T01:00:00Z\"";
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(SHAPE.to_string());
    }
    let fields = (
        number(b, 0, 4),
        number(b, 5, 7),
        number(b, 8, 10),
        number(b, 11, 13),
        number(b, 14, 16),
        number(b, 17, 19),
    );
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = fields
    else {
        return Err(SHAPE.to_string());
    };

    // Optional fraction, then the offset.
    let mut at = 19;
    let mut fraction_ms = 0;
    if b[at] == b'.' {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return Err(format!("{SHAPE}; a fraction of a second has 1 to 9 digits"));
        }
        for (i, digit) in b[at + 1..at + 1 + digits].iter().take(3).enumerate() {
            fraction_ms += u64::from(digit - b'0') * [100, 10, 1][i];
        }
        at += 1 + digits;
    }
    match &b[at..] {
        b"Z" | b"z" | b"+00:00" => {}
        b"-00:00" => {
            return Err(
                "-00:00 means \"offset unknown\" in RFC 3339; end a UTC time with Z or +00:00"
                    .to_string(),
            )
        }
        [b'+' | b'-', ..] => {
            return Err(
                "only UTC is accepted (Z or +00:00): convert the local time to UTC".to_string(),
            )
        }
        _ => return Err(format!("{SHAPE}; it must end with Z or +00:00")),
    }

    if year < 1970 {
        return Err("years before 1970 are not accepted".to_string());
    }
    if !(1..=12).contains(&month) {
        return Err(format!("month {month:02} is out of range 01 to 12"));
    }
    let days_in_month = days_in_month(year, month);
    if day < 1 || day > days_in_month {
        return Err(format!(
            "day {day:02} does not exist: {year:04}-{month:02} has {days_in_month} days"
        ));
    }
    if hour > 23 {
        return Err(format!("hour {hour:02} is out of range 00 to 23"));
    }
    if minute > 59 {
        return Err(format!("minute {minute:02} is out of range 00 to 59"));
    }
    if second > 59 {
        return Err(format!(
            "second {second:02} is out of range 00 to 59 (leap seconds are not accepted)"
        ));
    }
    let days = days_from_civil(year, month, day);
    Ok(days * DAY_MS + hour * HOUR_MS + minute * MINUTE_MS + second * 1000 + fraction_ms)
}

/// The ASCII decimal number in `b[from..to]`, or `None` if any byte is not a digit.
fn number(b: &[u8], from: usize, to: usize) -> Option<u64> {
    let digits = b.get(from..to)?;
    digits.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date (Howard Hinnant's `days_from_civil`, for
/// years ≥ 1970 so that everything stays unsigned). The year starts in March so that
/// February's length only matters at the end of the "year".
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400; // 0..=399
    let month_from_march = (month + 9) % 12; // March = 0
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1; // 0..=365
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719468 = days from 0000-03-01 to 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day) of a day number.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097; // 0..=146096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes `ms` as RFC 3339 UTC, with milliseconds only when there are some.
pub(super) fn write_timestamp(f: &mut fmt::Formatter<'_>, ms: u64) -> fmt::Result {
    let (year, month, day) = civil_from_days(ms / DAY_MS);
    if year > MAX_YEAR {
        return write!(f, "@{ms}ms");
    }
    let in_day = ms % DAY_MS;
    write!(
        f,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        in_day / HOUR_MS,
        in_day % HOUR_MS / MINUTE_MS,
        in_day % MINUTE_MS / 1000
    )?;
    if !ms.is_multiple_of(1000) {
        write!(f, ".{:03}", ms % 1000)?;
    }
    f.write_str("Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ms of an RFC 3339 timestamp that must parse.
    fn at(text: &str) -> u64 {
        parse_timestamp(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn timestamps_match_the_unix_clock() {
        // Expected values from `date -u -d <timestamp> +%s`.
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T12:34:56Z", 951_827_696),
            ("2000-03-01T00:00:00Z", 951_868_800),
            ("2024-02-29T23:59:59Z", 1_709_251_199),
            ("2024-03-01T00:00:00Z", 1_709_251_200),
            ("2026-12-01T01:00:00Z", 1_796_086_800),
            ("2026-12-01T03:00:00+00:00", 1_796_094_000),
            ("2038-01-19T03:14:08Z", 2_147_483_648),
            ("2099-12-31T23:59:59Z", 4_102_444_799),
            ("2100-03-01T00:00:00Z", 4_107_542_400),
            ("9999-12-31T23:59:59Z", 253_402_300_799),
            ("2026-12-01t01:00:00z", 1_796_086_800),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse_timestamp(text), Ok(seconds * 1000), "{text}");
        }
    }

    #[test]
    fn fractions_keep_milliseconds_and_truncate_the_rest() {
        let base = at("2026-12-01T01:00:00Z");
        for (text, plus) in [
            ("2026-12-01T01:00:00.5Z", 500),
            ("2026-12-01T01:00:00.25Z", 250),
            ("2026-12-01T01:00:00.123Z", 123),
            ("2026-12-01T01:00:00.123999999+00:00", 123),
            ("2026-12-01T01:00:00.000Z", 0),
        ] {
            assert_eq!(parse_timestamp(text), Ok(base + plus), "{text}");
        }
    }

    #[test]
    fn days_from_civil_agrees_with_counting_days_one_by_one() {
        let mut days = 0;
        for year in 1970..=2400 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(
                        days_from_civil(year, month, day),
                        days,
                        "{year}-{month}-{day}"
                    );
                    assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn leap_years_follow_the_gregorian_rules() {
        for (year, leap) in [
            (2000, true),
            (2024, true),
            (2026, false),
            (2100, false),
            (2400, true),
        ] {
            let feb_29 = format!("{year}-02-29T00:00:00Z");
            assert_eq!(parse_timestamp(&feb_29).is_ok(), leap, "{feb_29}");
        }
        let err = parse_timestamp("2026-02-29T00:00:00Z").unwrap_err();
        assert!(err.contains("2026-02 has 28 days"), "{err}");
        // Leap day to the next day is exactly 24 h.
        assert_eq!(
            at("2024-03-01T00:00:00Z") - at("2024-02-29T00:00:00Z"),
            DAY_MS
        );
    }

    #[test]
    fn bad_timestamps_say_what_is_wrong() {
        let cases = [
            ("", "RFC 3339"),
            ("2026-12-01", "RFC 3339"),
            ("2026-12-01 01:00:00Z", "RFC 3339"),
            ("2026-12-01T01:00Z", "RFC 3339"),
            ("2026-12-01T01:00:00", "RFC 3339"),
            ("26-12-01T01:00:00Z", "RFC 3339"),
            ("2026-12-01T01:00:00ZZ", "must end with Z"),
            ("2026-12-01T01:00:00.Z", "1 to 9 digits"),
            ("2026-12-01T01:00:00.1234567890Z", "1 to 9 digits"),
            ("2026-12-01T03:00:00+02:00", "only UTC"),
            ("2026-12-01T01:00:00-05:00", "only UTC"),
            ("2026-12-01T01:00:00-00:00", "offset unknown"),
            ("2026-12-0１T01:00:00Z", "RFC 3339"),
            ("+026-12-01T01:00:00Z", "RFC 3339"),
            ("1969-12-31T23:59:59Z", "before 1970"),
            ("2026-00-01T00:00:00Z", "month 00"),
            ("2026-13-01T00:00:00Z", "month 13"),
            ("2026-04-31T00:00:00Z", "2026-04 has 30 days"),
            ("2026-01-00T00:00:00Z", "day 00"),
            ("2026-12-01T24:00:00Z", "hour 24"),
            ("2026-12-01T01:60:00Z", "minute 60"),
            ("2016-12-31T23:59:60Z", "leap seconds"),
        ];
        for (text, reason) in cases {
            match parse_timestamp(text) {
                Ok(ms) => panic!("{text:?} parsed as {ms}"),
                Err(why) => assert!(why.contains(reason), "{text:?}: {why}"),
            }
        }
    }

    #[test]
    fn times_of_day() {
        assert_eq!(parse_time_of_day("00:00"), Ok(0));
        assert_eq!(parse_time_of_day("01:00"), Ok(HOUR_MS));
        assert_eq!(parse_time_of_day("03:30"), Ok(3 * HOUR_MS + 30 * MINUTE_MS));
        assert_eq!(parse_time_of_day("23:59"), Ok(DAY_MS - MINUTE_MS));
        for (text, reason) in [
            ("1:00", "HH:MM"),
            ("01:00:00", "HH:MM"),
            ("0100", "HH:MM"),
            ("ab:cd", "HH:MM"),
            ("24:00", "write midnight as \"00:00\""),
            ("25:00", "hour 25"),
            ("12:60", "minute 60"),
        ] {
            let why = parse_time_of_day(text).unwrap_err();
            assert!(why.contains(reason), "{text:?}: {why}");
        }
    }
}
