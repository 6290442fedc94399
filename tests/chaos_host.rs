//! Seeded chaos: the real kong_retry `.wasm` on the test host under random requests, random
//! configs (the valid fixtures, adapted to each setup) and random upstream behaviour, and the
//! config parser under ~20 k mutated JSON documents.
//!
//! Setups: Kong (dispatch mode), Envoy in response mode, Envoy in dispatch mode, and Kong in
//! adaptive mode; about 200 requests each, on gateways rebuilt every few requests with a
//! fixture drawn at random. For every request, whatever was drawn:
//!
//! * no trap, and a response arrived (`run` errors instead of hanging);
//! * the client's response is framed correctly (unless it is the upstream's own cut-off
//!   response, proxied natively: nothing the filter could have repaired);
//! * at most `retries + 1` backend calls (delay-endpoint calls are waits, not attempts; they
//!   are told apart by their upstream);
//! * a request whose method is not in `methods` and that carries no non-blank idempotency key
//!   (POST, PATCH, PURGE, ...) reached the backend at most once;
//! * every backend call of a request carried exactly the body the client sent;
//! * when the last backend call got a complete response, the client got its status and
//!   exactly its body bytes.
//!
//! Everything is drawn from fixed seeds by a xorshift generator, so a failure reproduces: the
//! panic message prints the seed, the setup, the fixture, the gateway settings, the request,
//! every upstream call with the answer it got, and the client's response. To rerun one seed:
//! `KONG_RETRY_CHAOS_SEED=0x... cargo test --test chaos_host`. Nothing here asserts timing:
//! the clock is the host's fake one.

// Test code: a failed check panics, with the scenario that produced it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host_support;

use host_support::{
    delay_asked, http_date, is_backend, module, CLUSTER, DELAY, EPOCH_MS, UPSTREAM,
};
use kong_retry::config::{self, parse, BudgetStore, Plan};
use proxy_wasm_test_host::{
    CallId, CallKind, ClientResponse, Failure, Gateway, Profile, Reply, Request, UpstreamCall,
};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

/// Requests per setup.
const REQUESTS: usize = 200;
/// Mutated documents fed to the config parser.
const DOCUMENTS: usize = 20_000;
const PARSER_SEED: u64 = 0x5eed_c0f1_9000_0001;

// ---------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------

/// xorshift64*: small, seeded, no dependency.
struct Xs(u64);

impl Xs {
    fn new(seed: u64) -> Self {
        Xs(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn size(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as u64, hi as u64) as usize
    }

    /// True with probability `percent` %.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn pick_ref<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }

    /// Printable ASCII (a header value, a token).
    fn text(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b' ' + (self.below(95) as u8)))
            .collect()
    }

    fn token(&mut self, n: usize) -> String {
        const T: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~";
        (0..n).map(|_| char::from(self.pick(T))).collect()
    }

    /// A generator of its own, so one stream's draws do not shift another's.
    fn fork(&mut self) -> Xs {
        Xs::new(self.next())
    }
}

/// The name in random letter case.
fn odd_case(rng: &mut Xs, name: &str) -> String {
    name.chars()
        .map(|c| {
            if rng.chance(50) {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Fixtures and setups
// ---------------------------------------------------------------------------------------

/// `tests/config/valid/*.json`, by name.
fn fixtures() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config/valid");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() > 10, "fixtures in {}", dir.display());
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Kong,
    EnvoyResponse,
    EnvoyDispatch,
    KongAdaptive,
}

impl Setup {
    fn profile(self) -> Profile {
        match self {
            Setup::Kong | Setup::KongAdaptive => Profile::Kong,
            Setup::EnvoyResponse | Setup::EnvoyDispatch => Profile::Envoy,
        }
    }

    fn seed(self) -> u64 {
        match self {
            Setup::Kong => 0xc4a0_5000_0000_0001,
            Setup::EnvoyResponse => 0xc4a0_5000_0000_0002,
            Setup::EnvoyDispatch => 0xc4a0_5000_0000_0003,
            Setup::KongAdaptive => 0xc4a0_5000_0000_0004,
        }
    }

    /// The fixture as this setup runs it (its upstream, mode and delay endpoint), or `None`
    /// when the fixture's mode belongs to another setup.
    fn adapt(self, fixture: &Value, rng: &mut Xs) -> Option<Value> {
        let mut obj = fixture.as_object().cloned().unwrap_or_default();
        let mode = obj.get("mode").and_then(Value::as_str).unwrap_or("auto");
        let s = |v: &str| Value::String(v.to_string());
        match self {
            Setup::Kong => {
                if mode == "response" || mode == "adaptive" {
                    return None;
                }
            }
            Setup::EnvoyResponse | Setup::EnvoyDispatch => {
                if mode == "adaptive" {
                    return None;
                }
                let m = if self == Setup::EnvoyResponse {
                    "response"
                } else {
                    "dispatch"
                };
                obj.insert("mode".into(), s(m));
            }
            Setup::KongAdaptive => {
                if mode == "response" {
                    return None;
                }
                obj.insert("mode".into(), s("adaptive"));
                // Now and then a daily maintenance window around the host's clock (22:13 UTC
                // at host time 0): protected from the first request.
                if rng.chance(25) {
                    let window = serde_json::json!({"daily": {"start": "22:00", "end": "23:00"}});
                    match obj.get_mut("maintenance_windows") {
                        Some(Value::Array(list)) => list.push(window),
                        _ => {
                            obj.insert("maintenance_windows".into(), Value::Array(vec![window]));
                        }
                    }
                }
            }
        }
        match self.profile() {
            Profile::Kong => {
                obj.insert("upstream".into(), s(UPSTREAM));
                // Mostly with the delay endpoint (backoff possible), sometimes without.
                if rng.chance(80) {
                    obj.insert("delay_endpoint".into(), s(DELAY));
                } else {
                    obj.remove("delay_endpoint");
                }
            }
            Profile::Envoy => {
                obj.insert("upstream".into(), s(CLUSTER));
            }
        }
        Some(Value::Object(obj))
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "HEAD", "PUT", "PUT", "DELETE", "POST", "POST", "POST", "PATCH", "PATCH",
    "OPTIONS", "TRACE", "PURGE", "PROPFIND", "M-SEARCH", "post", "Patch", "get",
];

const SEGMENTS: &[&str] = &[
    "orders",
    "v1",
    "a%2Fb",
    "%2e%2e",
    "..",
    ".",
    "%00",
    "%E2%82%AC",
    "%zz",
    "%",
    "caf%C3%A9",
    "ü",
    "with%20space",
    "~user",
    "a;b=c",
    "@",
    ":colon",
    "UPPER",
    "",
    "kong-retry",
    "kong-retry%2Fdelay",
];

const QUERY_PARTS: &[&str] = &[
    "a=1",
    "b=%20",
    "c",
    "d=",
    "=e",
    "q=a+b",
    "amp=%26",
    "eq=%3D%3D",
    "snow=%E2%98%83",
    "bad=%G0",
    "",
    "ms=5",
    "list=1,2,3",
    "x[]=1",
];

fn random_path(rng: &mut Xs) -> String {
    match rng.below(40) {
        0 => return "*".into(),
        1 => return "/kong-retry/delay?ms=5".into(),
        2 => return format!("/{}", rng.token(4000)),
        _ => {}
    }
    let mut p = String::new();
    let segments = rng.below(5);
    if segments == 0 {
        p.push('/');
    }
    for _ in 0..segments {
        p.push('/');
        p.push_str(rng.pick(SEGMENTS));
    }
    if rng.chance(40) {
        p.push('?');
        let n = rng.range(1, 4);
        for i in 0..n {
            if i > 0 {
                p.push('&');
            }
            p.push_str(rng.pick(QUERY_PARTS));
        }
    }
    p
}

fn random_body(rng: &mut Xs, max_body: usize, buffer: usize) -> Vec<u8> {
    match rng.below(100) {
        0..=39 => Vec::new(),
        40..=59 => {
            let n = rng.size(1, 200);
            rng.bytes(n)
        }
        60..=69 => {
            let mut all: Vec<u8> = (0..=255u8).collect();
            if rng.chance(50) {
                all.reverse();
            }
            all
        }
        70..=79 if max_body < 300_000 => {
            let n = max_body + rng.size(1, 100);
            rng.bytes(n)
        }
        80..=89 => {
            let n = buffer + rng.size(1, 4096);
            rng.bytes(n)
        }
        90..=99 => {
            let n = rng.size(64 * 1024, 256 * 1024);
            rng.bytes(n)
        }
        _ => b"{\"item\":1}".to_vec(),
    }
}

/// Adds one random header (or a few of one kind).
fn random_header(rng: &mut Xs, req: Request) -> Request {
    match rng.below(18) {
        0 => req.header(
            "Connection",
            rng.pick(&["keep-alive", "close", "keep-alive, x-hop", "Upgrade, TE"]),
        ),
        1 => req.header("x-hop", "1").header("connection", "X-Hop"),
        2 => req.header("Keep-Alive", "timeout=5, max=100"),
        3 => req.header("TE", "trailers"),
        4 => req.header("Upgrade", "websocket"),
        5 => req.header("Proxy-Connection", "keep-alive"),
        6 => req.header("Expect", "100-continue"),
        7 => req.header("Transfer-Encoding", "chunked"),
        8 => req
            .header("accept", "text/html")
            .header("Accept", "application/json"),
        9 => {
            let v = rng.text(8 * 1024);
            req.header("x-long", &v)
        }
        10 => req.header("x-empty", ""),
        11 => {
            let name = odd_case(rng, "x-custom-header");
            req.header(&name, "odd case")
        }
        12 => req.header("x-unicode", "zürich ☃ 東京"),
        13 => req.header("x-retry-attempt", "7"),
        14 => {
            let cookies: Vec<String> = (0..40).map(|i| format!("c{i}=v{i}")).collect();
            req.header("cookie", &cookies.join("; "))
        }
        15 => req.header("x-padded", "  spaced  "),
        16 => req.header("trailer", "x-checksum"),
        _ => req.header("content-type", "application/octet-stream"),
    }
}

/// A value for the idempotency header: mostly a real key, sometimes blank.
fn key_value(rng: &mut Xs) -> (String, bool) {
    if rng.chance(30) {
        (rng.pick(&["", " ", "\t", "  \t "]).to_string(), false)
    } else {
        let n = rng.size(1, 40);
        (rng.token(n), true)
    }
}

/// A random request, and whether it carries a non-blank idempotency key (as `plan` names it).
fn random_request(rng: &mut Xs, plan: &Plan, buffer: usize) -> (Request, bool) {
    let method = rng.pick(METHODS);
    let mut req = Request::new(method, &random_path(rng));
    if rng.chance(10) {
        req = req.authority(rng.pick(&["api.example", "[::1]:8080", "EXAMPLE.com:443"]));
    }
    let body = random_body(rng, plan.max_body_bytes, buffer);
    for _ in 0..rng.below(8) {
        req = random_header(rng, req);
    }
    let mut has_key = false;
    if rng.chance(35) {
        let keys = if rng.chance(10) { 2 } else { 1 };
        for _ in 0..keys {
            let name = odd_case(rng, &plan.idempotency_header);
            let (value, real) = key_value(rng);
            has_key |= real;
            req = req.header(&name, &value);
        }
    }
    let chunked = req.header_value("transfer-encoding").is_some();
    if !body.is_empty() && !chunked {
        match rng.below(10) {
            0 => {
                req = req.header("Transfer-Encoding", "chunked");
            }
            1 => {
                let name = odd_case(rng, "content-length");
                req = req.header(&name, &body.len().to_string());
            }
            _ => {}
        }
    }
    (req.body(body), has_key)
}

// ---------------------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------------------

/// What one upstream call ended with, as far as the client could tell.
#[derive(Debug, Clone)]
enum Answer {
    /// A complete response, delivered before the call's timeout.
    Complete { status: u16, body: Vec<u8> },
    /// A response cut off mid-body.
    Truncated { status: u16, partial: Vec<u8> },
    /// Refused, reset, timed out, or too slow.
    NoResponse,
    /// The delay endpoint's answer (not an attempt).
    Delay,
    /// The idempotency store's answer (etcd; not an attempt).
    Store,
}

const RETRY_AFTER_GARBAGE: &[&str] = &[
    "soon",
    "-5",
    "1.5",
    "",
    " 2 ",
    "99999999999999999999999",
    "0x10",
    "Tue, 99 Foo 2023 99:99:99 GMT",
    "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 1994",
    "2, 3",
];

fn retry_after(rng: &mut Xs, call: &UpstreamCall) -> String {
    let now = (EPOCH_MS + call.sent_at_ms) / 1000;
    match rng.below(3) {
        0 => rng.pick(&["0", "1", "3", "30", "3600"]).to_string(),
        1 => {
            let at = match rng.below(4) {
                0 => now.saturating_sub(10),
                1 => now + 1,
                2 => now + 5,
                _ => now + 100_000,
            };
            http_date(at)
        }
        _ => rng.pick(RETRY_AFTER_GARBAGE).to_string(),
    }
}

fn response_body(rng: &mut Xs, head: bool, status: u16) -> Vec<u8> {
    if head || status == 204 {
        return Vec::new();
    }
    match rng.below(10) {
        0..=2 => Vec::new(),
        3..=6 => format!("status {status} {}", rng.token(12)).into_bytes(),
        7..=8 => {
            let n = rng.size(1, 300);
            rng.bytes(n)
        }
        _ => (0..=255u8).collect(),
    }
}

/// A complete response with some ordinary headers and, sometimes, a correct content-length.
fn response(rng: &mut Xs, status: u16, body: Vec<u8>) -> Reply {
    let mut r = Reply::status(status).header("content-type", "application/octet-stream");
    if rng.chance(30) {
        r = r.header("content-length", &body.len().to_string());
    } else if rng.chance(10) {
        r = r.header("transfer-encoding", "chunked");
    }
    r.body(body)
}

/// One backend call's answer: the reply and what it amounts to.
fn upstream_reply(rng: &mut Xs, call: &UpstreamCall, head: bool) -> (Reply, Answer) {
    let timeout = call.timeout_ms;
    // A complete answer arrives strictly before the call's timeout.
    let quick = rng.below(timeout.min(200));
    let complete = |reply: Reply, status: u16, body: Vec<u8>| {
        (reply.after_ms(quick), Answer::Complete { status, body })
    };
    match rng.below(100) {
        0..=19 => {
            let status = rng.pick(&[200, 201, 204, 404, 409]);
            let body = response_body(rng, head, status);
            complete(response(rng, status, body.clone()), status, body)
        }
        20..=29 => {
            let body = response_body(rng, head, 429);
            let value = retry_after(rng, call);
            let reply = response(rng, 429, body.clone()).header("Retry-After", &value);
            complete(reply, 429, body)
        }
        30..=49 => {
            let status = rng.pick(&[500, 502, 503, 503, 504]);
            let body = response_body(rng, head, status);
            let mut reply = response(rng, status, body.clone());
            if status == 503 && rng.chance(40) {
                reply = reply.header("retry-after", &retry_after(rng, call));
            }
            complete(reply, status, body)
        }
        50..=57 => (
            Reply::failure(Failure::Refused).after_ms(quick),
            Answer::NoResponse,
        ),
        58..=64 => (
            Reply::failure(Failure::Timeout).after_ms(timeout),
            Answer::NoResponse,
        ),
        65..=71 => (
            Reply::failure(Failure::Reset).after_ms(quick),
            Answer::NoResponse,
        ),
        72..=77 => {
            let status = rng.pick(&[200, 503]);
            let n = rng.size(0, 100);
            let partial = rng.bytes(n);
            let announced = n + rng.size(1, 1000);
            (
                Reply::truncated(status, announced, partial.clone()).after_ms(quick),
                Answer::Truncated { status, partial },
            )
        }
        78..=83 => {
            let body = response_body(rng, head, 200);
            let mut reply = Reply::status(200);
            for i in 0..rng.range(20, 60) {
                reply = reply.header("Set-Cookie", &format!("s{i}=v{i}; Path=/; HttpOnly"));
            }
            complete(reply.body(body.clone()), 200, body)
        }
        84..=89 => {
            let body = if head {
                Vec::new()
            } else {
                let n = rng.size(64 * 1024, 512 * 1024);
                rng.bytes(n)
            };
            complete(response(rng, 200, body.clone()), 200, body)
        }
        // Too slow: the call's timeout ends it first (a timeout of 0 means the host's own
        // default, so that call just times out).
        90..=94 if timeout > 0 => (
            Reply::status(200)
                .body(b"late".to_vec())
                .after_ms(timeout + rng.range(1, 100)),
            Answer::NoResponse,
        ),
        90..=94 => (
            Reply::failure(Failure::Timeout).after_ms(timeout),
            Answer::NoResponse,
        ),
        _ => {
            let body = response_body(rng, head, 200);
            let reply = Reply::status(200)
                .header("Connection", "close, x-hop")
                .header("x-hop", "secret")
                .header("keep-alive", "timeout=5")
                .header("x-unicode", "zürich ☃")
                .header("x-empty", "")
                .header("vary", "a")
                .header("Vary", "b")
                .body(body.clone());
            complete(reply, 200, body)
        }
    }
}

/// The loopback delay endpoint: mostly answers when the wait is over, sometimes misbehaves.
fn delay_reply(rng: &mut Xs, call: &UpstreamCall) -> Reply {
    let ms = delay_asked(call).unwrap_or(0);
    match rng.below(20) {
        0 => Reply::failure(Failure::Refused),
        1 => Reply::status(500),
        2 => Reply::failure(Failure::Timeout).after_ms(call.timeout_ms),
        _ => Reply::status(204).after_ms(ms),
    }
}

// ---------------------------------------------------------------------------------------
// One request, checked
// ---------------------------------------------------------------------------------------

fn describe_request(req: &Request, has_key: bool) -> String {
    let mut s = format!(
        "request {} {} (authority {}), key: {has_key}\n",
        req.method,
        clip(&req.path, 120),
        req.authority
    );
    for (k, v) in &req.headers {
        let _ = writeln!(s, "  {k}: {} ({} bytes)", clip(v, 60), v.len());
    }
    let _ = writeln!(s, "  body: {} bytes {}", req.body.len(), digest(&req.body));
    s
}

fn describe_calls(calls: &[UpstreamCall], answers: &BTreeMap<CallId, Answer>) -> String {
    let mut s = String::new();
    for c in calls {
        let kind = match &c.kind {
            CallKind::Proxied => "proxied".to_string(),
            CallKind::Dispatch { upstream, .. } => format!("dispatch to {upstream}"),
        };
        let answer = match answers.get(&c.id) {
            Some(Answer::Complete { status, body }) => {
                format!("complete {status}, {} bytes {}", body.len(), digest(body))
            }
            Some(Answer::Truncated { status, partial }) => {
                format!("truncated {status} after {} bytes", partial.len())
            }
            Some(other) => format!("{other:?}"),
            None => "not answered".to_string(),
        };
        let _ = writeln!(
            s,
            "  call {:?} at {} ms: {kind} {} {} timeout {} ms, body {} bytes {} -> {answer}",
            c.id,
            c.sent_at_ms,
            c.method,
            clip(&c.path, 80),
            c.timeout_ms,
            c.body.len(),
            digest(&c.body)
        );
    }
    s
}

fn describe_response(r: &ClientResponse) -> String {
    let mut s = format!(
        "client response {} from {:?}, trapped {}, framing_error {}, body {} bytes {}\n",
        r.status,
        r.source,
        r.trapped,
        r.framing_error,
        r.body.len(),
        digest(&r.body)
    );
    for (k, v) in &r.headers {
        let _ = writeln!(s, "  {k}: {}", clip(v, 60));
    }
    s
}

fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let cut: String = s.chars().take(n).collect();
        format!("{cut}…")
    }
}

/// FNV-1a of a body, to compare bodies in a message.
fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("#{h:016x}")
}

/// What the requests of one setup went through, to check that the chaos reached every path.
#[derive(Debug, Default)]
struct Coverage {
    requests: usize,
    /// More than one backend call.
    retried: usize,
    /// Waited on the delay endpoint (Kong).
    delayed: usize,
    /// The proxy's own forward (native path, response mode's first attempt).
    proxied: usize,
    /// The last attempt got a complete response, and the client's was compared with it.
    relayed: usize,
    /// No complete response from the last attempt (failure, cut off, too slow).
    failed_last: usize,
    /// Not replayable and no key: checked to reach the backend once.
    keyless: usize,
}

/// Sends one random request through `gw` with a random upstream and checks every rule.
/// `scenario` says how to get here (seed, setup, fixture, gateway settings).
fn one_request(
    gw: &mut Gateway,
    plan: &Plan,
    buffer: usize,
    rng: &mut Xs,
    scenario: &str,
    seen: &mut Coverage,
) {
    let (req, has_key) = random_request(rng, plan, buffer);
    let worker = rng.below(4) as usize;
    let mut upstream_rng = rng.fork();
    let head = req.method.eq_ignore_ascii_case("HEAD");
    let leftover = gw.pending();
    let before = gw.calls().len();
    let mut answers: BTreeMap<CallId, Answer> = BTreeMap::new();
    let result = gw.run_on(worker, req.clone(), |call| {
        let (reply, answer) = if is_store(call) {
            // The store's own behaviour is tested against a real etcd; here it is down, so
            // every keyed request follows `on_store_unavailable`.
            (Reply::status(503), Answer::Store)
        } else if is_backend(call) {
            upstream_reply(&mut upstream_rng, call, head)
        } else {
            (delay_reply(&mut upstream_rng, call), Answer::Delay)
        };
        answers.insert(call.id, answer);
        reply
    });
    let calls: Vec<UpstreamCall> = gw.calls()[before..].to_vec();
    let context = || {
        format!(
            "{scenario}worker {worker}\n{}calls:\n{}",
            describe_request(&req, has_key),
            describe_calls(&calls, &answers)
        )
    };
    if !leftover.is_empty() {
        panic!(
            "calls of an earlier request still pending: {leftover:?}\n{}",
            context()
        );
    }
    let ex = match result {
        Ok(ex) => ex,
        Err(e) => panic!("no response: {e}\n{}traps: {:?}", context(), gw.traps()),
    };
    let resp = &ex.response;
    let mut problems: Vec<String> = Vec::new();
    if !gw.traps().is_empty() {
        problems.push(format!("traps: {:?}", gw.traps()));
    }
    if resp.trapped {
        problems.push("the response says the filter trapped".into());
    }

    let backend: Vec<&UpstreamCall> = calls
        .iter()
        .filter(|c| is_backend(c) && !is_store(c))
        .collect();
    if backend.is_empty() && answered_for_key(plan, resp) {
        // Gateway idempotency answered (a refusal, a replay): nothing reached the backend.
        seen.requests += 1;
        if !gw.traps().is_empty() || resp.trapped {
            panic!("traps: {:?}\n{}", gw.traps(), context());
        }
        return;
    }
    let mut max_attempts = plan.retries as usize + 1;
    // Kong cannot answer from the callback of a failed dispatch (ngx_wasm_module drops that
    // local response): the answer is relayed through a zero wait on the delay endpoint, and
    // without one, or when that relay fails too, the request goes natively once more.
    let relayed = calls
        .iter()
        .any(|c| !is_backend(c) && c.path.ends_with("?ms=0"));
    let native_tail = gw.profile() == Profile::Kong
        && (plan.delay_endpoint.is_none() || relayed)
        && backend.len() == max_attempts + 1
        && backend.last().is_some_and(|c| !c.is_dispatch())
        && backend[..max_attempts].iter().all(|c| c.is_dispatch());
    if native_tail {
        max_attempts += 1;
    }
    if backend.len() > max_attempts {
        problems.push(format!(
            "{} backend calls, retries {} allow {max_attempts}",
            backend.len(),
            plan.retries
        ));
    }
    let replayable_method = plan
        .methods
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&req.method));
    if !replayable_method && !has_key && backend.len() > 1 {
        problems.push(format!(
            "{} without an idempotency key reached the backend {} times",
            req.method,
            backend.len()
        ));
    }
    for c in &backend {
        if c.body != req.body {
            problems.push(format!(
                "call {:?} carried {} bytes {}, the client sent {} bytes {}",
                c.id,
                c.body.len(),
                digest(&c.body),
                req.body.len(),
                digest(&req.body)
            ));
        }
    }

    // The upstream's own cut-off response, proxied natively: framed as badly as it came.
    let native_cut_off = backend.iter().any(|c| {
        matches!(c.kind, CallKind::Proxied)
            && matches!(answers.get(&c.id), Some(Answer::Truncated { status, partial })
                if *status == resp.status && *partial == resp.body)
    });
    if resp.framing_error && !native_cut_off {
        problems.push("the client's response is not framed correctly".into());
    }

    if let Some(last) = backend.last() {
        if let Some(Answer::Complete { status, body }) = answers.get(&last.id) {
            if resp.status != *status || resp.body != *body {
                problems.push(format!(
                    "the last attempt got {status} with {} bytes {}, the client got {} with {} bytes {}",
                    body.len(),
                    digest(body),
                    resp.status,
                    resp.body.len(),
                    digest(&resp.body)
                ));
            }
        }
    } else {
        problems.push("no backend call at all".into());
    }

    seen.requests += 1;
    seen.retried += usize::from(backend.len() > 1);
    seen.delayed += usize::from(backend.len() < calls.len());
    seen.proxied += usize::from(backend.iter().any(|c| !c.is_dispatch()));
    match backend.last().and_then(|c| answers.get(&c.id)) {
        Some(Answer::Complete { .. }) => seen.relayed += 1,
        _ => seen.failed_last += 1,
    }
    seen.keyless += usize::from(!replayable_method && !has_key);

    if !problems.is_empty() {
        panic!(
            "{}\n{}{}",
            problems.join("\n"),
            context(),
            describe_response(resp)
        );
    }
}

/// An etcd call of the idempotency store (its JSON gateway's paths).
fn is_store(call: &UpstreamCall) -> bool {
    call.path.starts_with("/v3/")
}

/// Did gateway idempotency answer instead of the backend: a problem+json refusal (400,
/// 409, 413, 422, 503) or a replay?
fn answered_for_key(plan: &Plan, resp: &ClientResponse) -> bool {
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    plan.idempotency.enabled
        && (header("idempotent-replayed") == Some("true")
            || (header("content-type") == Some("application/problem+json")
                && matches!(resp.status, 400 | 409 | 413 | 422 | 503)))
}

// ---------------------------------------------------------------------------------------
// One setup
// ---------------------------------------------------------------------------------------

fn seeds(setup: Setup) -> Vec<u64> {
    match std::env::var("KONG_RETRY_CHAOS_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => s.parse(),
            };
            vec![parsed.unwrap_or_else(|e| panic!("KONG_RETRY_CHAOS_SEED={s}: {e}"))]
        }
        Err(_) => vec![setup.seed()],
    }
}

fn chaos(setup: Setup) {
    let fixtures = fixtures();
    for seed in seeds(setup) {
        let mut rng = Xs::new(seed);
        let mut sent = 0;
        let mut gateways = 0;
        let mut seen = Coverage::default();
        while sent < REQUESTS {
            let (name, fixture) = rng.pick_ref(&fixtures);
            let Some(config) = setup.adapt(fixture, &mut rng) else {
                continue;
            };
            let config = config.to_string();
            let plan = parse(config.as_bytes())
                .unwrap_or_else(|e| panic!("{setup:?}: {name} adapted as {config}: {e}"));
            // Envoy waits on the root's 5 ms tick: a deadline that leaves room for minutes of
            // backoff (backoff-fixed-max.json: 5 min) is tens of thousands of ticks per wait,
            // beyond what `run` drives (10 000 steps) and slow besides.
            if setup.profile() == Profile::Envoy
                && plan.deadline_ms.saturating_sub(plan.per_try_timeout_ms) > 40_000
            {
                continue;
            }
            let workers = rng.size(1, 3);
            let buffer = rng.pick(&[8192, 8192, 1024, 65536]);
            let proxy_timeout = rng.pick(&[0u64, 0, 500, 3000]);
            // Kong without a shared-data zone (the filter must notice, not trap); an operator
            // who trusts a zone that is not there (`store: shm`) gets the trap Kong gives.
            let zone = !(setup.profile() == Profile::Kong
                && plan.budget_store.store != BudgetStore::Shm
                && rng.chance(15));
            let host_seed = rng.next();
            let mut builder = Gateway::builder(setup.profile(), module())
                .plugin_config(config.as_str())
                .upstream(UPSTREAM)
                .cluster(CLUSTER)
                .workers(workers)
                .seed(host_seed)
                .body_buffer_size(buffer)
                .shared_data_zone(zone)
                .shared_data_zone_name(&plan.budget_store.zone);
            if proxy_timeout > 0 {
                builder = builder.proxy_timeout_ms(proxy_timeout);
            }
            let mut gw = builder
                .build()
                .unwrap_or_else(|e| panic!("{setup:?}: {name} as {config}: {e}"));
            let n = rng.size(5, 15).min(REQUESTS - sent);
            for i in 0..n {
                let scenario = format!(
                    "seed {seed:#x} ({setup:?}), gateway {gateways}, request {i} \
                     ({sent} before it)\nfixture {name} as {config}\n\
                     host: {workers} workers, body buffer {buffer}, proxy timeout {}, \
                     shared-data zone {zone}, host seed {host_seed:#x}, clock {} ms\n",
                    if proxy_timeout == 0 {
                        "default".to_string()
                    } else {
                        format!("{proxy_timeout} ms")
                    },
                    gw.now_ms()
                );
                one_request(&mut gw, &plan, buffer, &mut rng, &scenario, &mut seen);
                sent += 1;
                let pause = match rng.below(10) {
                    0..=5 => rng.below(50),
                    6..=8 => rng.below(3000),
                    _ => rng.range(20_000, 70_000),
                };
                gw.advance(pause);
            }
            gateways += 1;
        }
        println!("{setup:?} seed {seed:#x}: {gateways} gateways, {seen:?}");
        // The draws reach every path (a change to the generators that stops reaching one
        // would make this test quietly weaker).
        let tenth = REQUESTS / 10;
        assert!(seen.retried >= REQUESTS / 20, "{setup:?}: {seen:?}");
        assert!(
            seen.relayed >= tenth && seen.failed_last >= tenth,
            "{setup:?}: {seen:?}"
        );
        assert!(seen.keyless >= tenth, "{setup:?}: {seen:?}");
        assert!(seen.proxied >= tenth, "{setup:?}: {seen:?}");
        if setup.profile() == Profile::Kong {
            assert!(seen.delayed >= REQUESTS / 40, "{setup:?}: {seen:?}");
        }
    }
}

#[test]
fn chaos_kong_dispatch() {
    chaos(Setup::Kong);
}

#[test]
fn chaos_envoy_response_mode() {
    chaos(Setup::EnvoyResponse);
}

#[test]
fn chaos_envoy_dispatch_mode() {
    chaos(Setup::EnvoyDispatch);
}

#[test]
fn chaos_kong_adaptive_mode() {
    chaos(Setup::KongAdaptive);
}

#[test]
fn every_setup_has_fixtures_to_draw_from() {
    let fixtures = fixtures();
    for setup in [
        Setup::Kong,
        Setup::EnvoyResponse,
        Setup::EnvoyDispatch,
        Setup::KongAdaptive,
    ] {
        let mut rng = Xs::new(1);
        let fit = fixtures
            .iter()
            .filter(|(_, f)| setup.adapt(f, &mut rng).is_some())
            .count();
        assert!(fit >= 5, "{setup:?}: only {fit} fixtures fit");
    }
}

// ---------------------------------------------------------------------------------------
// The parser under mutated documents
// ---------------------------------------------------------------------------------------

/// Field names nested in the top-level objects (backoff, budget, maintenance windows).
const NESTED_FIELDS: &[&str] = &[
    "strategy",
    "base_interval",
    "max_interval",
    "interval",
    "enabled",
    "percent",
    "min_retries_per_second",
    "window",
    "scope",
    "on_store_unavailable",
    "zone",
    "store",
    "cache",
    "start",
    "end",
    "daily",
];

/// Names the parser does not know: old spellings, near-misses, nothing at all.
const FOREIGN_FIELDS: &[&str] = &[
    "retry_timeout",
    "num_retries",
    "Retries",
    "ｒｅｔｒｉｅｓ",
    "retries\u{0}",
    "retr\u{200b}ies",
    "",
    "🙂",
];

/// Field names the parser knows (its own top-level list, then the nested ones), and some it
/// does not.
fn field_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        config::FIELDS
            .iter()
            .chain(NESTED_FIELDS)
            .chain(FOREIGN_FIELDS)
            .copied()
            .collect()
    })
}

const NASTY_STRINGS: &[&str] = &[
    "",
    " ",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "1e999",
    "0x10",
    "5ms",
    " 5 ",
    "-0",
    "auto",
    "adaptive",
    "response",
    "dispatch",
    "GET",
    "get, put,DELETE",
    "5xx",
    "gateway-error,",
    ",,,",
    "502,503,timeout",
    "599,600,399",
    "\u{0}",
    "\u{feff}retries",
    "ｒｅｔｒｙ",
    "☃",
    "🙂🙂",
    "\u{202e}reversed",
    "127.0.0.1:8555",
    "[::1]:0",
    "[::1]:65536",
    "[::1",
    "http://h:1/",
    "https://[::1]:99999",
    "https://api.internal:8443/",
    "host:-1",
    ":80",
    "fixed",
    "exponential",
    "route",
    "upstream",
    "deny",
    "allow",
    "shm",
    "none",
    "kong_retry",
    "a/b",
    "*",
    "00:00",
    "23:59",
    "24:00",
    "12:60",
    "1:5",
    "-1:00",
    "99999999999999999999:00",
    "2026-12-01T00:00:00Z",
    "2024-02-29T12:00:00Z",
    "2023-02-29T12:00:00Z",
    "2026-12-01T00:00:00.999999999999999999999Z",
    "2026-12-01T00:00:00+23:59",
    "2026-12-01T00:00:00-00:00",
    "2026-12-01t00:00:00z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "99999-01-01T00:00:00Z",
    "-2026-01-01T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-12-32T00:00:00Z",
    "2026-12-01T25:00:00Z",
    "2026-12-01T00:00:60Z",
    "2026-12-01 00:00:00Z",
    "2026-12-01T00:00Z",
    "x-retry-attempt",
    "Content-Length",
    "connection",
    ":path",
    "host",
];

fn nasty_number(rng: &mut Xs) -> Value {
    let ints: &[i128] = &[
        0,
        -1,
        1,
        2,
        10,
        11,
        100,
        101,
        999,
        1000,
        3_600_000,
        3_600_001,
        600_000,
        600_001,
        100_000,
        100_001,
        67_108_864,
        67_108_865,
        9_007_199_254_740_993,
        u32::MAX as i128,
        u32::MAX as i128 + 1,
        i64::MAX as i128,
        i64::MIN as i128,
        u64::MAX as i128,
    ];
    match rng.below(4) {
        0 => Value::Number(
            Number::from_f64(rng.pick(&[0.5, -0.0, 1e308, 2.5e-300, 10.0, 1e19])).unwrap(),
        ),
        _ => {
            let n = rng.pick(ints);
            if n < 0 {
                Value::Number(Number::from(n as i64))
            } else {
                Value::Number(Number::from(n as u64))
            }
        }
    }
}

fn nasty_value(rng: &mut Xs, depth: u32) -> Value {
    match rng.below(if depth > 3 { 6 } else { 9 }) {
        0 | 1 => nasty_number(rng),
        2 | 3 => Value::String(rng.pick(NASTY_STRINGS).to_string()),
        4 => Value::Bool(rng.chance(50)),
        5 => Value::Null,
        6 => Value::Array(
            (0..rng.below(5))
                .map(|_| nasty_value(rng, depth + 1))
                .collect(),
        ),
        7 => {
            let mut m = Map::new();
            for _ in 0..rng.below(5) {
                m.insert(
                    rng.pick(field_names()).to_string(),
                    nasty_value(rng, depth + 1),
                );
            }
            Value::Object(m)
        }
        _ => {
            // A maintenance-window shaped object with edge values.
            if rng.chance(50) {
                serde_json::json!({"daily": {
                    "start": rng.pick(NASTY_STRINGS).to_string(),
                    "end": rng.pick(NASTY_STRINGS).to_string(),
                }})
            } else {
                serde_json::json!({
                    "start": rng.pick(NASTY_STRINGS).to_string(),
                    "end": rng.pick(NASTY_STRINGS).to_string(),
                })
            }
        }
    }
}

/// The same data as another JSON type.
fn flip_type(rng: &mut Xs, v: &Value) -> Value {
    match v {
        Value::Number(n) => match rng.below(3) {
            0 => Value::String(n.to_string()),
            1 => Value::Array(vec![v.clone()]),
            _ => Value::Bool(true),
        },
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(n) if rng.chance(70) => Value::Number(n.into()),
            _ => Value::Array(s.split(',').map(|p| Value::String(p.to_string())).collect()),
        },
        Value::Array(a) => match rng.below(3) {
            0 => Value::String(
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            1 => a.first().cloned().unwrap_or(Value::Null),
            _ => Value::Object(Map::new()),
        },
        Value::Object(m) => match rng.below(3) {
            0 => Value::Array(m.values().cloned().collect()),
            1 => Value::String(v.to_string()),
            _ => Value::Null,
        },
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Null => Value::Object(Map::new()),
    }
}

fn nest(v: Value, depth: usize, rng: &mut Xs) -> Value {
    let mut out = v;
    for _ in 0..depth {
        out = if rng.chance(50) {
            Value::Array(vec![out])
        } else {
            let mut m = Map::new();
            m.insert(rng.pick(field_names()).to_string(), out);
            Value::Object(m)
        };
    }
    out
}

/// One mutation somewhere in `v` (a random walk down, then a change there).
fn mutate(rng: &mut Xs, v: &mut Value, depth: u32) {
    let descend = depth < 6 && rng.chance(55);
    match v {
        Value::Object(m) if descend && !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = rng.pick_ref(&keys).clone();
            mutate(rng, m.get_mut(&k).unwrap(), depth + 1);
            return;
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let i = rng.below(a.len() as u64) as usize;
            mutate(rng, &mut a[i], depth + 1);
            return;
        }
        _ => {}
    }
    match rng.below(8) {
        0 | 1 => *v = nasty_value(rng, depth),
        2 => *v = flip_type(rng, v),
        3 => {
            let d = rng.size(1, 200);
            *v = nest(v.take(), d, rng);
        }
        4 => match v {
            Value::Object(m) if !m.is_empty() => {
                let keys: Vec<String> = m.keys().cloned().collect();
                let k = rng.pick_ref(&keys).clone();
                m.remove(&k);
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len() as u64) as usize;
                a.remove(i);
            }
            _ => *v = Value::Null,
        },
        5 => match v {
            Value::Object(m) => {
                m.insert(rng.pick(field_names()).to_string(), nasty_value(rng, depth));
            }
            Value::Array(a) => {
                for _ in 0..rng.range(1, 70) {
                    a.push(nasty_value(rng, depth + 1));
                }
            }
            _ => *v = nasty_value(rng, depth),
        },
        6 => {
            if let Value::String(s) = v {
                *s = match rng.below(4) {
                    0 => s.to_uppercase(),
                    1 => format!("\u{feff}{s}\u{200b}"),
                    2 => s.repeat(rng.size(2, 500)),
                    _ => s.chars().rev().collect(),
                };
            } else {
                *v = nasty_value(rng, depth);
            }
        }
        _ => {
            if let Value::Number(_) = v {
                *v = nasty_number(rng);
            } else {
                *v = flip_type(rng, v);
            }
        }
    }
}

/// Changes to the text that a `Value` cannot hold: duplicate keys, number literals out of
/// any range, cut-off text, stray bytes.
fn mutate_text(rng: &mut Xs, mut text: Vec<u8>) -> Vec<u8> {
    match rng.below(6) {
        0 => {
            // A duplicate key at the top level (serde_json keeps the last).
            if let Some(pos) = text.iter().position(|b| *b == b'{') {
                let field = rng.pick(field_names());
                let value = nasty_value(rng, 0).to_string();
                let dup = format!("\"{field}\":{value},\"{field}\":{value},");
                let at = pos + 1;
                let tail = text.split_off(at);
                text.extend_from_slice(dup.as_bytes());
                text.extend_from_slice(&tail);
            }
        }
        1 => {
            let literal = rng.pick(&[
                "1e999",
                "-1e999",
                "18446744073709551616",
                "-9223372036854775809",
                "123456789012345678901234567890",
                "1.0",
                "1e2",
                "-0",
                "0.0000000000000000000000001",
                "NaN",
                "Infinity",
                "01",
                "+1",
            ]);
            let field = rng.pick(field_names());
            text = format!("{{\"{field}\":{literal}}}").into_bytes();
        }
        2 => {
            let at = rng.below(text.len() as u64 + 1) as usize;
            text.truncate(at);
        }
        3 => {
            let n = rng.range(1, 4);
            for _ in 0..n {
                let at = rng.below(text.len() as u64 + 1) as usize;
                text.insert(at, (rng.next() >> 40) as u8);
            }
        }
        4 => {
            if !text.is_empty() {
                let at = rng.below(text.len() as u64) as usize;
                text[at] = (rng.next() >> 40) as u8;
            }
        }
        _ => {
            let mut t = b"\xef\xbb\xbf  ".to_vec();
            t.extend_from_slice(&text);
            t.extend_from_slice(b" \n\t");
            text = t;
        }
    }
    text
}

/// A document that does not start from a fixture.
fn wild_document(rng: &mut Xs) -> Vec<u8> {
    match rng.below(8) {
        0 => {
            let n = rng.size(0, 64);
            rng.bytes(n)
        }
        1 => {
            let d = rng.size(100, 5000);
            let mut t = "[".repeat(d);
            t.push_str(&"]".repeat(d));
            t.into_bytes()
        }
        2 => {
            let d = rng.size(100, 5000);
            "{\"backoff\":".repeat(d).into_bytes()
        }
        3 => rng
            .pick(&[
                "",
                " ",
                "null",
                "{}",
                "[]",
                "0",
                "\"\"",
                "true",
                "{\"\":null}",
                "\u{feff}{}",
            ])
            .as_bytes()
            .to_vec(),
        _ => nasty_value(rng, 0).to_string().into_bytes(),
    }
}

#[test]
fn config_parser_never_panics_on_mutated_documents() {
    let fixtures = fixtures();
    let mut rng = Xs::new(PARSER_SEED);
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for i in 0..DOCUMENTS {
        let (origin, doc) = if rng.chance(10) {
            ("(wild)".to_string(), wild_document(&mut rng))
        } else {
            let (name, fixture) = rng.pick_ref(&fixtures);
            let mut v = fixture.clone();
            for _ in 0..rng.range(1, 4) {
                mutate(&mut rng, &mut v, 0);
            }
            let mut text = v.to_string().into_bytes();
            if rng.chance(25) {
                text = mutate_text(&mut rng, text);
            }
            (name.clone(), text)
        };
        let outcome = std::panic::catch_unwind(|| match parse(&doc) {
            Ok(plan) => {
                // What the adapter derives from a plan must hold up too.
                let _ = plan.budget_rules();
                let _ = plan.protection_rules();
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        });
        match outcome {
            Ok(true) => accepted += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!(
                "seed {PARSER_SEED:#x}, document {i} (from {origin}) made the parser panic:\n{}",
                clip(&String::from_utf8_lossy(&doc), 4000)
            ),
        }
    }
    // The mutations reach both verdicts, so both sides of the parser were exercised.
    assert!(
        accepted > DOCUMENTS / 50 && rejected > DOCUMENTS / 2,
        "accepted {accepted}, rejected {rejected}"
    );
}

// ---------------------------------------------------------------------------------------
// Regressions found by the chaos runs
// ---------------------------------------------------------------------------------------

/// A request that announces a body (`transfer-encoding: chunked`, or a `content-length`)
/// but that the host says has none (Envoy: `end_of_stream` in request headers, and no body
/// callback follows): the filter used to pause for a body that never came, and the client
/// hung. Found by `chaos_envoy_response_mode` / `chaos_envoy_dispatch_mode`.
#[test]
fn an_announced_body_that_never_comes_does_not_hang_the_request() {
    let configs = [
        (Setup::Kong, format!(r#"{{"upstream":"{UPSTREAM}"}}"#)),
        (
            Setup::EnvoyResponse,
            format!(r#"{{"upstream":"{CLUSTER}"}}"#),
        ),
        (
            Setup::EnvoyDispatch,
            format!(r#"{{"upstream":"{CLUSTER}","mode":"dispatch"}}"#),
        ),
    ];
    for (setup, config) in configs {
        for (name, value) in [("Transfer-Encoding", "chunked"), ("content-length", "5")] {
            if setup == Setup::Kong && name == "content-length" {
                // Kong waits for the announced bytes itself; the host has no such request.
                continue;
            }
            let mut gw = Gateway::builder(setup.profile(), module())
                .plugin_config(config.as_str())
                .upstream(UPSTREAM)
                .cluster(CLUSTER)
                .build()
                .unwrap();
            let ex = gw
                .run(Request::new("PUT", "/doc").header(name, value), |_| {
                    Reply::status(503)
                })
                .unwrap_or_else(|e| panic!("{setup:?} {name}: {e}"));
            assert_eq!(ex.response.status, 503, "{setup:?} {name}");
            let backend = ex.calls.iter().filter(|c| is_backend(c)).count();
            assert!(backend >= 2, "{setup:?} {name}: retried ({backend} calls)");
            assert!(gw.traps().is_empty(), "{setup:?}: {:?}", gw.traps());
        }
    }
}
