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
    /// The gateway node that gave the outcome (index into [`Nodes::addrs`]).
    pub node: usize,
    /// Set when the client sent the request again to another node (see [`Resend`]).
    pub resent: Option<Resend>,
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

/// The gateway nodes a client knows, in order of preference. On a connection failure it
/// sends the request to the next node and stays away from the failed one for `back_after`,
/// then tries it again (a client-side node list, or an external load balancer's
/// passive health check).
#[derive(Debug, Clone)]
pub struct Nodes {
    pub addrs: Vec<SocketAddr>,
    pub back_after: Duration,
    /// Per node: until when the client avoids it.
    avoid_until: Arc<Mutex<Vec<Option<Instant>>>>,
}

impl Nodes {
    pub fn new(addrs: Vec<SocketAddr>, back_after: Duration) -> Nodes {
        let avoid_until = Arc::new(Mutex::new(vec![None; addrs.len()]));
        Nodes {
            addrs,
            back_after,
            avoid_until,
        }
    }

    /// One gateway node: nothing to switch to.
    pub fn one(addr: SocketAddr) -> Nodes {
        Nodes::new(vec![addr], Duration::ZERO)
    }

    /// The order to try the nodes in now: the preferred ones that are not avoided first.
    fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let avoid = self.avoid_until.lock().unwrap_or_else(|p| p.into_inner());
        let avoided = |i: usize| avoid.get(i).copied().flatten().is_some_and(|t| t > now);
        let mut order: Vec<usize> = (0..self.addrs.len()).filter(|&i| !avoided(i)).collect();
        order.extend((0..self.addrs.len()).filter(|&i| avoided(i)));
        order
    }

    fn avoid(&self, i: usize) {
        let mut avoid = self.avoid_until.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = avoid.get_mut(i) {
            *slot = Some(Instant::now() + self.back_after);
        }
    }
}

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

/// Why the client sent a request again, to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resend {
    /// The connection was refused (or never set up): nothing was sent, safe for any method.
    AfterConnectFailure,
    /// The connection broke after the request was sent, before a whole response: the node
    /// may have forwarded it. Safe only for GET and keyed POST, which the client resends;
    /// an unkeyed POST is not resent (the client cannot know whether it was applied).
    AfterReset,
}

/// What [`send`] ended with: the result, the node that gave it, how the client resent.
struct Sent {
    result: Result<client::Response, String>,
    node: usize,
    resent: Option<Resend>,
}

fn send(nodes: &Nodes, kind: Kind, req: &Request) -> Sent {
    let mut last = Sent {
        result: Err("no gateway node".into()),
        node: 0,
        resent: None,
    };
    let mut resent = None;
    for i in nodes.order() {
        let Some(&addr) = nodes.addrs.get(i) else {
            break;
        };
        let failure = match client::send(addr, req) {
            Ok(r) => {
                return Sent {
                    result: Ok(r),
                    node: i,
                    resent,
                }
            }
            Err(ClientError::Connect(e)) => (Resend::AfterConnectFailure, format!("connect: {e}")),
            Err(e @ ClientError::Dropped(_)) if kind != Kind::UnkeyedPost => {
                (Resend::AfterReset, e.to_string())
            }
            Err(e) => {
                return Sent {
                    result: Err(e.to_string()),
                    node: i,
                    resent,
                }
            }
        };
        nodes.avoid(i);
        last = Sent {
            result: Err(failure.1),
            node: i,
            resent,
        };
        resent = Some(failure.0);
    }
    last
}

impl Resend {
    pub fn name(self) -> &'static str {
        match self {
            Resend::AfterConnectFailure => "after a connect failure",
            Resend::AfterReset => "after a reset",
        }
    }
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
                    let sent = send(&nodes, kind, &req);
                    let done = Instant::now();
                    let (status, failure, detail) = match sent.result {
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
                        node: sent.node,
                        resent: sent.resent,
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
    fn a_failed_node_is_tried_last_until_back_after() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let nodes = Nodes::new(vec![a, b], Duration::from_millis(50));
        assert_eq!(nodes.order(), vec![0, 1]);
        nodes.avoid(0);
        assert_eq!(nodes.order(), vec![1, 0]);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(nodes.order(), vec![0, 1], "back to node A later");
    }

    #[test]
    fn the_mix_is_half_get_and_a_fifth_unkeyed() {
        let kinds: Vec<Kind> = (0..100).map(Kind::of).collect();
        let count = |k| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(count(Kind::Get), 50);
        assert_eq!(count(Kind::KeyedPost), 30);
        assert_eq!(count(Kind::UnkeyedPost), 20);
    }
}
