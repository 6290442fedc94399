//! `retry_on`: which statuses and failure kinds are worth another attempt.

use super::read::list_items;
use super::ConfigError;
use serde_json::Value;

/// One retry condition from `retry_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be made (refused, DNS, TLS handshake).
    ConnectFailure,
    /// The attempt did not finish within `per_try_timeout`.
    Timeout,
    /// The connection broke after it was made, or the response could not be read.
    Reset,
}

/// The parsed `retry_on`: which statuses and failure kinds are worth another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    /// Status codes retried (classes already expanded), sorted, deduplicated.
    pub statuses: Vec<u16>,
    pub connect_failure: bool,
    pub timeout: bool,
    pub reset: bool,
}

impl RetryOn {
    /// Is this status in the set?
    pub fn status(&self, status: u16) -> bool {
        self.statuses.binary_search(&status).is_ok()
    }

    /// Is this failure kind in the set?
    pub fn failure(&self, kind: FailureKind) -> bool {
        match kind {
            FailureKind::ConnectFailure => self.connect_failure,
            FailureKind::Timeout => self.timeout,
            FailureKind::Reset => self.reset,
        }
    }
}

pub(super) fn parse_retry_on(v: &Value) -> Result<RetryOn, ConfigError> {
    const ALLOWED: &str = "a list or comma-separated string of status codes 400-599, classes \"5xx\" and \"gateway-error\" (502,503,504), and failures \"connect-failure\", \"timeout\", \"reset\"";
    let mut on = RetryOn {
        statuses: Vec::new(),
        connect_failure: false,
        timeout: false,
        reset: false,
    };
    for item in list_items("retry_on", v, ALLOWED)? {
        if item.is_empty() {
            continue;
        }
        match item.to_ascii_lowercase().as_str() {
            "5xx" => on.statuses.extend(500..=599),
            "gateway-error" | "gateway_error" => on.statuses.extend([502, 503, 504]),
            "connect-failure" | "connect_failure" => on.connect_failure = true,
            "timeout" => on.timeout = true,
            "reset" => on.reset = true,
            code => match code.parse::<u16>() {
                Ok(n) if (400..=599).contains(&n) && code.len() == 3 => on.statuses.push(n),
                _ => {
                    return Err(ConfigError {
                        field: "retry_on".into(),
                        value: format!("{item:?}"),
                        allowed: ALLOWED.into(),
                    })
                }
            },
        }
    }
    on.statuses.sort_unstable();
    on.statuses.dedup();
    Ok(on)
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn retry_on_string_and_classes() {
        let p = parse(br#"{"retry_on":"5xx, 429 ,reset"}"#).unwrap();
        assert_eq!(p.retry_on.statuses.len(), 101);
        assert!(p.retry_on.status(429) && p.retry_on.status(500) && p.retry_on.status(599));
        assert!(!p.retry_on.status(404));
        assert!(p.retry_on.reset && !p.retry_on.timeout);
        let p = parse(br#"{"retry_on":"gateway-error"}"#).unwrap();
        assert_eq!(p.retry_on.statuses, vec![502, 503, 504]);
        assert!(!p.retry_on.connect_failure);
    }
}
