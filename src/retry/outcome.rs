//! What came back from one attempt: an HTTP status, or a failure with no usable response.

use crate::config::{FailureKind, RetryOn};

/// The result of one attempt, as the retry policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// A complete response with this status.
    Status(u16),
    /// No usable response.
    Failed(Failure),
}

/// Why an attempt produced no usable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// Nothing reached the upstream: refused (where the host tells), unresolvable, or the
    /// TLS handshake failed.
    ConnectFailure,
    /// No complete response within the per-try timeout.
    Timeout,
    /// The connection broke after it may have carried the request, or the response could
    /// not be read whole: the upstream may have acted on it.
    Reset,
    /// The host gave no reason (Envoy reports every failed dispatch this way).
    Unspecified,
    /// The host refused to start the dispatch (bad upstream, internal failure).
    DispatchRefused,
}

impl Failure {
    /// Short stable name used in logs, metrics and the plain-text final answer.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::ConnectFailure => "connect-failure",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
            Failure::Unspecified => "no-response",
            Failure::DispatchRefused => "dispatch-refused",
        }
    }

    /// The status the client gets when this was the last attempt: 504 for timeouts, 502 otherwise.
    pub fn final_status(self) -> u16 {
        match self {
            Failure::Timeout => 504,
            _ => 502,
        }
    }

    /// Does `retry_on` cover this failure?
    pub fn retryable_under(self, on: &RetryOn) -> bool {
        match self {
            Failure::ConnectFailure | Failure::DispatchRefused => {
                on.failure(FailureKind::ConnectFailure)
            }
            Failure::Timeout => on.failure(FailureKind::Timeout),
            Failure::Reset => on.failure(FailureKind::Reset),
            // Without a reason, any failure kind the operator asked for covers it.
            Failure::Unspecified => on.connect_failure || on.timeout || on.reset,
        }
    }
}

impl Outcome {
    /// Classifies a dispatch callback from what the host reported.
    ///
    /// `dispatch_status`: Kong's `:dispatch_status` pseudo-header (absent on Envoy);
    /// `status`: the `:status` pseudo-header; `body_readable`: whether the announced body
    /// could be read whole. Kong reports a response cut off mid-body with `:status` and even
    /// `:dispatch_status: ok`, so only a readable body makes a status count.
    pub fn from_dispatch(
        dispatch_status: Option<&str>,
        status: Option<&str>,
        body_readable: bool,
    ) -> Outcome {
        match dispatch_status.map(|s| s.trim().to_ascii_lowercase()) {
            None => {}
            Some(s) if s == "ok" => {}
            Some(s) => {
                return Outcome::Failed(match s.as_str() {
                    "timeout" => Failure::Timeout,
                    // Nothing was sent: the handshake or the name lookup failed first.
                    "tls handshake failure" | "resolver failure" => Failure::ConnectFailure,
                    // ngx_wasm_socket_tcp.c reports a refused connect, a failed send and a
                    // failed read all as "broken connection": the request may have reached
                    // the upstream, so it is a reset, never a proven connect failure.
                    _ => Failure::Reset,
                });
            }
        }
        let code = status
            .and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|c| (100..=599).contains(c));
        match code {
            Some(_) if !body_readable => Outcome::Failed(Failure::Reset),
            Some(c) => Outcome::Status(c),
            None if dispatch_status.is_some() => Outcome::Failed(Failure::Reset),
            None => Outcome::Failed(Failure::Unspecified),
        }
    }

    /// Short stable name: the status code, or the failure's name.
    pub fn label(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Failed(f) => f.as_str().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_kong_and_envoy_callbacks() {
        use Failure::*;
        let table: &[(Option<&str>, Option<&str>, bool, Outcome)] = &[
            (Some("ok"), Some("200"), true, Outcome::Status(200)),
            (None, Some("503"), true, Outcome::Status(503)),
            (Some("timeout"), None, true, Outcome::Failed(Timeout)),
            (
                Some("broken connection"),
                None,
                true,
                Outcome::Failed(Reset),
            ),
            (
                Some("tls handshake failure"),
                None,
                true,
                Outcome::Failed(ConnectFailure),
            ),
            (
                Some("resolver failure"),
                None,
                true,
                Outcome::Failed(ConnectFailure),
            ),
            (Some("reader failure"), None, true, Outcome::Failed(Reset)),
            (
                Some("something new"),
                Some("200"),
                true,
                Outcome::Failed(Reset),
            ),
            // Cut off mid-body: the status is there, the body is not.
            (Some("ok"), Some("200"), false, Outcome::Failed(Reset)),
            (Some("ok"), None, true, Outcome::Failed(Reset)),
            (Some("ok"), Some("abc"), true, Outcome::Failed(Reset)),
            (None, None, true, Outcome::Failed(Unspecified)),
            (None, Some("99"), true, Outcome::Failed(Unspecified)),
        ];
        for (ds, st, readable, want) in table {
            assert_eq!(
                Outcome::from_dispatch(*ds, *st, *readable),
                *want,
                "{ds:?} {st:?}"
            );
        }
    }

    #[test]
    fn final_status_of_failures() {
        assert_eq!(Failure::Timeout.final_status(), 504);
        assert_eq!(Failure::ConnectFailure.final_status(), 502);
        assert_eq!(Failure::Reset.final_status(), 502);
    }
}
