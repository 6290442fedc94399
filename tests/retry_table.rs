//! What the retry budget holds back: retries issued per 1000 requests at 0, 10, 50 and
//! 100 % upstream failure, budget on and off, `retries: 3`, measured with the real filter
//! `.wasm` on the test host.
//!
//! 1000 GETs at 100 requests/s of host time, round robin over 4 workers (VM instances)
//! sharing one node store; each backend call answers after 20 ms, failing (503) with the
//! given probability from a seeded generator (the same seed for budget on and off); default
//! backoff (full jitter, 25 ms base, 250 ms cap) and budget (20 %, 10/s floor, 10 s window).
//! The 24 runs are independent and run on every core (parallel_runs).
//!
//! `cargo test --test retry_table -- --nocapture` prints the table (docs/design.md quotes it).

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host_support;
mod parallel_runs;

use host_support::*;
use parallel_runs::map_parallel;
use proxy_wasm_test_host::{Reply, Request, UpstreamCall};

const REQUESTS: usize = 1000;
const EVERY_MS: u64 = 10;
const WORKERS: usize = 4;
const RATES: [u32; 4] = [0, 10, 50, 100];

/// Retries issued for 1000 requests, and the host time from the first request to the last
/// backend call.
fn measure(setup: Setup, failure_percent: u32, budget: bool) -> (u64, u64) {
    let extra = format!(r#""retries":3,"budget":{{"enabled":{budget}}}"#);
    let gw = setup.gateway(&extra, WORKERS);
    let mut traffic = Traffic::new(gw);
    let mut rng = Rng::new(0x5eed_0000 + u64::from(failure_percent));
    let mut upstream = |_: &UpstreamCall| {
        let status = if rng.chance(failure_percent) {
            503
        } else {
            200
        };
        Answer::After(20, Reply::status(status))
    };
    for i in 0..REQUESTS {
        traffic.run_until(i as u64 * EVERY_MS, &mut upstream);
        traffic.send(i % WORKERS, Request::new("GET", &format!("/items/{i}")));
    }
    traffic.finish(60_000, &mut upstream);
    let gw = &traffic.gw;
    assert!(gw.traps().is_empty(), "{setup:?}: {:?}", gw.traps());
    let calls = backend_calls(gw);
    let retries = (calls.len() - REQUESTS) as u64;
    assert_eq!(metric(gw, "kong_retry_retries_total"), retries, "{setup:?}");
    assert_eq!(metric(gw, "kong_retry_requests_total"), REQUESTS as u64);
    let last = calls.iter().map(|c| c.sent_at_ms).max().unwrap_or(0);
    (retries, last)
}

#[test]
fn retries_per_1000_requests() {
    let mut table = String::from(
        "| upstream failure | Kong, budget off | Kong, budget on | Envoy (response mode), off | Envoy (response mode), on | Envoy (dispatch mode), off | Envoy (dispatch mode), on |\n|---|---|---|---|---|---|---|\n",
    );
    let jobs: Vec<(u32, Setup, bool)> = RATES
        .iter()
        .flat_map(|&rate| SETUPS.iter().map(move |&setup| (rate, setup)))
        .flat_map(|(rate, setup)| [false, true].map(|budget| (rate, setup, budget)))
        .collect();
    let mut measured =
        map_parallel(&jobs, |&(rate, setup, budget)| measure(setup, rate, budget)).into_iter();
    for rate in RATES {
        let mut row = format!("| {rate} % |");
        for setup in SETUPS {
            let (off, _) = measured.next().unwrap();
            let (on, elapsed) = measured.next().unwrap();
            row.push_str(&format!(" {off} | {on} |"));

            // Without a budget every failure is retried, up to 3 per request: about
            // 1000 × (p + p² + p³).
            let p = f64::from(rate) / 100.0;
            let expected = REQUESTS as f64 * (p + p * p + p * p * p);
            assert!(
                (off as f64 - expected).abs() <= 0.1 * expected + 10.0,
                "{setup:?} {rate} %: {off} retries without a budget, expected about {expected:.0}"
            );
            // With it, never more than the bound of src/state/budget.rs.
            let bound = 10.0 + REQUESTS as f64 * 0.2 + 10.0 * elapsed as f64 / 1000.0;
            assert!(
                on as f64 <= bound,
                "{setup:?} {rate} %: {on} retries, bound {bound:.0}"
            );
            // A low failure rate is not limited.
            if rate <= 10 {
                assert_eq!(on, off, "{setup:?} {rate} %");
            }
        }
        table.push_str(&row);
        table.push('\n');
    }
    println!("\nRetries issued per {REQUESTS} requests (retries: 3, {WORKERS} workers, 100 req/s of host time, seeded failures):\n\n{table}");
}
