//! Gateway-side idempotency keys: a keyed request of a covered method runs at most once
//! per key; duplicates get the stored result, a 409 or a 422.
//!
//! Modules, one idea each: `sha256` (the hash), `fingerprint` (record id and request
//! fingerprint), `record` (the stored record and its codec), `decision` (the table below
//! as pure functions), `answer` (the gateway's own 400/409/422/503), `index` (the bounded
//! index of the shared store), `shared` (records in node shared data), `base64` and
//! `etcd` (records in etcd: request builders and response parsers), `etcd_steps` (the
//! etcd sequences, one answer at a time). The exchange uses them through
//! `crate::exchange::key_guard`; the adapter runs the store calls (`adapter/driver/keys.rs`).
//!
//! # The semantics table
//!
//! Request side ([`decision::admit`], then [`decision::decide_request`] on the record the
//! store holds for the key):
//!
//! | request | record for its key | answer |
//! |---|---|---|
//! | method not in `methods` (or disabled) | — | forwarded as without idempotency |
//! | covered, no key, `required: false` | — | forwarded as without idempotency |
//! | covered, no key, `required: true` | — | 400 problem+json |
//! | key empty or over 255 bytes | — | 400 problem+json |
//! | keyed | none, or expired | claim the key (in-flight record until `now + lock_timeout`), forward, retry as the policy says |
//! | keyed | in flight, same fingerprint | 409, `Retry-After` = time left on the lock |
//! | keyed | completed, same fingerprint | the stored response, plus `idempotent-replayed: true` |
//! | keyed | in flight or completed, other fingerprint | 422 |
//! | keyed | store unavailable | `on_store_unavailable`: `allow` forwards once without a claim, `deny` answers 503 |
//!
//! Settle side ([`decision::settle`], from the outcomes of all attempts):
//!
//! | final outcome | key |
//! |---|---|
//! | a status other than those below (2xx, 3xx, 4xx, 500, 501, 505+) | store the response (status, headers minus hop-by-hop, body byte-exact) until `now + ttl` |
//! | the same, body over `max_response_bytes` (or no room in the store) | stays locked until `lock_timeout`: duplicates get 409 |
//! | connect failure, refused dispatch, 502, 503, 429, 408, 409, 425 | released: the next request with the key runs |
//! | the same, but an earlier attempt timed out, was reset or got 504 | stays locked until `lock_timeout` |
//! | timeout, reset, no response, 504 | stays locked until `lock_timeout` |
//!
//! An unknown outcome keeps the key locked because the request may have been applied:
//! releasing it would let the client's retry apply it a second time. After
//! `lock_timeout` the key is free again and a retry runs for real; that is the one case
//! where the gateway cannot tell, and it picks the later, rarer risk.
//!
//! The fingerprint is SHA-256 over method, path (with query) and body; the record id is
//! SHA-256 over the scope id (route or upstream), the consumer header's value and the key,
//! so store keys never show the client's key.

pub mod answer;
pub mod base64;
pub mod decision;
pub mod etcd;
pub mod etcd_steps;
pub mod fingerprint;
pub mod index;
pub mod record;
pub mod sha256;
pub mod shared;

pub use answer::{refusal_answer, LocalAnswer, Refusal};
pub use decision::{
    admit, decide_request, settle, Admission, LockedBecause, RequestDecision, Settlement,
};
pub use fingerprint::{Fingerprint, RecordId};
pub use record::{Record, StoredResponse, REPLAYED_HEADER};
pub use shared::{Begin, Settled, SharedError, SharedRecords};
