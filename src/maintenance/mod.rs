//! Scheduled maintenance windows: UTC intervals during which adaptive mode protects a
//! route from its first request, without waiting for a failure and without touching
//! shared data.
//!
//! # Config shape
//!
//! `maintenance_windows` is a list; each entry is either a one-off window
//! `{"start": "2026-12-01T01:00:00Z", "end": "2026-12-01T03:00:00Z"}` (RFC 3339 in
//! UTC, `Z` or `+00:00`; `end` after `start`; at most [`MAX_ONE_OFF_MS`] long) or a
//! daily window `{"daily": {"start": "23:00", "end": "01:00"}}` (`HH:MM` UTC; a window
//! whose end is not after its start crosses midnight). Windows are half-open: the start
//! instant is inside, the end instant is not. Overlapping windows simply unite.
//!
//! Two configs are refused because they are mistakes, not schedules: more than
//! [`MAX_WINDOWS`] entries (the check runs per request), and daily windows that
//! together cover all 24 hours (that is `mode: "dispatch"`, and it would make
//! [`MaintenanceSchedule::next_change_ms`] unbounded).
//!
//! Timestamps and times of day are read by the `utc` submodule (no date crate). Time
//! always comes from the caller (host clock, ms since the Unix epoch); nothing here reads
//! a clock.

mod utc;

pub use utc::parse_timestamp;

use crate::config::truncated;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use utc::{parse_time_of_day, write_timestamp, DAY_MS, HOUR_MS, MINUTE_MS};

/// The config field this module parses; error paths start with it.
pub const FIELD: &str = "maintenance_windows";
/// Most windows one schedule may hold ([`MaintenanceSchedule::contains`] scans them all).
pub const MAX_WINDOWS: usize = 64;
/// Longest one-off window: seven days, in ms.
pub const MAX_ONE_OFF_MS: u64 = 7 * DAY_MS;

/// One entry of `maintenance_windows` as written in the config, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// One-off start, RFC 3339 UTC.
    pub start: Option<String>,
    /// One-off end, RFC 3339 UTC.
    pub end: Option<String>,
    /// Daily recurring window instead of `start`/`end`.
    pub daily: Option<DailySpec>,
}

/// The `daily` object of a [`WindowSpec`], before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailySpec {
    /// Time of day the window opens, `HH:MM` UTC.
    pub start: Option<String>,
    /// Time of day the window closes, `HH:MM` UTC; not after `start` means the next day.
    pub end: Option<String>,
}

/// A maintenance-window entry that cannot be used: which field, which value, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceError {
    /// Path of the field, e.g. `maintenance_windows[1].end`.
    pub field: String,
    /// The offending value as JSON text (or a short description of it).
    pub value: String,
    /// What would have been accepted.
    pub allowed: String,
}

impl MaintenanceError {
    fn new(field: impl Into<String>, value: &str, allowed: impl Into<String>) -> Self {
        MaintenanceError {
            field: field.into(),
            value: json_text(value),
            allowed: allowed.into(),
        }
    }
}

impl fmt::Display for MaintenanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} is not allowed; {}",
            self.field, self.value, self.allowed
        )
    }
}

impl std::error::Error for MaintenanceError {}

/// A validated window. Instants are ms since the Unix epoch, UTC; times of day are ms
/// after midnight UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceWindow {
    /// `[start_ms, end_ms)`, once.
    Once { start_ms: u64, end_ms: u64 },
    /// Every day from `start_ms` to `end_ms` after midnight; crosses midnight when
    /// `end_ms < start_ms`.
    Daily { start_ms: u64, end_ms: u64 },
}

impl MaintenanceWindow {
    /// Is `now_ms` inside this window (start inclusive, end exclusive)?
    pub fn contains(&self, now_ms: u64) -> bool {
        match *self {
            MaintenanceWindow::Once { start_ms, end_ms } => start_ms <= now_ms && now_ms < end_ms,
            MaintenanceWindow::Daily { start_ms, end_ms } => {
                let time_of_day = now_ms % DAY_MS;
                if start_ms < end_ms {
                    start_ms <= time_of_day && time_of_day < end_ms
                } else {
                    time_of_day >= start_ms || time_of_day < end_ms
                }
            }
        }
    }

    /// The end of the occurrence that contains `now_ms` (call only when it does).
    fn end_after(&self, now_ms: u64) -> u64 {
        match *self {
            MaintenanceWindow::Once { end_ms, .. } => end_ms,
            MaintenanceWindow::Daily { start_ms, end_ms } => {
                let midnight = now_ms - now_ms % DAY_MS;
                if start_ms > end_ms && now_ms % DAY_MS >= start_ms {
                    midnight.saturating_add(DAY_MS + end_ms)
                } else {
                    midnight.saturating_add(end_ms)
                }
            }
        }
    }

    /// The first start strictly after `now_ms`, if there is one.
    fn start_after(&self, now_ms: u64) -> Option<u64> {
        match *self {
            MaintenanceWindow::Once { start_ms, .. } => (start_ms > now_ms).then_some(start_ms),
            MaintenanceWindow::Daily { start_ms, .. } => {
                let today = (now_ms - now_ms % DAY_MS).saturating_add(start_ms);
                Some(if today > now_ms {
                    today
                } else {
                    today.saturating_add(DAY_MS)
                })
            }
        }
    }
}

impl fmt::Display for MaintenanceWindow {
    /// `2026-12-01T01:00:00Z/2026-12-01T03:00:00Z` or `daily 23:00/01:00 UTC`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MaintenanceWindow::Once { start_ms, end_ms } => {
                write_timestamp(f, start_ms)?;
                f.write_str("/")?;
                write_timestamp(f, end_ms)
            }
            MaintenanceWindow::Daily { start_ms, end_ms } => write!(
                f,
                "daily {:02}:{:02}/{:02}:{:02} UTC",
                start_ms / HOUR_MS,
                start_ms % HOUR_MS / MINUTE_MS,
                end_ms / HOUR_MS,
                end_ms % HOUR_MS / MINUTE_MS
            ),
        }
    }
}

/// The validated `maintenance_windows` of one filter configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<WindowSpec>")]
pub struct MaintenanceSchedule {
    windows: Vec<MaintenanceWindow>,
}

impl MaintenanceSchedule {
    /// Parses the JSON value of `maintenance_windows`; errors name the entry's index.
    ///
    /// Preferred over plain serde for config parsing: a serde error inside an entry
    /// (an unknown or mistyped field) carries no path, this one does.
    pub fn from_json(value: &Value) -> Result<Self, MaintenanceError> {
        let Some(items) = value.as_array() else {
            return Err(MaintenanceError {
                field: FIELD.to_string(),
                value: truncated(value.to_string()),
                allowed: "a list of windows, e.g. [{\"start\":\"2026-12-01T01:00:00Z\",\"end\":\"2026-12-01T03:00:00Z\"},{\"daily\":{\"start\":\"23:00\",\"end\":\"01:00\"}}]".to_string(),
            });
        };
        let mut specs = Vec::with_capacity(items.len().min(MAX_WINDOWS + 1));
        for (index, item) in items.iter().enumerate() {
            if index >= MAX_WINDOWS {
                return Err(too_many(items.len()));
            }
            let spec = WindowSpec::deserialize(item).map_err(|error| MaintenanceError {
                field: format!("{FIELD}[{index}]"),
                value: truncated(item.to_string()),
                allowed: format!(
                    "{error}; expected {{\"start\":..,\"end\":..}} or {{\"daily\":{{\"start\":\"HH:MM\",\"end\":\"HH:MM\"}}}}"
                ),
            })?;
            specs.push(spec);
        }
        Self::try_from(specs)
    }

    /// True when there are no windows (the check is then free).
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The windows, in config order.
    pub fn windows(&self) -> &[MaintenanceWindow] {
        &self.windows
    }

    /// Is `now_ms` inside any window?
    pub fn contains(&self, now_ms: u64) -> bool {
        self.window_at(now_ms).is_some()
    }

    /// The first window (in config order) containing `now_ms`, for logs.
    pub fn window_at(&self, now_ms: u64) -> Option<&MaintenanceWindow> {
        self.windows.iter().find(|w| w.contains(now_ms))
    }

    /// The first instant after `now_ms` at which [`Self::contains`] changes its answer,
    /// or `None` when it never will (no windows left ahead).
    ///
    /// Overlapping and adjacent windows count as one: the answer is where the union ends.
    pub fn next_change_ms(&self, now_ms: u64) -> Option<u64> {
        if !self.contains(now_ms) {
            return self
                .windows
                .iter()
                .filter_map(|w| w.start_after(now_ms))
                .min();
        }
        // Walk through the union: jump to the furthest end among the windows covering t
        // until nothing covers t. A one-off window gives the furthest end at most once;
        // between two such jumps the daily windows alone cover less than a day (a full
        // day is refused at parse time), so at most one jump per daily window. The
        // bound below is therefore never reached; it only guarantees termination.
        let dailies = self
            .windows
            .iter()
            .filter(|w| matches!(w, MaintenanceWindow::Daily { .. }))
            .count();
        let once = self.windows.len() - dailies;
        let max_jumps = once + (once + 1) * dailies + 1;
        let mut t = now_ms;
        for _ in 0..max_jumps {
            let furthest = self
                .windows
                .iter()
                .filter(|w| w.contains(t))
                .map(|w| w.end_after(t))
                .max();
            match furthest {
                None => return Some(t),
                Some(end) if end > t => t = end,
                // Only at the very end of u64 time, where ends saturate.
                Some(_) => return None,
            }
        }
        None
    }
}

impl TryFrom<Vec<WindowSpec>> for MaintenanceSchedule {
    type Error = MaintenanceError;

    fn try_from(specs: Vec<WindowSpec>) -> Result<Self, Self::Error> {
        if specs.len() > MAX_WINDOWS {
            return Err(too_many(specs.len()));
        }
        let windows = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| window(index, spec))
            .collect::<Result<Vec<_>, _>>()?;
        if daily_windows_cover_the_day(&windows) {
            return Err(MaintenanceError {
                field: FIELD.to_string(),
                value: "the daily windows".to_string(),
                allowed: "together they cover all 24 hours; to protect all the time use mode \"dispatch\"".to_string(),
            });
        }
        Ok(MaintenanceSchedule { windows })
    }
}

fn too_many(count: usize) -> MaintenanceError {
    MaintenanceError {
        field: FIELD.to_string(),
        value: format!("{count} windows"),
        allowed: format!("at most {MAX_WINDOWS} windows"),
    }
}

/// Validates one entry; `index` is its position in the list, for the error path.
fn window(index: usize, spec: &WindowSpec) -> Result<MaintenanceWindow, MaintenanceError> {
    let path = format!("{FIELD}[{index}]");
    match (&spec.start, &spec.end, &spec.daily) {
        (None, None, Some(daily)) => {
            let start = required(&path, "daily.start", daily.start.as_deref())?;
            let end = required(&path, "daily.end", daily.end.as_deref())?;
            let start_ms = parse_time_of_day(start)
                .map_err(|why| MaintenanceError::new(format!("{path}.daily.start"), start, why))?;
            let end_ms = parse_time_of_day(end)
                .map_err(|why| MaintenanceError::new(format!("{path}.daily.end"), end, why))?;
            if start_ms == end_ms {
                return Err(MaintenanceError::new(
                    format!("{path}.daily.end"),
                    end,
                    "must differ from daily.start (an empty or 24-hour window is ambiguous)",
                ));
            }
            Ok(MaintenanceWindow::Daily { start_ms, end_ms })
        }
        (start, end, None) => {
            let start = required(&path, "start", start.as_deref())?;
            let end = required(&path, "end", end.as_deref())?;
            let start_ms = parse_timestamp(start)
                .map_err(|why| MaintenanceError::new(format!("{path}.start"), start, why))?;
            let end_ms = parse_timestamp(end)
                .map_err(|why| MaintenanceError::new(format!("{path}.end"), end, why))?;
            if end_ms <= start_ms {
                return Err(MaintenanceError::new(
                    format!("{path}.end"),
                    end,
                    format!("must be after start ({start})"),
                ));
            }
            if end_ms - start_ms > MAX_ONE_OFF_MS {
                return Err(MaintenanceError::new(
                    format!("{path}.end"),
                    end,
                    format!(
                        "a one-off window may last at most 7 days after start ({start}); use several windows or a daily one"
                    ),
                ));
            }
            Ok(MaintenanceWindow::Once { start_ms, end_ms })
        }
        (_, _, Some(_)) => Err(MaintenanceError {
            field: path,
            value: "start/end together with daily".to_string(),
            allowed:
                "either a one-off window {\"start\":..,\"end\":..} or {\"daily\":{..}}, not both"
                    .to_string(),
        }),
    }
}

fn required<'a>(
    path: &str,
    name: &str,
    value: Option<&'a str>,
) -> Result<&'a str, MaintenanceError> {
    value.ok_or_else(|| MaintenanceError {
        field: format!("{path}.{name}"),
        value: "missing".to_string(),
        allowed: if name.starts_with("daily") {
            "required, a time of day \"HH:MM\" in UTC".to_string()
        } else {
            "required, an RFC 3339 UTC timestamp like \"2026-12-01T01:00:00Z\"".to_string()
        },
    })
}

/// Do the daily windows, merged, cover every time of day?
fn daily_windows_cover_the_day(windows: &[MaintenanceWindow]) -> bool {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for window in windows {
        if let MaintenanceWindow::Daily { start_ms, end_ms } = *window {
            if start_ms < end_ms {
                spans.push((start_ms, end_ms));
            } else {
                spans.push((start_ms, DAY_MS));
                spans.push((0, end_ms));
            }
        }
    }
    spans.sort_unstable();
    let mut covered_to = 0;
    for (start, end) in spans {
        if start > covered_to {
            return false;
        }
        covered_to = covered_to.max(end);
    }
    covered_to >= DAY_MS
}

/// A string as JSON text, cut to a loggable length.
fn json_text(value: &str) -> String {
    truncated(Value::String(value.to_string()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// ms of an RFC 3339 timestamp that must parse.
    fn at(text: &str) -> u64 {
        parse_timestamp(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn schedule(value: Value) -> MaintenanceSchedule {
        MaintenanceSchedule::from_json(&value).unwrap_or_else(|e| panic!("{value}: {e}"))
    }

    fn error(value: Value) -> MaintenanceError {
        match MaintenanceSchedule::from_json(&value) {
            Ok(s) => panic!("{value} was accepted: {s:?}"),
            Err(e) => e,
        }
    }

    // --- windows --------------------------------------------------------------------

    #[test]
    fn one_off_window_boundaries() {
        let s = schedule(json!([
            {"start": "2026-12-01T01:00:00Z", "end": "2026-12-01T03:00:00Z"}
        ]));
        let start = at("2026-12-01T01:00:00Z");
        let end = at("2026-12-01T03:00:00Z");
        for (now, inside) in [
            (0, false),
            (start - 1, false),
            (start, true),
            (start + 1, true),
            (end - 1, true),
            (end, false),
            (end + DAY_MS, false),
            (u64::MAX, false),
        ] {
            assert_eq!(s.contains(now), inside, "now = {now}");
        }
        assert_eq!(s.next_change_ms(0), Some(start));
        assert_eq!(s.next_change_ms(start - 1), Some(start));
        assert_eq!(s.next_change_ms(start), Some(end));
        assert_eq!(s.next_change_ms(end - 1), Some(end));
        assert_eq!(s.next_change_ms(end), None, "nothing ahead");
    }

    #[test]
    fn daily_window_boundaries() {
        let s = schedule(json!([{"daily": {"start": "01:00", "end": "03:30"}}]));
        let day = at("2026-07-15T00:00:00Z");
        let open = day + HOUR_MS;
        let close = day + 3 * HOUR_MS + 30 * MINUTE_MS;
        for (now, inside) in [
            (day, false),
            (open - 1, false),
            (open, true),
            (close - 1, true),
            (close, false),
            (open + DAY_MS, true),
            (close + 364 * DAY_MS, false),
        ] {
            assert_eq!(s.contains(now), inside, "now = {now}");
        }
        assert_eq!(s.next_change_ms(day), Some(open));
        assert_eq!(s.next_change_ms(open), Some(close));
        assert_eq!(s.next_change_ms(close), Some(open + DAY_MS));
        assert_eq!(s.next_change_ms(open - 1), Some(open));
    }

    #[test]
    fn daily_window_across_midnight() {
        let s = schedule(json!([{"daily": {"start": "23:00", "end": "01:00"}}]));
        // Across a year end and a leap day: the daily form ignores dates.
        for midnight in [at("2027-01-01T00:00:00Z"), at("2028-02-29T00:00:00Z")] {
            for (now, inside) in [
                (midnight - HOUR_MS - 1, false),
                (midnight - HOUR_MS, true),
                (midnight - 1, true),
                (midnight, true),
                (midnight + HOUR_MS - 1, true),
                (midnight + HOUR_MS, false),
                (midnight + 12 * HOUR_MS, false),
            ] {
                assert_eq!(s.contains(now), inside, "now = {now}");
            }
            assert_eq!(
                s.next_change_ms(midnight - HOUR_MS),
                Some(midnight + HOUR_MS)
            );
            assert_eq!(s.next_change_ms(midnight), Some(midnight + HOUR_MS));
            assert_eq!(
                s.next_change_ms(midnight + HOUR_MS),
                Some(midnight + DAY_MS - HOUR_MS)
            );
        }
        // The first instants after the epoch are in the window's morning part.
        assert!(s.contains(0));
        assert_eq!(s.next_change_ms(0), Some(HOUR_MS));
    }

    #[test]
    fn overlapping_and_adjacent_windows_unite() {
        let day = at("2026-12-01T00:00:00Z");
        let s = schedule(json!([
            {"daily": {"start": "01:00", "end": "02:00"}},
            {"daily": {"start": "02:00", "end": "03:00"}},
            {"start": "2026-12-01T02:30:00Z", "end": "2026-12-03T00:30:00Z"},
            {"daily": {"start": "00:00", "end": "01:30"}},
        ]));
        // 00:00 → 03:00 by the three dailies, then the one-off to Dec 3 00:30, where
        // the daily 00:00–01:30 continues, then 01:00–03:00 on Dec 3.
        assert_eq!(s.next_change_ms(day), Some(day + 2 * DAY_MS + 3 * HOUR_MS));
        assert_eq!(
            s.next_change_ms(day + 3 * HOUR_MS),
            Some(day + 2 * DAY_MS + 3 * HOUR_MS)
        );
        // After the one-off: calm 03:00 → 24:00 every day.
        let later = day + 10 * DAY_MS;
        assert_eq!(s.next_change_ms(later + 3 * HOUR_MS), Some(later + DAY_MS));
        assert_eq!(
            s.next_change_ms(later + DAY_MS),
            Some(later + DAY_MS + 3 * HOUR_MS)
        );
        assert_eq!(
            s.window_at(day + 4 * HOUR_MS),
            Some(&MaintenanceWindow::Once {
                start_ms: at("2026-12-01T02:30:00Z"),
                end_ms: at("2026-12-03T00:30:00Z"),
            })
        );
    }

    #[test]
    fn next_change_agrees_with_contains_minute_by_minute() {
        let s = schedule(json!([
            {"daily": {"start": "22:00", "end": "02:00"}},
            {"daily": {"start": "01:30", "end": "04:00"}},
            {"daily": {"start": "12:00", "end": "12:01"}},
            {"start": "2026-03-01T03:00:00Z", "end": "2026-03-02T01:00:00Z"},
            {"start": "2026-03-04T10:00:00.500Z", "end": "2026-03-04T10:00:01Z"},
        ]));
        let from = at("2026-02-28T00:00:00Z");
        let mut now = from;
        while now < from + 7 * DAY_MS {
            let change = s.next_change_ms(now).unwrap();
            assert!(change > now);
            // Same answer up to the change (checked at its edges), different at it.
            assert_eq!(s.contains(change - 1), s.contains(now), "now = {now}");
            assert_ne!(s.contains(change), s.contains(now), "now = {now}");
            now += 7 * MINUTE_MS + 500;
        }
    }

    #[test]
    fn an_empty_schedule_never_protects() {
        let s = schedule(json!([]));
        assert!(s.is_empty());
        assert!(!s.contains(at("2026-12-01T01:00:00Z")));
        assert_eq!(s.next_change_ms(0), None);
        assert_eq!(MaintenanceSchedule::default(), s);
    }

    #[test]
    fn windows_display_for_logs_and_round_trip() {
        let s = schedule(json!([
            {"start": "2024-02-29T23:00:00Z", "end": "2024-03-01T01:30:00.250Z"},
            {"daily": {"start": "23:00", "end": "01:00"}},
        ]));
        let shown: Vec<String> = s.windows().iter().map(|w| w.to_string()).collect();
        assert_eq!(
            shown,
            [
                "2024-02-29T23:00:00Z/2024-03-01T01:30:00.250Z",
                "daily 23:00/01:00 UTC"
            ]
        );
        let (start, end) = shown[0].split_once('/').unwrap();
        assert_eq!(
            MaintenanceSchedule::from_json(&json!([{"start": start, "end": end}]))
                .unwrap()
                .windows()[0],
            s.windows()[0]
        );
    }

    // --- config parsing -------------------------------------------------------------

    #[test]
    fn serde_and_from_json_build_the_same_schedule() {
        let value = json!([
            {"start": "2026-12-01T01:00:00Z", "end": "2026-12-01T03:00:00Z"},
            {"daily": {"start": "01:00", "end": "03:30"}},
        ]);
        let via_serde: MaintenanceSchedule = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(via_serde, schedule(value));
        assert_eq!(via_serde.windows().len(), 2);
        // serde rejects through the same validation.
        let err = serde_json::from_value::<MaintenanceSchedule>(json!([
            {"start": "2026-12-01T03:00:00Z", "end": "2026-12-01T01:00:00Z"}
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("maintenance_windows[0].end"),
            "{err}"
        );
    }

    #[test]
    fn bad_windows_name_the_field_and_the_value() {
        let week_and_a_bit =
            json!([{"start": "2026-12-01T00:00:00Z", "end": "2026-12-08T00:00:01Z"}]);
        let too_many: Vec<Value> = (0..=MAX_WINDOWS)
            .map(|_| json!({"daily": {"start": "01:00", "end": "02:00"}}))
            .collect();
        let cases = [
            (json!({"start": "x"}), "maintenance_windows: {\"start\":\"x\"} is not allowed; a list"),
            (json!("01:00-03:00"), "maintenance_windows: \"01:00-03:00\" is not allowed; a list"),
            (json!([{"start": "2026-12-01T01:00:00Z"}]), "maintenance_windows[0].end: missing"),
            (json!([{"end": "2026-12-01T01:00:00Z"}]), "maintenance_windows[0].start: missing"),
            (json!([{}]), "maintenance_windows[0].start: missing"),
            (json!([{"daily": {"start": "01:00"}}]), "maintenance_windows[0].daily.end: missing"),
            (
                json!([{"daily": {"start": "01:00", "end": "02:00"}}, {"daily": {"start": "1:00", "end": "02:00"}}]),
                "maintenance_windows[1].daily.start: \"1:00\" is not allowed; expected a time of day",
            ),
            (
                json!([{"daily": {"start": "03:00", "end": "03:00"}}]),
                "maintenance_windows[0].daily.end: \"03:00\" is not allowed; must differ",
            ),
            (
                json!([{"start": "2026-12-01T01:00:00Z", "end": "2026-12-01T01:00:00Z"}]),
                "maintenance_windows[0].end: \"2026-12-01T01:00:00Z\" is not allowed; must be after start",
            ),
            (
                json!([{"start": "2026-12-01T03:00:00+02:00", "end": "2026-12-01T05:00:00Z"}]),
                "maintenance_windows[0].start: \"2026-12-01T03:00:00+02:00\" is not allowed; only UTC",
            ),
            (week_and_a_bit, "maintenance_windows[0].end: \"2026-12-08T00:00:01Z\" is not allowed; a one-off window may last at most 7 days"),
            (
                json!([{"start": "2026-12-01T01:00:00Z", "end": "2026-12-01T03:00:00Z", "daily": {"start": "01:00", "end": "02:00"}}]),
                "maintenance_windows[0]: start/end together with daily is not allowed; either",
            ),
            (
                json!([{"start": "2026-12-01T01:00:00Z", "stop": "2026-12-01T03:00:00Z"}]),
                "maintenance_windows[0]: {\"start\":\"2026-12-01T01:00:00Z\",\"stop\":\"2026-12-01T03:00:00Z\"} is not allowed; unknown field `stop`",
            ),
            (
                json!([{"daily": {"start": "01:00", "end": "02:00", "tz": "Asia/Shanghai"}}]),
                "maintenance_windows[0]: {\"daily\":{\"end\":\"02:00\",\"start\":\"01:00\",\"tz\":\"Asia/Shanghai\"}} is not allowed; unknown field `tz`",
            ),
            (
                json!([{"start": 1796086800000u64, "end": "2026-12-01T03:00:00Z"}]),
                "maintenance_windows[0]: {\"end\":\"2026-12-01T03:00:00Z\",\"start\":1796086800000} is not allowed; invalid type: integer",
            ),
            (Value::Array(too_many), "maintenance_windows: 65 windows is not allowed; at most 64"),
            (
                json!([{"daily": {"start": "00:00", "end": "12:00"}}, {"daily": {"start": "11:00", "end": "00:00"}}]),
                "maintenance_windows: the daily windows is not allowed; together they cover all 24 hours",
            ),
        ];
        for (value, message) in cases {
            let err = error(value.clone()).to_string();
            assert!(
                err.starts_with(message),
                "{value}\n  got: {err}\n want: {message}"
            );
        }
    }

    #[test]
    fn daily_windows_that_leave_a_gap_are_accepted() {
        // 00:00–12:00 and 12:01–00:00 leave one minute: a valid (if odd) schedule.
        let s = schedule(json!([
            {"daily": {"start": "00:00", "end": "12:00"}},
            {"daily": {"start": "12:01", "end": "00:00"}},
        ]));
        let noon = at("2026-06-01T12:00:00Z");
        assert!(!s.contains(noon));
        assert_eq!(s.next_change_ms(noon), Some(noon + MINUTE_MS));
        assert_eq!(s.next_change_ms(noon + MINUTE_MS), Some(noon + DAY_MS));
    }

    #[test]
    fn long_values_in_errors_are_cut() {
        let long = format!("2026-12-01T01:00:00Z{}", "x".repeat(500));
        let err = error(json!([{"start": long, "end": "2026-12-01T03:00:00Z"}]));
        assert!(err.value.len() <= 80, "{}", err.value);
        assert!(err.value.ends_with("..."));
    }

    #[test]
    fn arbitrary_instants_never_panic() {
        let s = schedule(json!([
            {"daily": {"start": "23:00", "end": "01:00"}},
            {"start": "9999-12-25T00:00:00Z", "end": "9999-12-31T23:59:59Z"},
        ]));
        for now in [
            0,
            1,
            DAY_MS - 1,
            u64::MAX / 2,
            u64::MAX - DAY_MS,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let _ = s.contains(now);
            let _ = s.next_change_ms(now);
            let _ = s.window_at(now);
        }
        let far = MaintenanceWindow::Once {
            start_ms: u64::MAX - 1,
            end_ms: u64::MAX,
        };
        assert!(far.to_string().starts_with('@'));
    }
}
