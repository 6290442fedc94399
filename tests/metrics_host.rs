//! Counters and log lines of the real filter `.wasm` on the test host, both profiles: what
//! an operator sees in Prometheus and in the error log.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host_support;

use host_support::*;
use proxy_wasm_test_host::{Failure, Gateway, LogLevel, Reply, Request};

const FIXED: [&str; 6] = [
    "kong_retry_requests_total",
    "kong_retry_retries_total",
    "kong_retry_retry_success_total",
    "kong_retry_budget_denied_total",
    "kong_retry_exhausted_total",
    "kong_retry_too_large_total",
];

fn by_reason_total(gw: &Gateway) -> u64 {
    gw.metrics()
        .iter()
        .filter(|(name, _)| name.starts_with("kong_retry_retries_by_reason_total_reason_"))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn counters_are_defined_when_the_filter_is_configured() {
    for setup in SETUPS {
        let gw = setup.gateway("", 3);
        let names: Vec<String> = gw.metrics().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, FIXED, "{setup:?}");
        assert!(gw.metrics().iter().all(|(_, v)| *v == 0));
    }
}

#[test]
fn each_way_a_request_ends_has_its_counter() {
    for setup in SETUPS {
        let mut gw = setup.gateway(
            r#""retries":2,"max_body_bytes":16,"backoff":{"strategy":"fixed","interval":10}"#,
            2,
        );
        let get = || Request::new("GET", "/x");
        // Success after one retry, twice (a status, then a failed connection).
        let ex = gw
            .run(get(), script(vec![Reply::status(503), Reply::status(200)]))
            .unwrap();
        assert_eq!(ex.response.status, 200);
        let ex = gw
            .run_on(
                1,
                get(),
                script(vec![Reply::failure(Failure::Refused), Reply::status(200)]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200);
        // Exhausted: three attempts, all 502.
        let ex = gw.run(get(), script(vec![Reply::status(502)])).unwrap();
        assert_eq!(ex.response.status, 502);
        assert_eq!(ex.calls.iter().filter(|c| is_backend(c)).count(), 3);
        // Too large to copy: sent once, natively.
        let ex = gw
            .run(
                Request::new("PUT", "/doc").body(vec![b'a'; 17]),
                script(vec![Reply::status(503)]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 503);
        assert_eq!(ex.calls.iter().filter(|c| is_backend(c)).count(), 1);
        // Not retryable (POST without a key) and plain success: only seen.
        let ex = gw
            .run(
                Request::new("POST", "/orders").body(b"{}".to_vec()),
                script(vec![Reply::status(503)]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 503, "{setup:?}");
        assert_eq!(ex.calls.iter().filter(|c| is_backend(c)).count(), 1);
        let ex = gw.run(get(), script(vec![Reply::status(200)])).unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");

        let m = |name: &str| metric(&gw, name);
        assert_eq!(m("kong_retry_requests_total"), 6, "{setup:?}");
        assert_eq!(m("kong_retry_retries_total"), 4, "{setup:?}");
        assert_eq!(m("kong_retry_retry_success_total"), 2, "{setup:?}");
        assert_eq!(m("kong_retry_exhausted_total"), 1, "{setup:?}");
        assert_eq!(m("kong_retry_too_large_total"), 1, "{setup:?}");
        assert_eq!(m("kong_retry_budget_denied_total"), 0, "{setup:?}");
        assert_eq!(
            m("kong_retry_retries_by_reason_total_reason_502"),
            2,
            "{setup:?}"
        );
        assert_eq!(by_reason_total(&gw), 4, "{setup:?}: {:?}", gw.metrics());
        // The refused connection's reason depends on who made the attempt: Kong says
        // `broken connection`, which it also says for a reset after the request was sent, so
        // the filter counts a reset; Envoy's dispatch gives no reason; Envoy's own forward
        // answers 503.
        let refused = match setup {
            Setup::Kong => "reset",
            Setup::EnvoyDispatch => "no_response",
            Setup::EnvoyResponse => "503",
        };
        let with_the_first_503 = u64::from(setup == Setup::EnvoyResponse);
        assert_eq!(
            m(&format!(
                "kong_retry_retries_by_reason_total_reason_{refused}"
            )),
            1 + with_the_first_503,
            "{setup:?}: {:?}",
            gw.metrics()
        );
        assert!(gw.traps().is_empty(), "{setup:?}");
    }
}

#[test]
fn a_budget_refusal_is_counted() {
    for setup in SETUPS {
        // No floor and no share: the budget never has a whole token.
        let mut gw = setup.gateway(r#""budget":{"percent":0,"min_retries_per_second":0}"#, 1);
        for _ in 0..3 {
            let ex = gw
                .run(Request::new("GET", "/x"), script(vec![Reply::status(503)]))
                .unwrap();
            assert_eq!(ex.response.status, 503);
            assert_eq!(ex.calls.iter().filter(|c| is_backend(c)).count(), 1);
        }
        assert_eq!(
            metric(&gw, "kong_retry_budget_denied_total"),
            3,
            "{setup:?}"
        );
        assert_eq!(metric(&gw, "kong_retry_retries_total"), 0, "{setup:?}");
    }
}

#[test]
fn one_info_line_per_retry_and_no_key_or_body_above_debug() {
    const KEY: &str = "op-7f3a-secret-key";
    const BODY: &str = "card=4111-secret-body";
    for setup in SETUPS {
        let mut gw = setup
            .builder(r#""backoff":{"strategy":"fixed","interval":40}"#)
            .log_level(LogLevel::Trace)
            .build()
            .unwrap();
        let ex = gw
            .run(
                Request::new("POST", "/pay")
                    .header("idempotency-key", KEY)
                    .body(BODY.as_bytes().to_vec()),
                script(vec![
                    Reply::status(503),
                    Reply::failure(Failure::Reset),
                    Reply::status(201),
                ]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 201, "{setup:?}");

        let retries: Vec<_> = gw
            .logs()
            .into_iter()
            .filter(|l| l.level == LogLevel::Info && l.message.contains("retry: attempt"))
            .collect();
        assert_eq!(retries.len(), 2, "{setup:?}: {retries:?}");
        // Context id, attempt, reason and the wait, on one line each.
        let ctx = retries[0]
            .message
            .split(['[', ']'])
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok())
            .expect("a context id");
        assert!(ctx > 1, "{setup:?}: the request's context, not the root's");
        // Kong reports a reset as `broken connection` (a reset: it may have reached the
        // upstream); Envoy gives no reason.
        let failed = match setup {
            Setup::Kong => "reset",
            _ => "no-response",
        };
        for (line, (attempt, reason)) in retries.iter().zip([(2, "503"), (3, failed)]) {
            let m = &line.message;
            assert!(m.contains(&format!("[{ctx}]")), "{setup:?}: {m}");
            assert!(m.contains(&format!("attempt {attempt} ")), "{setup:?}: {m}");
            assert!(m.contains(reason), "{setup:?}: {m}");
            assert!(m.contains("(waited 4"), "{setup:?}: {m}");
        }
        // The idempotency key and the body never show above debug.
        for l in gw.logs() {
            if l.level >= LogLevel::Info {
                assert!(!l.message.contains(KEY), "{setup:?}: {l:?}");
                assert!(!l.message.contains("secret-body"), "{setup:?}: {l:?}");
            }
        }
    }
}
