//! What identifies an operation: the record id (which key, in which scope, for which
//! consumer) and the request fingerprint (method, path, body) that a reuse of the key must
//! match, or get 422.

use super::sha256::{hex, Sha256};

/// Length of a [`RecordId`], bytes (128 bits of SHA-256: collisions are not a concern).
pub const RECORD_ID_LEN: usize = 16;

/// The id of one idempotency record: a hash of scope, consumer and key, so that store keys
/// have a fixed length and alphabet and never show the client's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub [u8; RECORD_ID_LEN]);

impl RecordId {
    /// The record of `key` sent by `consumer` (empty without a consumer header) in
    /// `scope_id` (the route or upstream id the adapter reads from the host).
    pub fn new(scope_id: &str, consumer: &[u8], key: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"kong-retry/idem/v1");
        for part in [scope_id.as_bytes(), consumer, key] {
            // Length-prefixed: ("ab","c") and ("a","bc") are different records.
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let digest = h.finish();
        let mut id = [0u8; RECORD_ID_LEN];
        id.copy_from_slice(&digest[..RECORD_ID_LEN]);
        RecordId(id)
    }

    /// 32 lower-case hex digits (the last part of the store key).
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

/// SHA-256 of the request's method, path (with query) and body bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of one request. The method is compared case-insensitively; the path
    /// and the body byte for byte (the client must resend the same bytes).
    pub fn of(method: &str, path: &str, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        let method = method.to_ascii_uppercase();
        for part in [method.as_bytes(), path.as_bytes(), body] {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Fingerprint(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_request_same_fingerprint_any_change_differs() {
        let base = Fingerprint::of("POST", "/orders?x=1", b"{\"amount\":10}");
        assert_eq!(
            base,
            Fingerprint::of("post", "/orders?x=1", b"{\"amount\":10}")
        );
        for other in [
            Fingerprint::of("PATCH", "/orders?x=1", b"{\"amount\":10}"),
            Fingerprint::of("POST", "/orders?x=2", b"{\"amount\":10}"),
            Fingerprint::of("POST", "/orders?x=1", b"{\"amount\":11}"),
            Fingerprint::of("POST", "/orders?x=1", b"{\"amount\":10} "),
            // Moving bytes between parts changes it too.
            Fingerprint::of("POST", "/orders?x=1{", b"\"amount\":10}"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn record_id_separates_scope_consumer_and_key() {
        let id = RecordId::new("route-1", b"alice", b"k-1");
        assert_eq!(id, RecordId::new("route-1", b"alice", b"k-1"));
        assert_ne!(id, RecordId::new("route-2", b"alice", b"k-1"));
        assert_ne!(id, RecordId::new("route-1", b"bob", b"k-1"));
        assert_ne!(id, RecordId::new("route-1", b"alice", b"k-2"));
        assert_ne!(
            RecordId::new("route-1", b"ab", b"c"),
            RecordId::new("route-1", b"a", b"bc")
        );
        let hex = id.hex();
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!hex.contains("k-1"));
    }
}
