//! The `etcd` store as request builders and response parsers for etcd's v3 JSON gateway
//! (etcd 3.4+: `POST /v3/lease/grant`, `/v3/kv/txn`; keys and values base64, 64-bit
//! integers as JSON strings). The adapter sends each [`EtcdCall`] with
//! `dispatch_http_call` (`:method POST`, `content-type: application/json`) from a phase
//! where the host allows it (request headers or body, or a call response) and feeds the
//! answer to the matching parser. Nothing here does I/O.
//!
//! Sequences, each call waiting for the previous answer:
//!
//! * **claim**: [`lease_grant`] (when the worker has no lease to reuse, see
//!   [`super::etcd_steps`]), then [`claim_txn`]: compare
//!   `VERSION(key) == 0` (the key does not exist), success: put the in-flight record with
//!   the lease, failure: range the key. [`claim_outcome`] turns the answer into
//!   [`ClaimOutcome`]: claimed at a revision, or the decision the existing record gives;
//!   a record whose deadline passed by our clock (etcd still keeps it until its lease
//!   ends) is taken over with [`take_over_txn`] (compare `MOD(key) ==` the revision
//!   read), whose answer goes through [`claim_outcome`] again.
//! * **store the result**: [`complete_txn`]: compare `MOD(key) ==` the claim's revision
//!   (still our lock), put the completed record with the claim's lease.
//! * **release**: [`release_txn`]: compare `MOD(key) ==` the claim's revision, delete.
//! * **unknown outcome**: nothing; the record's deadline frees the key after
//!   `lock_timeout`, and etcd drops it when the lease ends.
//!
//! Shapes observed on etcd 3.4.23 (Debian `etcd-server`): a failed compare omits
//! `"succeeded"` (proto3 leaves `false` out), an empty range omits `"kvs"` and `"count"`,
//! a key without lease omits `"lease"`, an empty value omits `"value"`; errors come with
//! an HTTP status and `{"error","message","code"}`; a TTL below etcd's minimum is raised
//! (asked 1 s, granted 2 s).

use super::base64;
use super::decision::{decide_request, RequestDecision};
use super::fingerprint::{Fingerprint, RecordId};
use super::record::Record;
use serde_json::{json, Map, Value};
use std::fmt;

/// One call to etcd's JSON gateway: `POST path` with `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdCall {
    pub path: &'static str,
    /// JSON text.
    pub body: String,
}

/// The etcd key of a record: `prefix` + the record id in hex.
pub fn record_key(prefix: &str, id: &RecordId) -> String {
    format!("{prefix}{}", id.hex())
}

/// Asks for a lease of `ttl_ms`, rounded up to whole seconds (at least 1; etcd may raise
/// it to its minimum).
pub fn lease_grant(ttl_ms: u64) -> EtcdCall {
    let seconds = ttl_ms.div_ceil(1000).max(1);
    EtcdCall {
        path: "/v3/lease/grant",
        body: json!({"TTL": seconds.to_string(), "ID": "0"}).to_string(),
    }
}

/// Create-if-absent: put `value` under `key` with `lease` only if the key does not exist;
/// otherwise read it.
pub fn claim_txn(key: &str, value: &[u8], lease: i64) -> EtcdCall {
    let k = base64::encode(key.as_bytes());
    txn(
        json!({"target": "VERSION", "key": k, "version": "0", "result": "EQUAL"}),
        put(&k, value, lease),
        &k,
    )
}

/// Replaces the record read at `mod_revision` (an expired lock or result) with `value`.
pub fn take_over_txn(key: &str, mod_revision: i64, value: &[u8], lease: i64) -> EtcdCall {
    let k = base64::encode(key.as_bytes());
    txn(mod_is(&k, mod_revision), put(&k, value, lease), &k)
}

/// Stores the completed record, if the key is still the lock we wrote at `claim_revision`.
pub fn complete_txn(key: &str, claim_revision: i64, value: &[u8], lease: i64) -> EtcdCall {
    take_over_txn(key, claim_revision, value, lease)
}

/// Deletes the key, if it is still the lock we wrote at `claim_revision`.
pub fn release_txn(key: &str, claim_revision: i64) -> EtcdCall {
    let k = base64::encode(key.as_bytes());
    txn(
        mod_is(&k, claim_revision),
        json!({"requestDeleteRange": {"key": k}}),
        &k,
    )
}

fn mod_is(k: &str, revision: i64) -> Value {
    json!({"target": "MOD", "key": k, "mod_revision": revision.to_string(), "result": "EQUAL"})
}

fn put(k: &str, value: &[u8], lease: i64) -> Value {
    json!({"requestPut": {"key": k, "value": base64::encode(value), "lease": lease.to_string()}})
}

fn txn(compare: Value, success: Value, k: &str) -> EtcdCall {
    EtcdCall {
        path: "/v3/kv/txn",
        body: json!({
            "compare": [compare],
            "success": [success],
            "failure": [{"requestRange": {"key": k}}],
        })
        .to_string(),
    }
}

/// Why an etcd answer is not what the call expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdError {
    /// A non-200 answer; `message` is etcd's own, when it sent one.
    Status { status: u16, message: String },
    /// The body is not JSON.
    NotJson(String),
    /// A field is missing or of the wrong type.
    Field { field: String, problem: String },
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Status { status, message } => write!(f, "etcd answered {status}: {message}"),
            EtcdError::NotJson(e) => write!(f, "etcd answer is not JSON: {e}"),
            EtcdError::Field { field, problem } => write!(f, "etcd answer: `{field}` {problem}"),
        }
    }
}

impl std::error::Error for EtcdError {}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Seconds etcd granted (it may raise a short TTL to its minimum).
    pub ttl_s: i64,
}

/// The key as a failed compare's range returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub value: Vec<u8>,
    pub mod_revision: i64,
    /// 0: no lease.
    pub lease: i64,
}

/// The answer to a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResult {
    /// The compare held and the success branch ran; `revision` is the store revision after
    /// it (the key's mod_revision after a put).
    Succeeded { revision: i64 },
    /// The compare failed; `current` is the key read by the failure branch (`None`: absent).
    Failed { current: Option<KeyValue> },
}

/// Parses the answer to [`lease_grant`].
pub fn parse_lease_grant(status: u16, body: &[u8]) -> Result<Lease, EtcdError> {
    let v = answer(status, body)?;
    let obj = object(&v, "(answer)")?;
    header_revision(obj)?;
    Ok(Lease {
        id: int_field(obj, "ID", "ID")?,
        ttl_s: int_field(obj, "TTL", "TTL")?,
    })
}

/// Parses the answer to any of the transactions built here.
pub fn parse_txn(status: u16, body: &[u8]) -> Result<TxnResult, EtcdError> {
    let v = answer(status, body)?;
    let obj = object(&v, "(answer)")?;
    let revision = header_revision(obj)?;
    let succeeded = match obj.get("succeeded") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field("succeeded", "is not a boolean")),
    };
    if succeeded {
        return Ok(TxnResult::Succeeded { revision });
    }
    let responses = obj
        .get("responses")
        .and_then(Value::as_array)
        .ok_or_else(|| field("responses", "is missing or not a list"))?;
    let range = responses
        .first()
        .and_then(|r| r.get("response_range"))
        .ok_or_else(|| field("responses[0].response_range", "is missing"))?;
    let range = object(range, "responses[0].response_range")?;
    let kvs = match range.get("kvs") {
        None => return Ok(TxnResult::Failed { current: None }),
        Some(Value::Array(kvs)) => kvs,
        Some(_) => return Err(field("responses[0].response_range.kvs", "is not a list")),
    };
    let Some(kv) = kvs.first() else {
        return Ok(TxnResult::Failed { current: None });
    };
    let at = "responses[0].response_range.kvs[0]";
    let kv = object(kv, at)?;
    let value = match kv.get("value") {
        None => Vec::new(),
        Some(Value::String(s)) => {
            base64::decode(s).map_err(|e| field(&format!("{at}.value"), &e.to_string()))?
        }
        Some(_) => return Err(field(&format!("{at}.value"), "is not a string")),
    };
    let lease = match kv.get("lease") {
        None => 0,
        Some(_) => int_field(kv, "lease", &format!("{at}.lease"))?,
    };
    Ok(TxnResult::Failed {
        current: Some(KeyValue {
            value,
            mod_revision: int_field(kv, "mod_revision", &format!("{at}.mod_revision"))?,
            lease,
        }),
    })
}

/// What a claim (or take-over) transaction means for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is ours: the in-flight record was written at `revision` (keep it for
    /// [`complete_txn`] / [`release_txn`]).
    Claimed { revision: i64 },
    /// The existing record decides: replay, 409 or 422.
    Decided(RequestDecision),
    /// The existing record (read at `mod_revision`) has expired by our clock: send
    /// [`take_over_txn`] with it.
    TakeOver { mod_revision: i64 },
    /// The compare failed but the key had gone by the time it was read: claim again.
    Vanished,
}

/// Interprets a claim's transaction answer.
pub fn claim_outcome(txn: TxnResult, fingerprint: &Fingerprint, now_ms: u64) -> ClaimOutcome {
    match txn {
        TxnResult::Succeeded { revision } => ClaimOutcome::Claimed { revision },
        TxnResult::Failed { current: None } => ClaimOutcome::Vanished,
        TxnResult::Failed { current: Some(kv) } => {
            // A value that is no record (written by something else) cannot be trusted as
            // a lock or a result: take it over like an expired one.
            let record = Record::decode(&kv.value).ok();
            match decide_request(record, fingerprint, now_ms) {
                RequestDecision::Proceed => ClaimOutcome::TakeOver {
                    mod_revision: kv.mod_revision,
                },
                decided => ClaimOutcome::Decided(decided),
            }
        }
    }
}

fn answer(status: u16, body: &[u8]) -> Result<Value, EtcdError> {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    if status != 200 {
        let message = parsed
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(|| {
                crate::config::truncated(String::from_utf8_lossy(body).into_owned())
            });
        return Err(EtcdError::Status { status, message });
    }
    parsed.map_err(|e| EtcdError::NotJson(e.to_string()))
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, EtcdError> {
    v.as_object().ok_or_else(|| field(at, "is not an object"))
}

fn header_revision(obj: &Map<String, Value>) -> Result<i64, EtcdError> {
    let header = obj
        .get("header")
        .ok_or_else(|| field("header", "is missing"))?;
    int_field(object(header, "header")?, "revision", "header.revision")
}

/// An int64 as etcd's gateway writes it: a JSON string of decimal digits.
fn int_field(obj: &Map<String, Value>, name: &str, at: &str) -> Result<i64, EtcdError> {
    match obj.get(name) {
        None => Err(field(at, "is missing")),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .map_err(|_| field(at, &format!("is {s:?}, not a 64-bit integer"))),
        Some(other) => Err(field(
            at,
            &format!("is {other}, not an integer written as a JSON string"),
        )),
    }
}

fn field(at: &str, problem: &str) -> EtcdError {
    EtcdError::Field {
        field: at.to_string(),
        problem: problem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Answers as etcd 3.4.23 gave them (Debian etcd-server, JSON gateway on loopback).
    const GRANT: &str = r#"{"header":{"cluster_id":"13076721268647518941","member_id":"7322512309123330233","revision":"1","raft_term":"2"},"ID":"3511015727077339653","TTL":"5"}"#;
    const CLAIMED: &str = r#"{"header":{"cluster_id":"13076721268647518941","member_id":"7322512309123330233","revision":"2","raft_term":"2"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"2"}}}]}"#;
    const TAKEN: &str = r#"{"header":{"cluster_id":"13076721268647518941","member_id":"7322512309123330233","revision":"2","raft_term":"2"},"responses":[{"response_range":{"header":{"revision":"2"},"kvs":[{"key":"L2tvbmctcmV0cnkvaWRlbS9hYmM=","create_revision":"2","mod_revision":"2","version":"1","value":"aW5mbGlnaHQ=","lease":"3511015727077339659"}],"count":"1"}}]}"#;
    const DELETED: &str = r#"{"header":{"cluster_id":"13076721268647518941","member_id":"7322512309123330233","revision":"4","raft_term":"2"},"succeeded":true,"responses":[{"response_delete_range":{"header":{"revision":"4"},"deleted":"1"}}]}"#;
    const GONE: &str = r#"{"header":{"cluster_id":"13076721268647518941","member_id":"7322512309123330233","revision":"4","raft_term":"2"},"responses":[{"response_range":{"header":{"revision":"4"}}}]}"#;
    const NO_LEASE: &str = r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;

    fn body(call: &EtcdCall) -> Value {
        serde_json::from_str(&call.body).unwrap()
    }

    #[test]
    fn lease_grant_asks_whole_seconds_as_strings() {
        let call = lease_grant(30_000);
        assert_eq!(call.path, "/v3/lease/grant");
        assert_eq!(body(&call), json!({"TTL": "30", "ID": "0"}));
        assert_eq!(body(&lease_grant(1)), json!({"TTL": "1", "ID": "0"}));
        assert_eq!(body(&lease_grant(1_001))["TTL"], "2");
        assert_eq!(
            parse_lease_grant(200, GRANT.as_bytes()),
            Ok(Lease {
                id: 3511015727077339653,
                ttl_s: 5
            })
        );
    }

    #[test]
    fn claim_is_a_version_zero_compare_with_put_and_range() {
        let call = claim_txn("/kong-retry/idem/abc", b"inflight", 3511015727077339659);
        assert_eq!(call.path, "/v3/kv/txn");
        assert_eq!(
            body(&call),
            json!({
                "compare": [{"target": "VERSION", "key": "L2tvbmctcmV0cnkvaWRlbS9hYmM=", "version": "0", "result": "EQUAL"}],
                "success": [{"requestPut": {"key": "L2tvbmctcmV0cnkvaWRlbS9hYmM=", "value": "aW5mbGlnaHQ=", "lease": "3511015727077339659"}}],
                "failure": [{"requestRange": {"key": "L2tvbmctcmV0cnkvaWRlbS9hYmM="}}],
            })
        );
    }

    #[test]
    fn complete_and_release_are_guarded_by_the_claim_revision() {
        let c = body(&complete_txn("/k", 2, b"done", 9));
        assert_eq!(
            c["compare"],
            json!([{"target": "MOD", "key": "L2s=", "mod_revision": "2", "result": "EQUAL"}])
        );
        assert_eq!(c["success"][0]["requestPut"]["lease"], "9");
        let r = body(&release_txn("/k", 3));
        assert_eq!(r["compare"][0]["mod_revision"], "3");
        assert_eq!(
            r["success"],
            json!([{"requestDeleteRange": {"key": "L2s="}}])
        );
    }

    #[test]
    fn parses_the_txn_answers_etcd_gives() {
        assert_eq!(
            parse_txn(200, CLAIMED.as_bytes()),
            Ok(TxnResult::Succeeded { revision: 2 })
        );
        assert_eq!(
            parse_txn(200, TAKEN.as_bytes()),
            Ok(TxnResult::Failed {
                current: Some(KeyValue {
                    value: b"inflight".to_vec(),
                    mod_revision: 2,
                    lease: 3511015727077339659
                })
            })
        );
        assert_eq!(
            parse_txn(200, DELETED.as_bytes()),
            Ok(TxnResult::Succeeded { revision: 4 })
        );
        assert_eq!(
            parse_txn(200, GONE.as_bytes()),
            Ok(TxnResult::Failed { current: None })
        );
    }

    #[test]
    fn errors_and_malformed_answers_are_clear_errors() {
        assert_eq!(
            parse_txn(404, NO_LEASE.as_bytes()),
            Err(EtcdError::Status {
                status: 404,
                message: "etcdserver: requested lease not found".into()
            })
        );
        assert!(matches!(
            parse_txn(503, b"upstream connect error"),
            Err(EtcdError::Status { status: 503, .. })
        ));
        assert!(matches!(parse_txn(200, b"{"), Err(EtcdError::NotJson(_))));
        let cases: &[(&str, &str)] = &[
            ("[]", "(answer)"),
            ("{}", "header"),
            (r#"{"header":{}}"#, "header.revision"),
            (r#"{"header":{"revision":2}}"#, "header.revision"),
            (r#"{"header":{"revision":"x"}}"#, "header.revision"),
            (
                r#"{"header":{"revision":"2"},"succeeded":"true"}"#,
                "succeeded",
            ),
            (r#"{"header":{"revision":"2"}}"#, "responses"),
            (
                r#"{"header":{"revision":"2"},"responses":[{}]}"#,
                "responses[0].response_range",
            ),
            (
                r#"{"header":{"revision":"2"},"responses":[{"response_range":{"kvs":{}}}]}"#,
                "responses[0].response_range.kvs",
            ),
            (
                r#"{"header":{"revision":"2"},"responses":[{"response_range":{"kvs":[{"value":"!!"}]}}]}"#,
                "responses[0].response_range.kvs[0].value",
            ),
            (
                r#"{"header":{"revision":"2"},"responses":[{"response_range":{"kvs":[{"value":"eA=="}]}}]}"#,
                "responses[0].response_range.kvs[0].mod_revision",
            ),
        ];
        for (json, at) in cases {
            match parse_txn(200, json.as_bytes()) {
                Err(EtcdError::Field { field, .. }) => assert_eq!(&field, at, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_lease_grant(200, br#"{"header":{"revision":"1"},"ID":3}"#),
            Err(EtcdError::Field { .. })
        ));
    }

    #[test]
    fn claim_outcomes() {
        let fp = Fingerprint::of("POST", "/pay", b"a");
        let in_flight = |until: u64| {
            Record::InFlight {
                fingerprint: fp,
                owner: 1,
                locked_until_ms: until,
            }
            .encode()
            .unwrap()
        };
        let failed = |value: Vec<u8>| TxnResult::Failed {
            current: Some(KeyValue {
                value,
                mod_revision: 7,
                lease: 1,
            }),
        };
        assert_eq!(
            claim_outcome(TxnResult::Succeeded { revision: 5 }, &fp, 0),
            ClaimOutcome::Claimed { revision: 5 }
        );
        assert_eq!(
            claim_outcome(failed(in_flight(10_000)), &fp, 0),
            ClaimOutcome::Decided(RequestDecision::Conflict { retry_after_s: 10 })
        );
        assert_eq!(
            claim_outcome(
                failed(in_flight(10_000)),
                &Fingerprint::of("POST", "/pay", b"b"),
                0
            ),
            ClaimOutcome::Decided(RequestDecision::Mismatch)
        );
        assert_eq!(
            claim_outcome(failed(in_flight(10_000)), &fp, 10_000),
            ClaimOutcome::TakeOver { mod_revision: 7 }
        );
        assert_eq!(
            claim_outcome(failed(b"garbage".to_vec()), &fp, 0),
            ClaimOutcome::TakeOver { mod_revision: 7 }
        );
        assert_eq!(
            claim_outcome(TxnResult::Failed { current: None }, &fp, 0),
            ClaimOutcome::Vanished
        );
    }

    #[test]
    fn record_keys_use_the_prefix_and_hex_id() {
        let id = RecordId::new("r", b"", b"k");
        let key = record_key("/kong-retry/idem/", &id);
        assert_eq!(key, format!("/kong-retry/idem/{}", id.hex()));
    }
}
