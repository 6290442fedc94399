//! Waiting on the test host's clock (never wall time) with the real filter `.wasm`, under
//! Kong's rules (waits on the loopback delay endpoint) and Envoy's (root-context tick):
//! full- and equal-jitter backoff within their bounds (the shipped schedule hiding a 2 s gap),
//! `Retry-After` in both forms honoured up to the cap, and the overall deadline.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host_support;

use host_support::*;
use proxy_wasm_test_host::{Gateway, Reply, Request, RequestId, UpstreamCall};

/// Envoy waits end on the root context's 5 ms tick; Kong's delay endpoint answers on time.
fn tick_slack(setup: Setup) -> u64 {
    match setup {
        Setup::Kong => 0,
        _ => 5,
    }
}

/// The backend calls made for one request, in order.
fn calls_of(gw: &Gateway, rid: RequestId) -> Vec<UpstreamCall> {
    backend_calls(gw)
        .into_iter()
        .filter(|c| c.request == Some(rid))
        .collect()
}

#[test]
fn exponential_backoff_waits_on_the_host_clock_with_bounded_jitter() {
    // base 100, max 1000: retry n waits uniformly in [0, min(1000, 100 × 2^(n-1))].
    const REQUESTS: usize = 60;
    const CEILINGS: [u64; 5] = [100, 200, 400, 800, 1000];
    for setup in SETUPS {
        let gw = setup.gateway(
            r#""retries":5,"backoff":{"strategy":"exponential","base_interval":100,"max_interval":1000},"budget":{"enabled":false}"#,
            3,
        );
        let mut traffic = Traffic::new(gw);
        let mut upstream = |_: &UpstreamCall| Answer::Now(Reply::status(503));
        for i in 0..REQUESTS {
            let at = traffic.gw.now_ms() + 7;
            traffic.run_until(at, &mut upstream);
            traffic.send(i % 3, Request::new("GET", "/x"));
        }
        traffic.finish(60_000, &mut upstream);

        let mut waits: Vec<Vec<u64>> = vec![Vec::new(); CEILINGS.len()];
        for rid in &traffic.requests {
            let calls = calls_of(&traffic.gw, *rid);
            assert_eq!(calls.len(), 6, "{setup:?}: {calls:?}");
            for n in 1..calls.len() {
                // Every answer came at once: the gap between two attempts is the wait.
                let wait = calls[n].sent_at_ms - calls[n - 1].sent_at_ms;
                let ceiling = CEILINGS[n - 1];
                assert!(
                    wait <= ceiling + tick_slack(setup),
                    "{setup:?}: retry {n} waited {wait} ms, ceiling {ceiling}"
                );
                waits[n - 1].push(wait);
            }
        }
        for (n, w) in waits.iter().enumerate() {
            let mean = w.iter().sum::<u64>() as f64 / w.len() as f64;
            eprintln!(
                "{setup:?}: retry {} waits {}..{} mean {mean:.0} (ceiling {})",
                n + 1,
                w.iter().min().unwrap(),
                w.iter().max().unwrap(),
                CEILINGS[n]
            );
        }
        // Full jitter: the waits spread over the whole range (uniform: mean near the
        // middle, some near each end).
        for (n, w) in waits.iter().enumerate() {
            let ceiling = CEILINGS[n] as f64;
            let mean = w.iter().sum::<u64>() as f64 / w.len() as f64;
            let (lo, hi) = (*w.iter().min().unwrap(), *w.iter().max().unwrap());
            assert!(
                (0.3 * ceiling..=0.7 * ceiling).contains(&mean)
                    && (lo as f64) < 0.2 * ceiling
                    && (hi as f64) > 0.8 * ceiling,
                "{setup:?}: retry {} waits min {lo} mean {mean:.0} max {hi} for ceiling {ceiling}",
                n + 1
            );
        }
        let gw = &traffic.gw;
        assert_eq!(metric(gw, "kong_retry_retries_total"), 5 * REQUESTS as u64);
        assert_eq!(metric(gw, "kong_retry_exhausted_total"), REQUESTS as u64);
        assert!(gw.traps().is_empty(), "{setup:?}");
    }
}

/// The shipped schedule (kong/kong.yml, envoy/envoy.yaml: 5 retries, equal jitter 300/1200,
/// 2 s per try, 10 s deadline) on the real module: every wait lies in [ceiling/2, ceiling],
/// and a 2 s gap in which the backend answers 503 at once reaches no client. The budget is
/// off here: what it allows under load is a separate limit (docs/operator-guide.md, "Sizing
/// the retry schedule").
#[test]
fn equal_jitter_hides_a_two_second_gap_of_fast_failures() {
    const REQUESTS: u64 = 40;
    const GAP_MS: u64 = 2_000;
    const FLOORS: [u64; 5] = [150, 300, 600, 600, 600];
    const CEILINGS: [u64; 5] = [300, 600, 1200, 1200, 1200];
    for setup in SETUPS {
        let gw = setup.gateway(
            r#""retries":5,"per_try_timeout":2000,"deadline":10000,"backoff":{"strategy":"exponential","base_interval":300,"max_interval":1200,"jitter":"equal"},"budget":{"enabled":false}"#,
            3,
        );
        let mut traffic = Traffic::new(gw);
        let gap_ends = traffic.gw.now_ms() + GAP_MS;
        let mut upstream = |c: &UpstreamCall| {
            Answer::Now(Reply::status(if c.sent_at_ms < gap_ends {
                503
            } else {
                200
            }))
        };
        // Requests arrive all through the gap, the first as it opens.
        for i in 0..REQUESTS {
            let at = gap_ends - GAP_MS + i * (GAP_MS / REQUESTS);
            traffic.run_until(at, &mut upstream);
            traffic.send(i as usize % 3, Request::new("GET", "/x"));
        }
        traffic.finish(60_000, &mut upstream);

        let mut most_retries = 0;
        for rid in &traffic.requests {
            let status = traffic.gw.response(*rid).map(|r| r.status);
            let calls = calls_of(&traffic.gw, *rid);
            assert_eq!(status, Some(200), "{setup:?}: {calls:?}");
            most_retries = most_retries.max(calls.len() - 1);
            for n in 1..calls.len() {
                let wait = calls[n].sent_at_ms - calls[n - 1].sent_at_ms;
                let (floor, ceiling) = (FLOORS[n - 1], CEILINGS[n - 1]);
                assert!(
                    (floor..=ceiling + tick_slack(setup)).contains(&wait),
                    "{setup:?}: retry {n} waited {wait} ms, allowed {floor}..={ceiling}"
                );
            }
        }
        // The request that arrived as the gap opened needed at least 3 retries (the longest
        // waits, 300 + 600 + 1200 ms, cross 2 s by the third); none ran out.
        assert!(
            most_retries >= 3,
            "{setup:?}: at most {most_retries} retries"
        );
        let gw = &traffic.gw;
        assert_eq!(metric(gw, "kong_retry_exhausted_total"), 0, "{setup:?}");
        assert_eq!(
            metric(gw, "kong_retry_retry_success_total"),
            REQUESTS,
            "{setup:?}"
        );
        assert!(gw.traps().is_empty(), "{setup:?}");
    }
}

#[test]
fn fixed_backoff_waits_exactly_the_interval() {
    for setup in SETUPS {
        let mut gw = setup.gateway(r#""backoff":{"strategy":"fixed","interval":1500}"#, 1);
        let replies = vec![Reply::status(502), Reply::status(502), Reply::status(200)];
        let ex = gw.run(Request::new("GET", "/x"), script(replies)).unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        let calls: Vec<_> = ex.calls.iter().filter(|c| is_backend(c)).collect();
        assert_eq!(calls.len(), 3);
        for pair in calls.windows(2) {
            let wait = pair[1].sent_at_ms - pair[0].sent_at_ms;
            assert!(
                (1500..=1500 + tick_slack(setup)).contains(&wait),
                "{setup:?}: waited {wait}"
            );
        }
        assert_eq!(metric(&gw, "kong_retry_retry_success_total"), 1);
        assert_eq!(
            metric(&gw, "kong_retry_retries_by_reason_total_reason_502"),
            2
        );
    }
}

/// One request whose first answer is `status` with `Retry-After: value`, then 200.
/// Returns (client status, client retry-after header, backend calls, gateway).
fn retry_after(
    setup: Setup,
    status: u16,
    value: &dyn Fn(&Gateway) -> String,
) -> (u16, Option<String>, Vec<UpstreamCall>, Gateway) {
    let mut gw = setup.gateway(
        r#""retry_on":"429,503","retry_after_max":3000,"backoff":{"strategy":"fixed","interval":0}"#,
        1,
    );
    // Start at an odd host time so that dates (whole seconds) do not line up with it.
    gw.advance(1234);
    let header = value(&gw);
    let replies = vec![
        Reply::status(status)
            .header("retry-after", &header)
            .body(b"slow down".to_vec()),
        Reply::status(200).body(b"fine".to_vec()),
    ];
    let ex = gw.run(Request::new("GET", "/x"), script(replies)).unwrap();
    assert!(!ex.response.framing_error, "{setup:?}");
    let calls = ex.calls.iter().filter(|c| is_backend(c)).cloned().collect();
    let after = ex.response.header("retry-after").map(str::to_string);
    if ex.response.status != 200 {
        assert_eq!(
            ex.response.body, b"slow down",
            "{setup:?}: relayed unchanged"
        );
    }
    (ex.response.status, after, calls, gw)
}

#[test]
fn retry_after_in_seconds_is_honoured_up_to_the_cap() {
    for setup in SETUPS {
        for status in [429, 503] {
            let (got, _, calls, gw) = retry_after(setup, status, &|_| "2".to_string());
            assert_eq!(got, 200, "{setup:?} {status}");
            assert_eq!(calls.len(), 2);
            let wait = calls[1].sent_at_ms - calls[0].sent_at_ms;
            assert!(
                (2000..=2000 + tick_slack(setup)).contains(&wait),
                "{setup:?} {status}: waited {wait}"
            );
            let reason = format!("kong_retry_retries_by_reason_total_reason_{status}");
            assert_eq!(metric(&gw, &reason), 1, "{setup:?}");
            assert_eq!(metric(&gw, "kong_retry_retry_success_total"), 1);

            // Above retry_after_max (3 s): the response goes to the client unchanged.
            let (got, header, calls, gw) = retry_after(setup, status, &|_| "5".to_string());
            assert_eq!(got, status, "{setup:?}");
            assert_eq!(header.as_deref(), Some("5"), "{setup:?}");
            assert_eq!(calls.len(), 1, "{setup:?}");
            assert_eq!(metric(&gw, "kong_retry_retries_total"), 0);
            assert_eq!(metric(&gw, "kong_retry_requests_total"), 1);
        }
    }
}

#[test]
fn retry_after_as_an_http_date_is_honoured_up_to_the_cap() {
    // The filter's clock is EPOCH_MS + host time; a date is whole seconds.
    let unix_s = |gw: &Gateway| (EPOCH_MS + gw.now_ms()) / 1000;
    for setup in SETUPS {
        for status in [429, 503] {
            let (got, _, calls, _) = retry_after(setup, status, &|gw| http_date(unix_s(gw) + 3));
            assert_eq!(got, 200, "{setup:?} {status}");
            assert_eq!(calls.len(), 2);
            // Asked: until the date; the first answer came at calls[0].sent_at_ms.
            let date_ms = ((EPOCH_MS + calls[0].sent_at_ms) / 1000 + 3) * 1000;
            let asked = date_ms - (EPOCH_MS + calls[0].sent_at_ms);
            assert!((2000..=3000).contains(&asked));
            let wait = calls[1].sent_at_ms - calls[0].sent_at_ms;
            assert!(
                (asked..=asked + tick_slack(setup)).contains(&wait),
                "{setup:?} {status}: waited {wait}, the date asked for {asked}"
            );

            let far = |gw: &Gateway| http_date(unix_s(gw) + 60);
            let (got, header, calls, gw) = retry_after(setup, status, &far);
            assert_eq!(got, status, "{setup:?}");
            assert!(header.unwrap().ends_with("GMT"));
            assert_eq!(calls.len(), 1, "{setup:?}");
            assert_eq!(metric(&gw, "kong_retry_retries_total"), 0);
        }
    }
}

#[test]
fn no_attempt_starts_that_cannot_finish_before_the_deadline() {
    // per-try 1000, deadline 2500, 300 ms between attempts, an upstream that never answers:
    // attempt 1 at 0 (times out at 1000), attempt 2 at 1300 (would end at 2300), attempt 3
    // would start at 2600: it does not, and the client has its 504 by 2300.
    for setup in SETUPS {
        let gw = setup
            .builder(
                r#""retries":5,"per_try_timeout":1000,"deadline":2500,"backoff":{"strategy":"fixed","interval":300}"#,
            )
            .proxy_timeout_ms(1000)
            .build()
            .unwrap();
        let mut traffic = Traffic::new(gw);
        let mut upstream = |_: &UpstreamCall| Answer::Never;
        let rid = traffic.send(0, Request::new("GET", "/x"));
        traffic.run_until(2300 + tick_slack(setup), &mut upstream);
        let response = traffic.gw.response(rid);
        assert_eq!(response.map(|r| r.status), Some(504), "{setup:?}");
        let calls = calls_of(&traffic.gw, rid);
        assert_eq!(calls.len(), 2, "{setup:?}: {calls:?}");
        assert!(
            (1300..=1300 + tick_slack(setup)).contains(&calls[1].sent_at_ms),
            "{setup:?}"
        );
        for c in &calls {
            assert_eq!(
                c.timeout_ms, 1000,
                "{setup:?}: per-try timeout = dispatch timeout"
            );
            assert!(c.sent_at_ms + c.timeout_ms <= 2500, "{setup:?}: {c:?}");
        }
        traffic.run_until(10_000, &mut upstream);
        assert_eq!(backend_calls(&traffic.gw).len(), 2, "{setup:?}");
        let gw = &traffic.gw;
        assert_eq!(metric(gw, "kong_retry_retries_total"), 1);
        assert_eq!(
            metric(gw, "kong_retry_retries_by_reason_total_reason_timeout")
                + metric(gw, "kong_retry_retries_by_reason_total_reason_504"),
            1,
            "{setup:?}: {:?}",
            gw.metrics()
        );
        // Stopped by the deadline, not by running out of retries.
        assert_eq!(metric(gw, "kong_retry_exhausted_total"), 0);
    }
}

#[test]
fn a_wait_that_would_pass_the_deadline_is_not_started() {
    // A Retry-After of 2 s (under the cap) with 1.5 s left: the answer goes to the client now.
    for setup in SETUPS {
        let mut gw = setup.gateway(
            r#""retry_on":"503","per_try_timeout":500,"deadline":2000,"retry_after_max":5000"#,
            1,
        );
        let ex = gw
            .run(Request::new("GET", "/x"), |call| {
                if let Some(ms) = delay_asked(call) {
                    return Reply::status(204).after_ms(ms);
                }
                Reply::status(503).header("retry-after", "2")
            })
            .unwrap();
        assert_eq!(ex.response.status, 503, "{setup:?}");
        assert_eq!(ex.calls.iter().filter(|c| is_backend(c)).count(), 1);
        assert_eq!(gw.now_ms(), 0, "{setup:?}: answered without waiting");
    }
}
