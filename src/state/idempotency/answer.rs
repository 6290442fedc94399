//! The gateway's own answers to keyed requests it does not forward: 400, 409, 422 and
//! 503 as `application/problem+json` (RFC 9457), with `Retry-After` on 409.

use crate::header_map::Headers;
use serde_json::json;

/// Why the gateway answers instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `required` and no key: 400.
    MissingKey,
    /// An empty key or one over 255 bytes: 400.
    BadKey,
    /// The first request with this key is still in flight (or its outcome is unknown): 409.
    InFlight { retry_after_s: u64 },
    /// The key was used with another method, path or body: 422.
    Mismatch,
    /// The store cannot be used and `on_store_unavailable` is `deny`: 503.
    StoreUnavailable,
    /// A keyed body over `max_body_bytes` (or one the host cannot show the filter) cannot
    /// be fingerprinted, and `on_store_unavailable` is `deny`: 413.
    BodyTooLarge,
    /// A keyed request with a header value that is not text cannot be copied, and
    /// `on_store_unavailable` is `deny`: 400.
    HeaderNotText,
}

/// A local response: status, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAnswer {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// The answer for `refusal`; `header` is the key header's name, quoted in the detail.
pub fn refusal_answer(refusal: Refusal, header: &str) -> LocalAnswer {
    let (status, title, detail) = match refusal {
        Refusal::MissingKey => (
            400,
            "Idempotency key missing",
            format!("this endpoint requires the {header} header"),
        ),
        Refusal::BadKey => (
            400,
            "Idempotency key invalid",
            format!("the {header} header must be 1 to 255 bytes"),
        ),
        Refusal::InFlight { retry_after_s } => (
            409,
            "Request in progress",
            format!("a request with this {header} is in progress or its outcome is not known yet; retry after {retry_after_s} s with the same key"),
        ),
        Refusal::Mismatch => (
            422,
            "Idempotency key reused",
            format!("this {header} was used for a request with another method, path or body; use a new key for a new operation"),
        ),
        Refusal::StoreUnavailable => (
            503,
            "Idempotency store unavailable",
            "the gateway cannot check idempotency keys right now; retry later with the same key".to_string(),
        ),
        Refusal::BodyTooLarge => (
            413,
            "Request too large for an idempotency key",
            format!("the gateway keeps a request with {header} only if its body fits its limit (max_body_bytes); send a smaller body"),
        ),
        Refusal::HeaderNotText => (
            400,
            "Header value not text",
            format!("a request with {header} must have text header values"),
        ),
    };
    let mut headers: Headers = vec![(
        "content-type".to_string(),
        b"application/problem+json".to_vec(),
    )];
    if let Refusal::InFlight { retry_after_s } = refusal {
        headers.push((
            "retry-after".to_string(),
            retry_after_s.to_string().into_bytes(),
        ));
    }
    let body = json!({"type": "about:blank", "title": title, "status": status, "detail": detail})
        .to_string()
        .into_bytes();
    LocalAnswer {
        status,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status_and_a_problem_body() {
        for (refusal, status) in [
            (Refusal::MissingKey, 400),
            (Refusal::BadKey, 400),
            (Refusal::InFlight { retry_after_s: 3 }, 409),
            (Refusal::Mismatch, 422),
            (Refusal::StoreUnavailable, 503),
            (Refusal::BodyTooLarge, 413),
            (Refusal::HeaderNotText, 400),
        ] {
            let a = refusal_answer(refusal, "idempotency-key");
            assert_eq!(a.status, status);
            let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(v["status"], status);
            assert_eq!(a.headers[0].1, b"application/problem+json");
        }
        let a = refusal_answer(Refusal::InFlight { retry_after_s: 3 }, "idempotency-key");
        assert!(a.headers.contains(&("retry-after".into(), b"3".to_vec())));
    }
}
