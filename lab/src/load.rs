//! Open-loop load: requests are sent at fixed times from the start (`rate` per second),
//! each on its own thread and connection, whether or not earlier ones were answered, and
//! latency counts from the scheduled time: a stalled gateway shows as latency and
//! failures, never as fewer requests (no coordinated omission).

use kong_retry_harness::client::{self, ClientError, Request};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a request is, for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Get,
    /// POST with an `Idempotency-Key`: safe to resend.
    KeyedPost,
    /// POST without a key: sending it twice applies it twice.
    UnkeyedPost,
}

pub const KINDS: [Kind; 3] = [Kind::Get, Kind::KeyedPost, Kind::UnkeyedPost];

impl Kind {
    /// The mix: 5 GET, 3 keyed POST, 2 unkeyed POST in every 10 requests.
    pub fn of(seq: u64) -> Kind {
        match seq % 10 {
            0..=4 => Kind::Get,
            5..=7 => Kind::KeyedPost,
            _ => Kind::UnkeyedPost,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Get => "GET",
            Kind::KeyedPost => "keyed POST",
            Kind::UnkeyedPost => "unkeyed POST",
        }
    }
}

/// The request id the upstream journals (`id=` of the script).
pub fn request_id(seq: u64) -> String {
    format!("r{seq}")
}

/// What the client saw for one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seq: u64,
    pub kind: Kind,
    /// When it was due, ms from the start of the load.
    pub scheduled_ms: f64,
    /// From the scheduled time to the whole response (or the failure).
    pub latency_ms: f64,
    /// The status, when a whole response came.
    pub status: Option<u16>,
    /// Why no usable response came (a 5xx, a reset, a timeout, a refused connection).
    pub failure: Option<String>,
    /// A failed response's body (its first 160 bytes) and headers, for the notes.
    pub detail: Option<String>,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }
}

/// The load to send.
#[derive(Debug, Clone)]
pub struct Load {
    /// Requests per second.
    pub rate: u32,
    pub duration: Duration,
    /// The upstream's answer delay (requests are in flight when an instance goes away).
    pub upstream_delay_ms: u64,
    /// The client's timeout per request.
    pub timeout: Duration,
}

impl Load {
    pub fn total(&self) -> u64 {
        (self.duration.as_secs_f64() * f64::from(self.rate)).round() as u64
    }
}

/// The gateway nodes a client knows; on a connection failure it tries the next one.
#[derive(Debug, Clone)]
pub struct Nodes(pub Vec<SocketAddr>);

fn request(seq: u64, kind: Kind, load: &Load) -> Request {
    let path = format!(
        "/api?id={}&delay_ms={}",
        request_id(seq),
        load.upstream_delay_ms
    );
    let body = format!("{{\"op\":{seq}}}");
    let r = match kind {
        Kind::Get => Request::get(&path),
        Kind::KeyedPost => Request::new("POST", &path)
            .header("idempotency-key", &format!("k-{}", request_id(seq)))
            .header("content-type", "application/json")
            .body(body),
        Kind::UnkeyedPost => Request::new("POST", &path)
            .header("content-type", "application/json")
            .body(body),
    };
    r.timeout(load.timeout)
}

fn send(nodes: &Nodes, first: usize, req: &Request) -> Result<client::Response, String> {
    let n = nodes.0.len().max(1);
    let mut last = String::from("no gateway node");
    for i in 0..n {
        let Some(&addr) = nodes.0.get((first + i) % n) else {
            break;
        };
        match client::send(addr, req) {
            Ok(r) => return Ok(r),
            // Only a refused connection is safe to resend elsewhere: nothing was sent.
            Err(ClientError::Connect(e)) => last = format!("connect: {e}"),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(last)
}

/// Runs `load` against `nodes`; `on_tick` runs on the caller's thread alongside (the
/// rollout), with the ms elapsed since the start. Returns every request's outcome.
pub fn run(load: &Load, nodes: &Nodes, rollout: impl FnOnce(Instant)) -> Vec<Outcome> {
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(load.total() as usize)));
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(load.rate.max(1)));
    let total = load.total();
    let scheduler = {
        let outcomes = outcomes.clone();
        let nodes = nodes.clone();
        let load = load.clone();
        std::thread::spawn(move || {
            let mut threads = Vec::with_capacity(total as usize);
            for seq in 0..total {
                let due = start + interval.mul_f64(seq as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let outcomes = outcomes.clone();
                let nodes = nodes.clone();
                let kind = Kind::of(seq);
                let req = request(seq, kind, &load);
                threads.push(std::thread::spawn(move || {
                    let result = send(&nodes, (seq / 10) as usize, &req);
                    let done = Instant::now();
                    let (status, failure, detail) = match result {
                        Ok(r) if r.status >= 500 => {
                            let body: String = r.text().chars().take(160).collect();
                            let headers: Vec<String> =
                                r.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                            (
                                Some(r.status),
                                Some(format!("status {}", r.status)),
                                Some(format!("{} | {}", body.trim(), headers.join("; "))),
                            )
                        }
                        Ok(r) => (Some(r.status), None, None),
                        Err(e) => (None, Some(e), None),
                    };
                    let o = Outcome {
                        seq,
                        kind,
                        scheduled_ms: (due - start).as_secs_f64() * 1000.0,
                        latency_ms: (done.saturating_duration_since(due)).as_secs_f64() * 1000.0,
                        status,
                        failure,
                        detail,
                    };
                    outcomes.lock().unwrap_or_else(|p| p.into_inner()).push(o);
                }));
            }
            for t in threads {
                let _ = t.join();
            }
        })
    };
    rollout(start);
    let _ = scheduler.join();
    let mut all = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|p| p.into_inner()));
    all.sort_by_key(|o| o.seq);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_half_get_and_a_fifth_unkeyed() {
        let kinds: Vec<Kind> = (0..100).map(Kind::of).collect();
        let count = |k| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(count(Kind::Get), 50);
        assert_eq!(count(Kind::KeyedPost), 30);
        assert_eq!(count(Kind::UnkeyedPost), 20);
    }
}
