//! Adaptive mode's per-request rules: which way a request goes, and which natively proxied
//! responses reveal trouble at the upstream.
//!
//! The flag itself (calm or protected, per worker cache, shared data) is
//! [`crate::state::protection`]; the maintenance schedule is [`crate::maintenance`]. This module
//! only decides from their answers, so the adapter's calm path stays a few comparisons.
//!
//! # What reveals trouble
//!
//! On the calm path the filter sees only the native response's status. A status in
//! `retry_on` reveals trouble. So does the status the proxy answers *itself* when its own
//! forward fails, if `retry_on` asks for that failure kind: Kong answers 502 for a refused
//! or broken connection and 504 for a timeout; Envoy 503 and 504. The filter cannot tell
//! the proxy's own 502 from an upstream's 502, so with `retry_on: "connect-failure"` an
//! upstream 502 also starts protection: the cheaper mistake (protection costs dispatch
//! overhead for a window; a missed failure costs the next client its request).

use crate::config::RetryOn;
use crate::state::protection::Protection;

/// The statuses a proxy answers by itself when its forward to the upstream fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyFailureStatuses {
    /// Refused, reset or otherwise broken connection.
    pub connect: u16,
    /// No answer in time.
    pub timeout: u16,
}

/// Kong (nginx): 502 Bad Gateway, 504 Gateway Timeout.
pub const KONG: ProxyFailureStatuses = ProxyFailureStatuses {
    connect: 502,
    timeout: 504,
};

/// Envoy: 503 (`upstream connect error or disconnect/reset before headers`), 504.
pub const ENVOY: ProxyFailureStatuses = ProxyFailureStatuses {
    connect: 503,
    timeout: 504,
};

/// Does a natively proxied response with this status mean the upstream is in trouble?
pub fn reveals_trouble(retry_on: &RetryOn, proxy: ProxyFailureStatuses, status: u16) -> bool {
    retry_on.status(status)
        || (status == proxy.connect && (retry_on.connect_failure || retry_on.reset))
        || (status == proxy.timeout && retry_on.timeout)
}

/// The statuses that reveal trouble for one plan on one proxy, as a bit set: the calm path
/// asks for every response, so the answer is one shift, not a search.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevealingStatuses([u64; 4]);

impl RevealingStatuses {
    /// Lowest status the set can hold (`retry_on` takes 400–599).
    const FIRST: u16 = 400;

    /// [`reveals_trouble`] for every status, computed once.
    pub fn new(retry_on: &RetryOn, proxy: ProxyFailureStatuses) -> Self {
        let mut bits = [0u64; 4];
        for status in Self::FIRST..Self::FIRST + 256 {
            if reveals_trouble(retry_on, proxy, status) {
                let i = usize::from(status - Self::FIRST);
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        RevealingStatuses(bits)
    }

    /// Does this status reveal trouble?
    pub fn contains(&self, status: u16) -> bool {
        match status.checked_sub(Self::FIRST).map(usize::from) {
            Some(i) if i < 256 => self.0[i / 64] & (1 << (i % 64)) != 0,
            _ => false,
        }
    }
}

/// The `:status` pseudo-header's value as a status code: three ASCII digits (surrounding
/// ASCII whitespace allowed). Hand-written because it runs on every calm response.
pub fn parse_status(value: &[u8]) -> Option<u16> {
    match value.trim_ascii() {
        [a, b, c] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// How adaptive mode handles one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// The proxy's native path; the filter only watches the response status.
    Watch,
    /// Through the retrying exchange (the host's `auto` execution), because of a
    /// maintenance window or a recent failure.
    Protect,
}

impl Handling {
    /// The way for this answer of the protection cache. A store that cannot be read is
    /// treated as calm: the native path is what the route would get without the filter.
    pub fn of(protection: Protection) -> Self {
        if protection.dispatches() {
            Handling::Protect
        } else {
            Handling::Watch
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn retry_on(json: &str) -> RetryOn {
        parse(json.as_bytes()).unwrap().retry_on
    }

    #[test]
    fn statuses_in_retry_on_reveal_trouble() {
        let on = retry_on(r#"{"retry_on":"503,429"}"#);
        for proxy in [KONG, ENVOY] {
            assert!(reveals_trouble(&on, proxy, 503));
            assert!(reveals_trouble(&on, proxy, 429));
            assert!(!reveals_trouble(&on, proxy, 200));
            assert!(!reveals_trouble(&on, proxy, 500));
            // Neither 502 nor 504 is asked for, and no failure kind is.
            assert!(!reveals_trouble(&on, proxy, 502));
            assert!(!reveals_trouble(&on, proxy, 504));
        }
    }

    #[test]
    fn the_proxys_own_failure_statuses_count_when_the_failure_kind_is_asked_for() {
        let on = retry_on(r#"{"retry_on":"connect-failure,timeout"}"#);
        assert!(reveals_trouble(&on, KONG, 502));
        assert!(reveals_trouble(&on, KONG, 504));
        assert!(!reveals_trouble(&on, KONG, 503));
        assert!(reveals_trouble(&on, ENVOY, 503));
        assert!(reveals_trouble(&on, ENVOY, 504));
        assert!(!reveals_trouble(&on, ENVOY, 502));

        let on = retry_on(r#"{"retry_on":"reset"}"#);
        assert!(reveals_trouble(&on, KONG, 502));
        assert!(!reveals_trouble(&on, KONG, 504));

        // The default retry_on (gateway-error, connect-failure, timeout, reset).
        let on = retry_on("{}");
        for s in [502, 503, 504] {
            assert!(reveals_trouble(&on, KONG, s) && reveals_trouble(&on, ENVOY, s));
        }
        assert!(!reveals_trouble(&on, KONG, 500));
    }

    #[test]
    fn the_bit_set_agrees_with_the_rule() {
        for json in [
            "{}",
            r#"{"retry_on":"5xx,429"}"#,
            r#"{"retry_on":"connect-failure"}"#,
            r#"{"retry_on":"timeout,400,599"}"#,
        ] {
            let on = retry_on(json);
            for proxy in [KONG, ENVOY] {
                let set = RevealingStatuses::new(&on, proxy);
                for status in 0..1000 {
                    assert_eq!(
                        set.contains(status),
                        reveals_trouble(&on, proxy, status),
                        "{json} {proxy:?} {status}"
                    );
                }
            }
        }
        assert!(!RevealingStatuses::default().contains(503));
    }

    #[test]
    fn status_values() {
        assert_eq!(parse_status(b"503"), Some(503));
        assert_eq!(parse_status(b" 200\t"), Some(200));
        assert_eq!(parse_status(b"099"), Some(99));
        for bad in [
            &b""[..],
            b"50",
            b"5030",
            b"5x3",
            b"+50",
            b"\xff\xfe\xfd",
            b"50 3",
        ] {
            assert_eq!(parse_status(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn handling_follows_the_protection_answer() {
        assert_eq!(Handling::of(Protection::Calm), Handling::Watch);
        assert_eq!(Handling::of(Protection::StoreUnavailable), Handling::Watch);
        assert_eq!(Handling::of(Protection::Scheduled), Handling::Protect);
        assert_eq!(
            Handling::of(Protection::Protected { until_ms: 5 }),
            Handling::Protect
        );
    }
}
