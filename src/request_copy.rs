//! The request as the filter forwards it: method, path, headers minus hop-by-hop, body.

use crate::header_map::{first, Headers};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `Expect`:
/// a forwarded `Expect: 100-continue` makes Kong's dispatch take the interim 100 as the
/// answer, and the client hangs.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// Is this (lower-case) header hop-by-hop (or `Expect`)?
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Removes pseudo headers, hop-by-hop headers, `Expect`, headers the `Connection` header names,
/// and `content-length` (the sender of the copy sets its own framing).
pub fn forwardable(headers: &[(String, Vec<u8>)]) -> Headers {
    let named_by_connection: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    headers
        .iter()
        .filter(|(n, _)| {
            !n.starts_with(':')
                && !is_hop_by_hop(n)
                && n != "content-length"
                && !named_by_connection.iter().any(|c| c == n)
        })
        .cloned()
        .collect()
}

/// What the request headers say about a body (Kong never signals end-of-stream in headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyExpectation {
    /// No `content-length` (or 0) and no `transfer-encoding`: there is no body.
    None,
    /// A body of this announced length follows.
    Length(u64),
    /// A body of unknown length follows (chunked).
    Unknown,
}

/// Reads `content-length` / `transfer-encoding` the way a proxy must (RFC 9112 §6.3).
pub fn body_expectation(headers: &[(String, Vec<u8>)]) -> BodyExpectation {
    if headers.iter().any(|(n, _)| n == "transfer-encoding") {
        return BodyExpectation::Unknown;
    }
    match first(headers, "content-length").map(str::trim) {
        None => BodyExpectation::None,
        Some(v) => match v.parse::<u64>() {
            Ok(0) => BodyExpectation::None,
            Ok(n) => BodyExpectation::Length(n),
            // An unparsable length is the proxy's problem to reject; we just do not copy.
            Err(_) => BodyExpectation::Unknown,
        },
    }
}

/// A copy of the downstream request that can be sent any number of times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCopy {
    /// Upper case as received (methods are case-sensitive; we compare upper-cased).
    pub method: String,
    /// Path with query string, as dispatched: the downstream `:path` unless the adapter
    /// names the proxy's own (Kong `ngx.upstream_uri`).
    pub path: String,
    /// `:authority` (Host) as dispatched: the downstream one unless the adapter names the
    /// proxy's own (Kong `ngx.upstream_host`).
    pub authority: String,
    /// End-to-end headers only.
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl RequestCopy {
    /// Builds the copy from the downstream request headers (pseudo headers included).
    pub fn from_headers(headers: &[(String, Vec<u8>)]) -> RequestCopy {
        let text = |n: &str| first(headers, n).unwrap_or("").to_string();
        RequestCopy {
            method: text(":method"),
            path: text(":path"),
            authority: text(":authority"),
            headers: forwardable(headers),
            body: Vec::new(),
        }
    }

    /// Whether the request carries a non-empty value for `header` (lower case).
    pub fn has_header(&self, header: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n == header && v.iter().any(|b| !b.is_ascii_whitespace()))
    }

    /// The headers for one dispatch: pseudo headers first, then the copy's headers, the
    /// attempt header on retries (`attempt` > 1; a client-sent one is always dropped), and a
    /// `content-length` matching the body.
    pub fn dispatch_headers(&self, scheme: &str, attempt_header: &str, attempt: u32) -> Headers {
        let mut h: Headers = Vec::with_capacity(self.headers.len() + 6);
        h.push((":method".into(), self.method.clone().into_bytes()));
        h.push((":path".into(), self.path.clone().into_bytes()));
        h.push((":authority".into(), self.authority.clone().into_bytes()));
        h.push((":scheme".into(), scheme.as_bytes().to_vec()));
        for (n, v) in &self.headers {
            if n == "host" || n == attempt_header {
                continue;
            }
            h.push((n.clone(), v.clone()));
        }
        if attempt > 1 {
            h.push((attempt_header.to_string(), attempt.to_string().into_bytes()));
        }
        let bodiless_method = matches!(
            self.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "DELETE"
        );
        if !self.body.is_empty() || !bodiless_method {
            h.push((
                "content-length".into(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn strips_hop_by_hop_expect_and_connection_named() {
        let h = hs(&[
            (":method", "POST"),
            ("connection", "keep-alive, X-Trace-Hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "x"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("expect", "100-continue"),
            ("x-trace-hop", "1"),
            ("content-length", "5"),
            ("accept", "a"),
            ("accept", "b"),
            ("idempotency-key", "k1"),
        ]);
        let f = forwardable(&h);
        assert_eq!(
            f,
            hs(&[("accept", "a"), ("accept", "b"), ("idempotency-key", "k1")])
        );
    }

    #[test]
    fn body_expectation_from_headers() {
        assert_eq!(body_expectation(&hs(&[])), BodyExpectation::None);
        assert_eq!(
            body_expectation(&hs(&[("content-length", "0")])),
            BodyExpectation::None
        );
        assert_eq!(
            body_expectation(&hs(&[("content-length", " 12 ")])),
            BodyExpectation::Length(12)
        );
        assert_eq!(
            body_expectation(&hs(&[("transfer-encoding", "chunked")])),
            BodyExpectation::Unknown
        );
        assert_eq!(
            body_expectation(&hs(&[("content-length", "x")])),
            BodyExpectation::Unknown
        );
    }

    #[test]
    fn dispatch_headers_carry_pseudo_attempt_and_length() {
        let mut c = RequestCopy::from_headers(&hs(&[
            (":method", "POST"),
            (":path", "/orders?x=1"),
            (":authority", "gw.example"),
            ("host", "gw.example"),
            ("x-retry-attempt", "9"),
            ("idempotency-key", "k"),
        ]));
        c.body = b"hello".to_vec();
        c.authority = "svc:80".to_string();
        assert!(c.has_header("idempotency-key"));
        let h = c.dispatch_headers("http", "x-retry-attempt", 2);
        assert_eq!(
            h,
            hs(&[
                (":method", "POST"),
                (":path", "/orders?x=1"),
                (":authority", "svc:80"),
                (":scheme", "http"),
                ("idempotency-key", "k"),
                ("x-retry-attempt", "2"),
                ("content-length", "5"),
            ])
        );
        let first = c.dispatch_headers("http", "x-retry-attempt", 1);
        assert!(!first.iter().any(|(n, _)| n == "x-retry-attempt"));
        let get = RequestCopy::from_headers(&hs(&[(":method", "GET"), (":path", "/")]));
        let h = get.dispatch_headers("https", "x-retry-attempt", 1);
        assert!(!h.iter().any(|(n, _)| n == "content-length"));
    }

    #[test]
    fn blank_key_is_no_key() {
        let c = RequestCopy::from_headers(&hs(&[("idempotency-key", "  ")]));
        assert!(!c.has_header("idempotency-key"));
    }
}
