//! The stored record of one idempotency key and its byte codec.
//!
//! A record is either **in flight** (a request holds the key until `locked_until_ms`) or
//! **completed** (its response is replayed until `expires_at_ms`). The codec is
//! hand-written, versioned and compact, and keeps the body byte-exact (no JSON, no text
//! conversion). Decoding checks every length against what is left, so garbage, a cut-off
//! value or a value from a future version is an error, never a panic.
//!
//! Layout, version 1, integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..3 | magic `KRI` |
//! | 3 | version (1) |
//! | 4 | kind: 1 in flight, 2 completed |
//! | 5..37 | request fingerprint (SHA-256) |
//! | in flight: 37..45, 45..53 | owner token (u64), locked until, host ms (u64) |
//! | completed: 37..45 | expires at, host ms (u64) |
//! | then | status (u16), header count (u16), each header: name length (u16), name, value length (u32), value; body length (u32), body |

use super::fingerprint::Fingerprint;
use crate::header_map::Headers;
use std::fmt;

const MAGIC: &[u8; 3] = b"KRI";
const VERSION: u8 = 1;
const KIND_IN_FLIGHT: u8 = 1;
const KIND_COMPLETED: u8 = 2;

/// The header a replayed response carries.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A response as stored for replay: status, end-to-end headers, body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// Lower-case names; no pseudo, hop-by-hop or `content-length` headers.
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// What is kept of an upstream response: the status, its headers minus pseudo,
    /// hop-by-hop and framing headers (the replay gets its own framing), the body as is.
    pub fn from_upstream(status: u16, headers: &[(String, Vec<u8>)], body: &[u8]) -> Self {
        let lower: Headers = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        StoredResponse {
            status,
            headers: crate::request_copy::forwardable(&lower),
            body: body.to_vec(),
        }
    }

    /// The headers of a replay: the stored ones plus `idempotent-replayed: true`.
    pub fn replay_headers(&self) -> Headers {
        let mut out: Headers = self
            .headers
            .iter()
            .filter(|(n, _)| n != REPLAYED_HEADER)
            .cloned()
            .collect();
        out.push((REPLAYED_HEADER.to_string(), b"true".to_vec()));
        out
    }
}

/// One idempotency key's state in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A request holds the key; duplicates get 409 until `locked_until_ms`.
    InFlight {
        fingerprint: Fingerprint,
        /// Who holds the lock (the adapter's token), so that only the holder settles it.
        owner: u64,
        locked_until_ms: u64,
    },
    /// The operation's result; duplicates get it replayed until `expires_at_ms`.
    Completed {
        fingerprint: Fingerprint,
        expires_at_ms: u64,
        response: StoredResponse,
    },
}

/// Why bytes are not a record (or a record cannot be written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The value does not start with `KRI`.
    NotARecord,
    /// A version this code does not know.
    UnknownVersion(u8),
    /// A kind byte that is neither in flight nor completed.
    UnknownKind(u8),
    /// The value ends inside `what`.
    Truncated { what: &'static str },
    /// Bytes left after the record.
    TrailingBytes(usize),
    /// A stored status outside 100..=599.
    BadStatus(u16),
    /// A stored header name that is not UTF-8.
    BadHeaderName,
    /// The response has more headers, or a longer name or value, than the format holds.
    TooLarge { what: &'static str },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::NotARecord => write!(f, "not an idempotency record (no KRI magic)"),
            RecordError::UnknownVersion(v) => {
                write!(f, "idempotency record version {v} is unknown")
            }
            RecordError::UnknownKind(k) => write!(f, "idempotency record kind {k} is unknown"),
            RecordError::Truncated { what } => write!(f, "idempotency record cut off in {what}"),
            RecordError::TrailingBytes(n) => {
                write!(f, "idempotency record followed by {n} unexpected bytes")
            }
            RecordError::BadStatus(s) => write!(f, "idempotency record holds status {s}"),
            RecordError::BadHeaderName => {
                write!(f, "idempotency record holds a non-UTF-8 header name")
            }
            RecordError::TooLarge { what } => {
                write!(f, "response cannot be stored: too many or too long {what}")
            }
        }
    }
}

impl std::error::Error for RecordError {}

impl Record {
    /// The fingerprint of the request that made the record.
    pub fn fingerprint(&self) -> &Fingerprint {
        match self {
            Record::InFlight { fingerprint, .. } | Record::Completed { fingerprint, .. } => {
                fingerprint
            }
        }
    }

    /// The value bytes.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        match self {
            Record::InFlight {
                fingerprint,
                owner,
                locked_until_ms,
            } => {
                out.push(KIND_IN_FLIGHT);
                out.extend_from_slice(&fingerprint.0);
                out.extend_from_slice(&owner.to_le_bytes());
                out.extend_from_slice(&locked_until_ms.to_le_bytes());
            }
            Record::Completed {
                fingerprint,
                expires_at_ms,
                response,
            } => {
                out.push(KIND_COMPLETED);
                out.extend_from_slice(&fingerprint.0);
                out.extend_from_slice(&expires_at_ms.to_le_bytes());
                out.extend_from_slice(&response.status.to_le_bytes());
                let count = u16::try_from(response.headers.len())
                    .map_err(|_| RecordError::TooLarge { what: "headers" })?;
                out.extend_from_slice(&count.to_le_bytes());
                for (name, value) in &response.headers {
                    let n = u16::try_from(name.len()).map_err(|_| RecordError::TooLarge {
                        what: "header names",
                    })?;
                    let v = u32::try_from(value.len()).map_err(|_| RecordError::TooLarge {
                        what: "header values",
                    })?;
                    out.extend_from_slice(&n.to_le_bytes());
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(&v.to_le_bytes());
                    out.extend_from_slice(value);
                }
                let b = u32::try_from(response.body.len())
                    .map_err(|_| RecordError::TooLarge { what: "bodies" })?;
                out.extend_from_slice(&b.to_le_bytes());
                out.extend_from_slice(&response.body);
            }
        }
        Ok(out)
    }

    /// Reads a record; anything but a whole, known record is an error.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader { rest: bytes };
        if r.take(3, "magic").ok() != Some(MAGIC.as_slice()) {
            return Err(RecordError::NotARecord);
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        let kind = r.u8("kind")?;
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(r.take(32, "fingerprint")?);
        let fingerprint = Fingerprint(fingerprint);
        let record = match kind {
            KIND_IN_FLIGHT => Record::InFlight {
                fingerprint,
                owner: r.u64("owner")?,
                locked_until_ms: r.u64("lock deadline")?,
            },
            KIND_COMPLETED => {
                let expires_at_ms = r.u64("expiry")?;
                let status = r.u16("status")?;
                if !(100..=599).contains(&status) {
                    return Err(RecordError::BadStatus(status));
                }
                let count = r.u16("header count")?;
                let mut headers = Vec::new();
                for _ in 0..count {
                    let n = usize::from(r.u16("header name length")?);
                    let name = std::str::from_utf8(r.take(n, "header name")?)
                        .map_err(|_| RecordError::BadHeaderName)?
                        .to_string();
                    let v = r.u32("header value length")? as usize;
                    headers.push((name, r.take(v, "header value")?.to_vec()));
                }
                let b = r.u32("body length")? as usize;
                let body = r.take(b, "body")?.to_vec();
                Record::Completed {
                    fingerprint,
                    expires_at_ms,
                    response: StoredResponse {
                        status,
                        headers,
                        body,
                    },
                }
            }
            other => return Err(RecordError::UnknownKind(other)),
        };
        if !r.rest.is_empty() {
            return Err(RecordError::TrailingBytes(r.rest.len()));
        }
        Ok(record)
    }
}

/// Reads fields off the front of a value, never past its end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < n {
            return Err(RecordError::Truncated { what });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, RecordError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, RecordError> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, RecordError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, RecordError> {
        self.array(what).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed() -> Record {
        let all_bytes: Vec<u8> = (0..=255u8).collect();
        Record::Completed {
            fingerprint: Fingerprint::of("POST", "/pay", b"{}"),
            expires_at_ms: 1_700_000_000_000,
            response: StoredResponse {
                status: 201,
                headers: vec![
                    ("content-type".into(), b"application/json".to_vec()),
                    ("set-cookie".into(), b"a=1".to_vec()),
                    ("set-cookie".into(), b"b=2".to_vec()),
                    ("x-bin".into(), vec![0, 0xff, b'\n']),
                ],
                body: all_bytes,
            },
        }
    }

    #[test]
    fn round_trips_both_kinds_byte_exact() {
        let in_flight = Record::InFlight {
            fingerprint: Fingerprint::of("PATCH", "/a", b"x"),
            owner: u64::MAX,
            locked_until_ms: 42,
        };
        for record in [in_flight, completed()] {
            let bytes = record.encode().unwrap();
            assert_eq!(Record::decode(&bytes).unwrap(), record);
        }
        let empty_body = Record::Completed {
            fingerprint: Fingerprint::of("POST", "/", b""),
            expires_at_ms: 0,
            response: StoredResponse {
                status: 204,
                headers: vec![],
                body: vec![],
            },
        };
        assert_eq!(
            Record::decode(&empty_body.encode().unwrap()).unwrap(),
            empty_body
        );
    }

    #[test]
    fn in_flight_record_is_compact() {
        let r = Record::InFlight {
            fingerprint: Fingerprint::of("POST", "/", b""),
            owner: 1,
            locked_until_ms: 2,
        };
        assert_eq!(r.encode().unwrap().len(), 53);
    }

    #[test]
    fn garbage_and_every_truncation_are_errors_not_panics() {
        let bytes = completed().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Record::decode(&longer), Err(RecordError::TrailingBytes(1)));
        assert_eq!(Record::decode(b""), Err(RecordError::NotARecord));
        assert_eq!(
            Record::decode(b"{\"json\":1}"),
            Err(RecordError::NotARecord)
        );
        let mut v2 = bytes.clone();
        v2[3] = 2;
        assert_eq!(Record::decode(&v2), Err(RecordError::UnknownVersion(2)));
        let mut kind = bytes.clone();
        kind[4] = 9;
        assert_eq!(Record::decode(&kind), Err(RecordError::UnknownKind(9)));
        let mut status = bytes.clone();
        status[45..47].copy_from_slice(&700u16.to_le_bytes());
        assert_eq!(Record::decode(&status), Err(RecordError::BadStatus(700)));
        // Lengths claiming more than is there.
        let mut huge = bytes.clone();
        huge[47..49].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(Record::decode(&huge).is_err());
        let mut long_body = bytes.clone();
        let at = long_body.len() - 256 - 4;
        long_body[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Record::decode(&long_body),
            Err(RecordError::Truncated { what: "body" })
        );
        // Pseudo-random bytes behind a valid prefix: never a panic.
        let mut seed: u32 = 12345;
        for len in 0..400 {
            let mut junk = b"KRI\x01\x02".to_vec();
            for _ in 0..len {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                junk.push((seed >> 16) as u8);
            }
            let _ = Record::decode(&junk);
        }
    }

    #[test]
    fn upstream_headers_lose_hop_by_hop_and_framing_and_replay_is_marked() {
        let headers: Headers = vec![
            (":status".into(), b"200".to_vec()),
            ("Content-Type".into(), b"text/plain".to_vec()),
            ("content-length".into(), b"5".to_vec()),
            ("transfer-encoding".into(), b"chunked".to_vec()),
            ("connection".into(), b"close, x-conn".to_vec()),
            ("x-conn".into(), b"1".to_vec()),
            ("keep-alive".into(), b"timeout=5".to_vec()),
            ("idempotent-replayed".into(), b"false".to_vec()),
            ("etag".into(), b"\"v1\"".to_vec()),
        ];
        let stored = StoredResponse::from_upstream(200, &headers, b"hello");
        let names: Vec<&str> = stored.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "idempotent-replayed", "etag"]);
        let replay = stored.replay_headers();
        let marks: Vec<&[u8]> = replay
            .iter()
            .filter(|(n, _)| n == REPLAYED_HEADER)
            .map(|(_, v)| v.as_slice())
            .collect();
        assert_eq!(marks, [b"true".as_slice()]);
        assert_eq!(stored.body, b"hello");
    }
}
