//! `backoff`: the delay between attempts, exponential (full or equal jitter) or fixed.

use super::read::{int_in, object, one_of, string};
use super::ConfigError;
use serde_json::Value;

/// Delay between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Before retry `n`, a wait drawn below the ceiling `min(max, base * 2^(n-1))` as
    /// `jitter` says.
    Exponential {
        base_ms: u64,
        max_ms: u64,
        jitter: Jitter,
    },
    /// The same delay before every retry.
    Fixed { interval_ms: u64 },
}

/// How an exponential wait is drawn below its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]` (Envoy's choice): spreads retries best, but the waits of one
    /// request may add up to almost nothing, so no schedule guarantees bridging a gap.
    Full,
    /// Uniform in `[ceiling/2, ceiling]`: half the spread, and a known shortest wait, so a
    /// schedule can be sized to bridge an outage of known length.
    Equal,
}

const JITTER_ALLOWED: &str = "one of \"full\", \"equal\"";

pub(super) fn parse_backoff(v: &Value) -> Result<Backoff, ConfigError> {
    const ALLOWED: &str = "{\"strategy\":\"exponential\",\"base_interval\":25,\"max_interval\":250,\"jitter\":\"full\"} or {\"strategy\":\"fixed\",\"interval\":5000} (ms)";
    let obj = object(
        "backoff",
        v,
        &[
            "strategy",
            "base_interval",
            "max_interval",
            "jitter",
            "interval",
        ],
        ALLOWED,
    )?;
    let strategy = match obj.get("strategy") {
        None => "exponential",
        Some(s) => string("backoff.strategy", s, "one of \"exponential\", \"fixed\"")?,
    };
    match strategy {
        "exponential" => {
            if let Some(i) = obj.get("interval") {
                return Err(ConfigError::new(
                    "backoff.interval",
                    i,
                    "only with \"strategy\":\"fixed\"; exponential uses base_interval and max_interval",
                ));
            }
            let base_ms = match obj.get("base_interval") {
                Some(b) => int_in("backoff.base_interval", b, 1, 60_000, " (ms)")?,
                None => 25,
            };
            let max_ms = match obj.get("max_interval") {
                Some(m) => int_in("backoff.max_interval", m, 1, 300_000, " (ms)")?,
                None => base_ms.saturating_mul(10),
            };
            if max_ms < base_ms {
                return Err(ConfigError {
                    field: "backoff.max_interval".into(),
                    value: max_ms.to_string(),
                    allowed: format!("must be at least base_interval ({base_ms} ms)"),
                });
            }
            let jitter = match obj.get("jitter") {
                Some(j) => one_of(
                    "backoff.jitter",
                    j,
                    JITTER_ALLOWED,
                    &[("full", Jitter::Full), ("equal", Jitter::Equal)],
                )?,
                None => Jitter::Full,
            };
            Ok(Backoff::Exponential {
                base_ms,
                max_ms,
                jitter,
            })
        }
        "fixed" => {
            for f in ["base_interval", "max_interval", "jitter"] {
                if let Some(x) = obj.get(f) {
                    return Err(ConfigError::new(
                        &format!("backoff.{f}"),
                        x,
                        "only with \"strategy\":\"exponential\"; fixed uses interval",
                    ));
                }
            }
            match obj.get("interval") {
                Some(i) => Ok(Backoff::Fixed {
                    interval_ms: int_in("backoff.interval", i, 0, 300_000, " (ms)")?,
                }),
                None => Err(ConfigError {
                    field: "backoff.interval".into(),
                    value: "(missing)".into(),
                    allowed:
                        "required with \"strategy\":\"fixed\": an integer from 0 to 300000 (ms)"
                            .into(),
                }),
            }
        }
        _ => Err(ConfigError::new(
            "backoff.strategy",
            obj.get("strategy").unwrap_or(&Value::Null),
            "one of \"exponential\", \"fixed\"",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{Backoff, Jitter};
    use crate::config::parse;

    fn backoff(json: &str) -> Backoff {
        parse(json.as_bytes()).unwrap().backoff
    }

    #[test]
    fn exponential_max_defaults_to_ten_times_base() {
        assert_eq!(
            backoff(r#"{"backoff":{"base_interval":100}}"#),
            Backoff::Exponential {
                base_ms: 100,
                max_ms: 1000,
                jitter: Jitter::Full,
            }
        );
    }

    #[test]
    fn jitter_is_full_unless_equal_is_asked_for() {
        assert_eq!(
            backoff(r#"{"backoff":{"jitter":"full"}}"#),
            backoff(r#"{"backoff":{}}"#)
        );
        assert_eq!(
            backoff(
                r#"{"backoff":{"strategy":"exponential","base_interval":300,"max_interval":1200,"jitter":"equal"}}"#
            ),
            Backoff::Exponential {
                base_ms: 300,
                max_ms: 1200,
                jitter: Jitter::Equal,
            }
        );
    }

    #[test]
    fn bad_jitter_names_the_field_and_the_value() {
        for (json, value) in [
            (r#"{"backoff":{"jitter":true}}"#, "true"),
            (r#"{"backoff":{"jitter":"Equal"}}"#, "\"Equal\""),
            (
                r#"{"backoff":{"jitter":"decorrelated"}}"#,
                "\"decorrelated\"",
            ),
            (r#"{"backoff":{"jitter":""}}"#, "\"\""),
            (r#"{"backoff":{"jitter":null}}"#, "null"),
            (r#"{"backoff":{"jitter":0.5}}"#, "0.5"),
        ] {
            let e = parse(json.as_bytes()).unwrap_err();
            assert_eq!(e.field, "backoff.jitter", "{json}");
            assert_eq!(e.value, value, "{json}");
            assert!(e.allowed.contains("\"full\", \"equal\""), "{json}: {e}");
        }
    }

    #[test]
    fn jitter_belongs_to_exponential_only() {
        let e = parse(br#"{"backoff":{"strategy":"fixed","interval":500,"jitter":"equal"}}"#)
            .unwrap_err();
        assert_eq!(e.field, "backoff.jitter");
        assert!(e.allowed.contains("exponential"), "{e}");
    }
}
