//! `backoff`: the delay between attempts, exponential with full jitter or fixed.

use super::read::{int_in, object, string};
use super::ConfigError;
use serde_json::Value;

/// Delay between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Full jitter: uniform in `[0, min(max, base * 2^(n-1))]` before retry `n`.
    Exponential { base_ms: u64, max_ms: u64 },
    /// The same delay before every retry.
    Fixed { interval_ms: u64 },
}

pub(super) fn parse_backoff(v: &Value) -> Result<Backoff, ConfigError> {
    const ALLOWED: &str = "{\"strategy\":\"exponential\",\"base_interval\":25,\"max_interval\":250} or {\"strategy\":\"fixed\",\"interval\":5000} (ms)";
    let obj = object(
        "backoff",
        v,
        &["strategy", "base_interval", "max_interval", "interval"],
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
            Ok(Backoff::Exponential { base_ms, max_ms })
        }
        "fixed" => {
            for f in ["base_interval", "max_interval"] {
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
    use super::Backoff;
    use crate::config::parse;

    #[test]
    fn exponential_max_defaults_to_ten_times_base() {
        let p = parse(br#"{"backoff":{"base_interval":100}}"#).unwrap();
        assert_eq!(
            p.backoff,
            Backoff::Exponential {
                base_ms: 100,
                max_ms: 1000
            }
        );
    }
}
