//! What one backend restart costs the clients: how many failed responses they get without
//! the filter, in dispatch mode and in adaptive mode (whose calm path lets the failure that
//! reveals the trouble through), with the real filter `.wasm` on the test host (Kong
//! profile).
//!
//! 10 s of host time, 100 GETs/s (one every 10 ms) alternating over 2 workers; the backend
//! answers 200 after 5 ms, except that every call *sent* during 2 s fails the way a
//! restarting pod fails: the connection is refused (no listener yet), it answers 503 (a
//! draining pod, a mesh without endpoints), or it hangs (accepts, never answers; the proxy's
//! own forward and every attempt time out after 1 s). Retries: 5, fixed backoff 500 ms, so
//! dispatch mode can bridge the 2 s; retry budget off, so the numbers show the modes and not
//! the budget (with the default budget a 2 s full outage at 100 req/s exhausts it in every
//! mode). Adaptive: default window (30 s) and cache (1 s), or no cache.
//!
//! Whether a worker's cached "calm" is still fresh when another worker marks the route
//! decides whether that worker also passes a failure on, so each row runs the restart at
//! four start times (3.0, 3.25, 3.5, 3.75 s) and gives the range. The 48 runs are
//! independent and run on every core (parallel_runs).
//!
//! `cargo test --test restart_cost -- --nocapture` prints the table. It checks the logic on
//! a simulated clock; the restart figures the docs quote come from the rolling-upgrade lab on
//! real sockets (docs/lab.md, `cargo run --release -p kong-retry-lab`).

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host_support;
mod parallel_runs;

use host_support::*;
use parallel_runs::map_parallel;
use proxy_wasm_test_host::{CallKind, Failure, Reply, Request, UpstreamCall};

const RUN_MS: u64 = 10_000;
const EVERY_MS: u64 = 10;
const WORKERS: usize = 2;
const OUTAGE_MS: u64 = 2_000;
const STARTS_MS: [u64; 4] = [3_000, 3_250, 3_500, 3_750];
const TIMEOUT_MS: u64 = 1_000;
const RETRIES: &str = r#""retries":5,"per_try_timeout":1000,"backoff":{"strategy":"fixed","interval":500},"budget":{"enabled":false}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    Refused,
    Unavailable,
    Hang,
}

const OUTAGES: [Outage; 3] = [Outage::Refused, Outage::Unavailable, Outage::Hang];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    /// The filter steps aside for every request (`retries: 0`): the same as no filter.
    None,
    Dispatch,
    Adaptive,
    AdaptiveNoCache,
}

const FILTERS: [Filter; 4] = [
    Filter::None,
    Filter::Dispatch,
    Filter::Adaptive,
    Filter::AdaptiveNoCache,
];

impl Filter {
    fn config(self) -> String {
        match self {
            Filter::None => r#""retries":0"#.to_string(),
            Filter::Dispatch => format!(r#""mode":"dispatch",{RETRIES}"#),
            Filter::Adaptive => format!(r#""mode":"adaptive",{RETRIES}"#),
            Filter::AdaptiveNoCache => {
                format!(r#""mode":"adaptive","adaptive":{{"cache":0}},{RETRIES}"#)
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Filter::None => "no filter (`retries: 0`)",
            Filter::Dispatch => "dispatch",
            Filter::Adaptive => "adaptive (cache 1 s)",
            Filter::AdaptiveNoCache => "adaptive (cache 0)",
        }
    }
}

#[derive(Debug, Default)]
struct Measured {
    requests: usize,
    /// Client responses with a status ≥ 500.
    failed: usize,
    /// Of those, per worker.
    failed_per_worker: [usize; WORKERS],
    /// Backend calls made natively by the proxy / dispatched by the filter.
    native_calls: usize,
    dispatched_calls: usize,
    /// `kong_retry_failures_seen_calm_total`.
    seen_calm: u64,
}

fn measure(filter: Filter, outage: Outage, start_ms: u64) -> Measured {
    let window = start_ms..start_ms + OUTAGE_MS;
    let gw = Setup::Kong
        .builder(&filter.config())
        .workers(WORKERS)
        .proxy_timeout_ms(TIMEOUT_MS)
        .build()
        .unwrap();
    let mut traffic = Traffic::new(gw);
    let mut upstream = |call: &UpstreamCall| {
        if !window.contains(&call.sent_at_ms) {
            return Answer::After(5, Reply::status(200));
        }
        match outage {
            Outage::Refused => Answer::Now(Reply::failure(Failure::Refused)),
            Outage::Unavailable => Answer::After(1, Reply::status(503)),
            Outage::Hang => Answer::Never,
        }
    };
    let mut workers = Vec::new();
    for i in 0..(RUN_MS / EVERY_MS) {
        traffic.run_until(i * EVERY_MS, &mut upstream);
        let worker = i as usize % WORKERS;
        workers.push(worker);
        traffic.send(worker, Request::new("GET", &format!("/orders/{i}")));
    }
    traffic.finish(30_000, &mut upstream);
    let gw = &traffic.gw;
    assert!(
        gw.traps().is_empty(),
        "{filter:?} {outage:?}: {:?}",
        gw.traps()
    );
    let mut r = Measured {
        requests: traffic.requests.len(),
        seen_calm: metric(gw, "kong_retry_failures_seen_calm_total"),
        ..Measured::default()
    };
    for (rid, worker) in traffic.requests.iter().zip(&workers) {
        if gw.response(*rid).unwrap().status >= 500 {
            r.failed += 1;
            r.failed_per_worker[*worker] += 1;
        }
    }
    for c in backend_calls(gw) {
        match c.kind {
            CallKind::Proxied => r.native_calls += 1,
            CallKind::Dispatch { .. } => r.dispatched_calls += 1,
        }
    }
    r
}

#[test]
fn client_visible_failures_of_one_backend_restart() {
    let in_outage = (OUTAGE_MS / EVERY_MS) as usize;
    let mut table = String::from(
        "| backend during the restart | filter | failed responses per restart | most in one worker | native calls | dispatched calls |\n|---|---|---|---|---|---|\n",
    );
    let jobs: Vec<(Outage, Filter, u64)> = OUTAGES
        .iter()
        .flat_map(|&o| FILTERS.iter().map(move |&f| (o, f)))
        .flat_map(|(o, f)| STARTS_MS.iter().map(move |&start| (o, f, start)))
        .collect();
    let mut measured = map_parallel(&jobs, |&(outage, filter, start)| {
        measure(filter, outage, start)
    })
    .into_iter();
    for outage in OUTAGES {
        for filter in FILTERS {
            let runs: Vec<Measured> = measured.by_ref().take(STARTS_MS.len()).collect();
            for r in &runs {
                let what = format!("{filter:?} {outage:?}: {r:?}");
                assert_eq!(r.requests, (RUN_MS / EVERY_MS) as usize);
                match filter {
                    // Every request sent during the outage fails.
                    Filter::None => assert_eq!(r.failed, in_outage, "{what}"),
                    // Retries every 500 ms for 2.5 s bridge the 2 s.
                    Filter::Dispatch => assert_eq!(r.failed, 0, "{what}"),
                    Filter::Adaptive | Filter::AdaptiveNoCache => {
                        // Only what the calm path revealed reaches the client.
                        assert_eq!(r.failed as u64, r.seen_calm, "{what}");
                        assert!(r.failed >= 1, "{what}");
                        match outage {
                            // A fast failure: at most the first response of each worker.
                            Outage::Refused | Outage::Unavailable => {
                                assert!(r.failed_per_worker.iter().all(|&n| n <= 1), "{what}")
                            }
                            // A hang: what is sent before the first timeout is answered.
                            Outage::Hang => assert!(
                                r.failed as u64 <= TIMEOUT_MS / EVERY_MS + WORKERS as u64,
                                "{what}"
                            ),
                        }
                        // Healthy before the restart: the native path carried those.
                        assert!(r.native_calls >= 300, "{what}");
                    }
                }
            }
            let per_worker = runs
                .iter()
                .flat_map(|r| r.failed_per_worker)
                .max()
                .unwrap_or(0);
            let range = |f: fn(&Measured) -> usize| {
                let v: Vec<usize> = runs.iter().map(f).collect();
                let (lo, hi) = (
                    v.iter().min().copied().unwrap_or(0),
                    v.iter().max().copied().unwrap_or(0),
                );
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}–{hi}")
                }
            };
            table.push_str(&format!(
                "| {} | {} | {} | {per_worker} | {} | {} |\n",
                match outage {
                    Outage::Refused => "refuses connections",
                    Outage::Unavailable => "answers 503",
                    Outage::Hang => "hangs (1 s timeouts)",
                },
                filter.name(),
                range(|r| r.failed),
                range(|r| r.native_calls),
                range(|r| r.dispatched_calls),
            ));
        }
    }
    println!(
        "\nOne backend restart ({OUTAGE_MS} ms of failures, starting at {STARTS_MS:?} ms) under {} req/s over {WORKERS} workers, {} requests:\n\n{table}",
        1000 / EVERY_MS,
        RUN_MS / EVERY_MS
    );
}
