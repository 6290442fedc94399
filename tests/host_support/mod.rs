//! Shared by the integration tests that run the real filter `.wasm` on the test host under
//! load: the three setups, a seeded upstream, and a driver that keeps many requests in flight
//! on the host's clock (requests paced in host time, answers delivered in time order).

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use proxy_wasm_test_host::{
    build, CallId, Failure, Gateway, GatewayBuilder, LogLevel, Profile, Reply, Request, RequestId,
    UpstreamCall, WasmModule,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

pub const UPSTREAM: &str = "127.0.0.1:8080";
pub const CLUSTER: &str = "backend";
pub const DELAY: &str = "127.0.0.1:8555";
/// `kong.route_id` of the Kong profile's default route.
pub const KONG_ROUTE_ID: &str = "5f1c2bcd-0000-4000-8000-000000000001";
/// The filter's clock: the host's `now_ms` plus this (ms since the Unix epoch).
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// The real filter, built once per test process.
pub fn module() -> &'static WasmModule {
    static MODULE: OnceLock<WasmModule> = OnceLock::new();
    MODULE.get_or_init(|| {
        let path = build::filter_wasm().unwrap_or_else(|e| panic!("build the filter: {e}"));
        WasmModule::from_file(path).unwrap_or_else(|e| panic!("load the filter: {e}"))
    })
}

/// Kong (dispatch mode), Envoy in its default response mode, Envoy in dispatch mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Kong,
    EnvoyResponse,
    EnvoyDispatch,
}

pub const SETUPS: [Setup; 3] = [Setup::Kong, Setup::EnvoyResponse, Setup::EnvoyDispatch];

impl Setup {
    pub fn profile(self) -> Profile {
        match self {
            Setup::Kong => Profile::Kong,
            _ => Profile::Envoy,
        }
    }

    /// `extra` (JSON object members without braces) plus the upstream, the mode and (Kong)
    /// the delay endpoint this setup needs.
    pub fn config(self, extra: &str) -> String {
        let base = match self {
            Setup::Kong => format!(r#""upstream":"{UPSTREAM}","delay_endpoint":"{DELAY}""#),
            Setup::EnvoyResponse => format!(r#""upstream":"{CLUSTER}""#),
            Setup::EnvoyDispatch => format!(r#""upstream":"{CLUSTER}","mode":"dispatch""#),
        };
        if extra.is_empty() {
            format!("{{{base}}}")
        } else {
            format!("{{{base},{extra}}}")
        }
    }

    pub fn builder(self, extra: &str) -> GatewayBuilder {
        Gateway::builder(self.profile(), module())
            .plugin_config(self.config(extra))
            .upstream(UPSTREAM)
            .cluster(CLUSTER)
            .log_level(LogLevel::Info)
    }

    pub fn gateway(self, extra: &str, workers: usize) -> Gateway {
        self.builder(extra)
            .workers(workers)
            .build()
            .unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }

    /// The budget key of the default route (Kong) or upstream (Envoy has no route name here).
    pub fn budget_key(self) -> String {
        match self {
            Setup::Kong => format!("kong_retry/kong_retry/budget/{KONG_ROUTE_ID}"),
            _ => format!("kong_retry/kong_retry/budget/{CLUSTER}"),
        }
    }
}

/// Is this a call to the backend (the proxy's own forward or an attempt), not a wait?
pub fn is_backend(call: &UpstreamCall) -> bool {
    call.upstream() != Some(DELAY)
}

/// The wait a delay-endpoint call asks for (`/kong-retry/delay?ms=N`).
pub fn delay_asked(call: &UpstreamCall) -> Option<u64> {
    if is_backend(call) {
        return None;
    }
    call.path.split("ms=").nth(1)?.parse().ok()
}

/// Answers the n-th backend call of one request with `replies[n]` (the last one repeats); a
/// timeout comes when the call's timeout is over; the delay endpoint answers when the asked
/// delay is over.
pub fn script(replies: Vec<Reply>) -> impl FnMut(&UpstreamCall) -> Reply {
    let mut n = 0usize;
    move |call| {
        if let Some(ms) = delay_asked(call) {
            return Reply::status(204).after_ms(ms);
        }
        let reply = replies[n.min(replies.len() - 1)].clone();
        n += 1;
        match reply {
            Reply::Failure {
                failure: Failure::Timeout,
                ..
            } => reply.after_ms(call.timeout_ms),
            other => other,
        }
    }
}

/// How the upstream answers one call: now, later, or never (the call times out).
pub enum Answer {
    Now(Reply),
    After(u64, Reply),
    Never,
}

/// Many requests in flight on one gateway, on the host's clock.
pub struct Traffic {
    pub gw: Gateway,
    seen: HashSet<CallId>,
    /// Answers due at a host time, in order.
    due: BTreeMap<(u64, u64), (CallId, Reply)>,
    seq: u64,
    pub requests: Vec<RequestId>,
}

impl Traffic {
    pub fn new(gw: Gateway) -> Self {
        Traffic {
            gw,
            seen: HashSet::new(),
            due: BTreeMap::new(),
            seq: 0,
            requests: Vec::new(),
        }
    }

    /// Sends a request to `worker` now.
    pub fn send(&mut self, worker: usize, request: Request) -> RequestId {
        let rid = self.gw.send(worker, request);
        self.requests.push(rid);
        rid
    }

    /// Hands every new call to `upstream` (the delay endpoint answers by itself, when the
    /// asked delay is over), then delivers answers and fires timers in time order up to
    /// host time `until`.
    pub fn run_until(&mut self, until: u64, upstream: &mut dyn FnMut(&UpstreamCall) -> Answer) {
        loop {
            self.take_new_calls(upstream);
            let next_answer = self.due.keys().next().map(|(t, _)| *t);
            let next = match (next_answer, self.gw.next_timer_ms()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            // advance(0) fires timers due now; answers due now are delivered below.
            let now = self.gw.now_ms();
            self.gw.advance(next.saturating_sub(now));
            let now = self.gw.now_ms();
            while let Some(entry) = self.due.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (id, reply) = entry.remove();
                // The call may have timed out meanwhile: then there is nobody to answer.
                let _ = self.gw.answer(id, reply);
            }
        }
        let now = self.gw.now_ms();
        if until > now {
            self.gw.advance(until - now);
        }
        self.take_new_calls(upstream);
    }

    /// Runs until every request has its response (or `limit_ms` of host time passed).
    pub fn finish(&mut self, limit_ms: u64, upstream: &mut dyn FnMut(&UpstreamCall) -> Answer) {
        let end = self.gw.now_ms() + limit_ms;
        while self.gw.now_ms() < end && !self.all_answered() {
            let step = (self.gw.now_ms() + 100).min(end);
            self.run_until(step, upstream);
        }
        assert!(
            self.all_answered(),
            "requests still open after {limit_ms} ms of host time"
        );
    }

    pub fn all_answered(&self) -> bool {
        self.requests.iter().all(|r| self.gw.response(*r).is_some())
    }

    fn take_new_calls(&mut self, upstream: &mut dyn FnMut(&UpstreamCall) -> Answer) {
        // An answer can make new calls at once (a retry with no wait): keep going.
        loop {
            let fresh: Vec<UpstreamCall> = self
                .gw
                .pending()
                .into_iter()
                .filter(|c| !self.seen.contains(&c.id))
                .collect();
            if fresh.is_empty() {
                return;
            }
            for call in fresh {
                self.seen.insert(call.id);
                let answer = match delay_asked(&call) {
                    Some(ms) => Answer::After(ms, Reply::status(204)),
                    None => upstream(&call),
                };
                match answer {
                    Answer::Now(reply) => {
                        let _ = self.gw.answer(call.id, reply);
                    }
                    Answer::After(ms, reply) => {
                        self.seq += 1;
                        self.due
                            .insert((self.gw.now_ms() + ms, self.seq), (call.id, reply));
                    }
                    Answer::Never => {}
                }
            }
        }
    }
}

/// xorshift64*: a seeded failure pattern without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `percent` %.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.next() % 100 < u64::from(percent)
    }
}

/// The backend calls of the gateway's history, in order.
pub fn backend_calls(gw: &Gateway) -> Vec<UpstreamCall> {
    gw.calls()
        .iter()
        .filter(|c| is_backend(c))
        .cloned()
        .collect()
}

/// The value of a counter (0 when it was never defined or never counted).
pub fn metric(gw: &Gateway, name: &str) -> u64 {
    gw.metric(name).unwrap_or(0)
}

/// Log lines at `level` or above whose message contains `needle`.
pub fn log_lines(gw: &Gateway, level: LogLevel, needle: &str) -> Vec<String> {
    gw.logs()
        .into_iter()
        .filter(|l| l.level >= level && l.message.contains(needle))
        .map(|l| l.message)
        .collect()
}

/// An HTTP-date (IMF-fixdate) for Unix seconds, e.g. `Tue, 14 Nov 2023 22:13:20 GMT`.
pub fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[test]
fn http_date_matches_known_dates() {
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
}
