//! The real kong_retry `.wasm` on the test host, under Kong's and Envoy's rules.
//!
//! Every scenario runs on three setups: Kong (auto → dispatch mode), Envoy (auto → response
//! mode) and Envoy in dispatch mode. Each asserts what a client and the upstream would see
//! (status, body bytes, number of upstream calls), and that no call trapped.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host_support;

use host_support::{log_lines, module, script, CLUSTER, DELAY, UPSTREAM};
use proxy_wasm_test_host::{
    Exchange, Failure, Gateway, LogLevel, Profile, Reply, Request, UpstreamCall,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Kong,
    EnvoyResponse,
    EnvoyDispatch,
}

const SETUPS: [Setup; 3] = [Setup::Kong, Setup::EnvoyResponse, Setup::EnvoyDispatch];

impl Setup {
    fn profile(self) -> Profile {
        match self {
            Setup::Kong => Profile::Kong,
            _ => Profile::Envoy,
        }
    }

    /// The setup's plugin config: `extra` (a JSON object body without braces) plus the
    /// upstream and mode this setup needs.
    fn config(self, extra: &str) -> String {
        let base = match self {
            Setup::Kong => format!(r#""upstream":"{UPSTREAM}""#),
            Setup::EnvoyResponse => format!(r#""upstream":"{CLUSTER}""#),
            Setup::EnvoyDispatch => format!(r#""upstream":"{CLUSTER}","mode":"dispatch""#),
        };
        if extra.is_empty() {
            format!("{{{base}}}")
        } else {
            format!("{{{base},{extra}}}")
        }
    }

    fn gateway(self, extra: &str) -> Gateway {
        self.gateway_with(extra, |b| b)
    }

    fn gateway_with(
        self,
        extra: &str,
        f: impl FnOnce(proxy_wasm_test_host::GatewayBuilder) -> proxy_wasm_test_host::GatewayBuilder,
    ) -> Gateway {
        let b = Gateway::builder(self.profile(), module())
            .plugin_config(self.config(extra))
            .workers(2)
            .upstream(UPSTREAM)
            .cluster(CLUSTER);
        f(b).build().unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }
}

fn backend_calls(ex: &Exchange) -> Vec<&UpstreamCall> {
    ex.calls
        .iter()
        .filter(|c| c.upstream() != Some(DELAY))
        .collect()
}

fn assert_clean(setup: Setup, gw: &Gateway) {
    assert!(gw.traps().is_empty(), "{setup:?}: traps {:?}", gw.traps());
}

fn ok(body: &str) -> Reply {
    Reply::status(200)
        .header("content-type", "text/plain")
        .body(body.as_bytes().to_vec())
}

#[test]
fn a_503_then_200_is_retried() {
    for setup in SETUPS {
        let mut gw = setup.gateway("");
        let ex = gw
            .run(
                Request::new("GET", "/orders?id=7"),
                script(vec![Reply::status(503), ok("fine")]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        assert_eq!(ex.response.body, b"fine", "{setup:?}");
        assert!(!ex.response.framing_error, "{setup:?}");
        let calls = backend_calls(&ex);
        assert_eq!(calls.len(), 2, "{setup:?}");
        assert_eq!(calls[1].path, "/orders?id=7", "{setup:?}");
        assert_eq!(calls[0].header("x-retry-attempt"), None, "{setup:?}");
        assert_eq!(calls[1].header("x-retry-attempt"), Some("2"), "{setup:?}");
        assert_eq!(
            ex.response.header("x-kong-retry-attempts"),
            Some("2"),
            "{setup:?}"
        );
        assert_clean(setup, &gw);
    }
}

#[test]
fn connect_failure_then_200_is_retried() {
    for setup in SETUPS {
        let mut gw = setup.gateway("");
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![Reply::failure(Failure::Refused), ok("fine")]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        assert_eq!(backend_calls(&ex).len(), 2, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn timeout_then_200_is_retried() {
    for setup in SETUPS {
        // Response mode: the native attempt's timeout is the proxy's route timeout.
        let mut gw = setup.gateway_with(r#""per_try_timeout":500,"deadline":5000"#, |b| {
            b.proxy_timeout_ms(500)
        });
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![Reply::failure(Failure::Timeout), ok("fine")]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        assert_eq!(backend_calls(&ex).len(), 2, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn exhausted_retries_give_the_last_status_after_retries_plus_one_calls() {
    for setup in SETUPS {
        let mut gw = setup.gateway(r#""retries":3"#);
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![
                    Reply::status(502),
                    Reply::status(503).body(b"last".to_vec()),
                ]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 503, "{setup:?}");
        assert_eq!(ex.response.body, b"last", "{setup:?}");
        assert_eq!(backend_calls(&ex).len(), 4, "{setup:?}");
        assert_eq!(ex.response.header("x-kong-retry-attempts"), Some("4"));
        assert_clean(setup, &gw);
    }
}

#[test]
fn failures_only_end_in_a_plain_text_502_or_504() {
    for (setup, extra) in [
        (
            Setup::Kong,
            format!(r#""retries":1,"delay_endpoint":"{DELAY}""#),
        ),
        (Setup::EnvoyDispatch, r#""retries":1"#.to_string()),
    ] {
        let mut gw = setup.gateway(&extra);
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![Reply::failure(Failure::Timeout)]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 504, "{setup:?}");
        assert!(ex.response.body_text().contains("timeout"), "{setup:?}");
        assert!(!ex.response.framing_error, "{setup:?}");
        assert_eq!(backend_calls(&ex).len(), 2, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn kong_answers_a_last_failed_attempt_through_a_relay_never_from_its_callback() {
    // ngx_wasm_module does not resume the filter chain after the callback of a failed
    // dispatch; a local response sent there reached clients as a dropped connection. The
    // filter sends it from the answer of a zero wait on the delay endpoint instead.
    let mut gw = Setup::Kong.gateway(&format!(r#""retries":1,"delay_endpoint":"{DELAY}""#));
    let ex = gw
        .run(
            Request::new("GET", "/x"),
            script(vec![Reply::failure(Failure::Refused)]),
        )
        .unwrap();
    assert_eq!(ex.response.status, 502);
    assert!(
        ex.response.body_text().contains("reset"),
        "{:?}",
        ex.response
    );
    let relays: Vec<_> = ex
        .calls
        .iter()
        .filter(|c| c.path == "/kong-retry/delay?ms=0")
        .collect();
    assert_eq!(relays.len(), 1, "{:?}", ex.calls);
    assert_eq!(backend_calls(&ex).len(), 2);
    assert_clean(Setup::Kong, &gw);

    // Without a delay endpoint the request goes the native way once more: the client gets
    // what the proxy gets, never a dropped connection.
    let mut gw = Setup::Kong.gateway(r#""retries":1"#);
    let ex = gw
        .run(
            Request::new("GET", "/x"),
            script(vec![
                Reply::failure(Failure::Timeout),
                Reply::failure(Failure::Timeout),
                Reply::status(200).body(b"late".to_vec()),
            ]),
        )
        .unwrap();
    assert_eq!(
        (ex.response.status, ex.response.body.as_slice()),
        (200, &b"late"[..])
    );
    assert_eq!(
        ex.calls.len(),
        3,
        "two dispatched attempts, then the native one"
    );
    assert!(gw.log_contains("the request goes the native way once more"));
    assert!(gw.traps().is_empty(), "{:?}", gw.traps());
}

#[test]
fn post_without_key_is_sent_once() {
    for setup in SETUPS {
        let mut gw = setup.gateway("");
        let ex = gw
            .run(
                Request::new("POST", "/orders")
                    .header("content-type", "application/json")
                    .body(br#"{"item":1}"#.to_vec()),
                script(vec![Reply::status(503).body(b"busy".to_vec()), ok("never")]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 503, "{setup:?}");
        assert_eq!(ex.response.body, b"busy", "{setup:?}");
        assert_eq!(backend_calls(&ex).len(), 1, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn post_with_key_is_retried_with_the_same_body_bytes() {
    let body: Vec<u8> = (0..=255u8).rev().collect();
    for setup in SETUPS {
        let mut gw = setup.gateway("");
        let ex = gw
            .run(
                Request::new("POST", "/orders")
                    .header("idempotency-key", "op-42")
                    .header("content-type", "application/octet-stream")
                    .body(body.clone()),
                script(vec![Reply::status(502), ok("created")]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        let calls = backend_calls(&ex);
        assert_eq!(calls.len(), 2, "{setup:?}");
        for c in &calls {
            assert_eq!(c.body, body, "{setup:?}");
            assert_eq!(c.header("idempotency-key"), Some("op-42"), "{setup:?}");
        }
        assert_clean(setup, &gw);
    }
}

#[test]
fn body_over_max_body_bytes_goes_once_and_the_client_gets_the_upstream_answer() {
    for setup in SETUPS {
        let mut gw = setup.gateway(r#""max_body_bytes":16"#);
        let ex = gw
            .run(
                Request::new("PUT", "/doc").body(vec![b'a'; 17]),
                script(vec![Reply::status(503).body(b"upstream says no".to_vec())]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 503, "{setup:?}");
        assert_eq!(ex.response.body, b"upstream says no", "{setup:?}");
        let calls = backend_calls(&ex);
        assert_eq!(calls.len(), 1, "{setup:?}");
        assert_eq!(calls[0].body, vec![b'a'; 17], "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn kong_spilled_body_goes_the_native_way_once() {
    let mut gw = Setup::Kong.gateway_with("", |b| b.body_buffer_size(1024));
    let body = vec![7u8; 4096];
    let ex = gw
        .run(
            Request::new("PUT", "/doc").body(body.clone()),
            script(vec![Reply::status(503), ok("never")]),
        )
        .unwrap();
    assert_eq!(ex.response.status, 503);
    let calls = backend_calls(&ex);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body, body);
    assert_clean(Setup::Kong, &gw);
}

fn echo_is_byte_exact(setup: Setup, body: Vec<u8>) {
    let size = body.len();
    let mut gw = setup.gateway_with(r#""max_body_bytes":2097152"#, |b| {
        b.body_buffer_size(4 * 1024 * 1024)
    });
    let echo = body.clone();
    let ex = gw
        .run(
            Request::new("PUT", "/blob")
                .header("content-type", "application/octet-stream")
                .body(body.clone()),
            script(vec![
                Reply::status(503),
                Reply::status(200)
                    .header("content-type", "application/octet-stream")
                    .body(echo),
            ]),
        )
        .unwrap();
    assert_eq!(ex.response.status, 200, "{setup:?} {size}");
    assert!(ex.response.body == body, "{setup:?} {size}: body differs");
    assert!(!ex.response.framing_error, "{setup:?} {size}");
    let calls = backend_calls(&ex);
    assert_eq!(calls.len(), 2, "{setup:?} {size}");
    for c in calls {
        assert!(c.body == body, "{setup:?} {size}: upstream body differs");
    }
    assert_clean(setup, &gw);
}

#[test]
fn all_byte_values_are_relayed_exactly_both_ways() {
    for setup in SETUPS {
        echo_is_byte_exact(setup, (0..=255u8).collect());
    }
}

#[test]
fn one_mebibyte_is_relayed_exactly_both_ways() {
    let body: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for setup in SETUPS {
        echo_is_byte_exact(setup, body.clone());
    }
}

#[test]
fn repeated_response_headers_keep_every_value() {
    for setup in SETUPS {
        let mut gw = setup.gateway("");
        let ex = gw
            .run(
                Request::new("GET", "/login"),
                script(vec![
                    Reply::status(503),
                    Reply::status(200)
                        .header("set-cookie", "a=1")
                        .header("set-cookie", "b=2")
                        .header("connection", "close")
                        .body(b"hi".to_vec()),
                ]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        assert_eq!(
            ex.response.header_all("set-cookie"),
            vec!["a=1", "b=2"],
            "{setup:?}"
        );
        assert_eq!(ex.response.header("transfer-encoding"), None, "{setup:?}");
        assert_eq!(ex.response.body, b"hi", "{setup:?}");
        assert!(!ex.response.framing_error, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn hop_by_hop_and_expect_are_not_forwarded() {
    for setup in [Setup::Kong, Setup::EnvoyDispatch] {
        let mut gw = setup.gateway("");
        let ex = gw
            .run(
                Request::new("PUT", "/x")
                    .header("expect", "100-continue")
                    .header("connection", "keep-alive, x-hop")
                    .header("x-hop", "1")
                    .header("te", "trailers")
                    .header("x-end-to-end", "yes")
                    .body(b"data".to_vec()),
                script(vec![Reply::status(503), ok("fine")]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200);
        // The copies the filter dispatched (on Envoy a request with a body goes natively
        // first: Envoy forwards the headers before the filter has the body).
        let copies: Vec<_> = backend_calls(&ex)
            .into_iter()
            .filter(|c| c.is_dispatch())
            .collect();
        assert!(!copies.is_empty(), "{setup:?}");
        for c in copies {
            for h in ["expect", "x-hop", "te", "transfer-encoding"] {
                assert_eq!(c.header(h), None, "{setup:?} forwarded {h}");
            }
            assert_eq!(c.header("x-end-to-end"), Some("yes"));
        }
        assert_clean(setup, &gw);
    }
}

#[test]
fn backoff_waits_on_the_host_clock() {
    // Kong waits on the loopback delay endpoint, Envoy on the root context's tick.
    for setup in SETUPS {
        let extra = format!(
            r#""backoff":{{"strategy":"fixed","interval":300}},"delay_endpoint":"{DELAY}""#
        );
        let mut gw = setup.gateway(&extra);
        let start = gw.now_ms();
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![Reply::status(503), ok("fine")]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        let calls = backend_calls(&ex);
        assert_eq!(calls.len(), 2, "{setup:?}");
        let gap = calls[1].sent_at_ms - calls[0].sent_at_ms;
        assert!(
            (300..400).contains(&gap),
            "{setup:?}: retry sent {gap} ms after the first attempt"
        );
        assert!(gw.now_ms() - start >= 300);
        assert_clean(setup, &gw);
    }
}

#[test]
fn kong_without_delay_endpoint_retries_immediately_and_says_so_once() {
    let mut gw = Setup::Kong.gateway(r#""backoff":{"strategy":"fixed","interval":300}"#);
    for _ in 0..2 {
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![Reply::status(503), ok("fine")]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200);
    }
    let notices = gw
        .logs()
        .iter()
        .filter(|l| l.message.contains("delay_endpoint"))
        .count();
    assert_eq!(notices, 1, "once per VM, not per request: {:?}", gw.logs());
    assert_clean(Setup::Kong, &gw);
}

#[test]
fn kong_without_delay_endpoint_passes_a_retry_after_on_instead_of_ignoring_it() {
    // Retrying at once would ignore the server's explicit request to wait, and Kong cannot
    // wait without the delay endpoint: the client gets the response and its Retry-After.
    let mut gw = Setup::Kong.gateway(r#""retry_on":"429,503","retry_after_max":5000"#);
    for status in [429, 503] {
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![
                    Reply::status(status)
                        .header("retry-after", "2")
                        .body(b"slow down".to_vec()),
                    ok("fine"),
                ]),
            )
            .unwrap();
        assert_eq!(ex.response.status, status);
        assert_eq!(ex.response.header("retry-after"), Some("2"));
        assert_eq!(ex.response.body, b"slow down");
        assert_eq!(backend_calls(&ex).len(), 1, "{status}: not retried");
    }
    // Without a Retry-After (or with 0) the retry still goes at once.
    for extra in [None, Some("0")] {
        let mut first = Reply::status(503);
        if let Some(v) = extra {
            first = first.header("retry-after", v);
        }
        let ex = gw
            .run(Request::new("GET", "/x"), script(vec![first, ok("fine")]))
            .unwrap();
        assert_eq!(ex.response.status, 200, "{extra:?}");
        assert_eq!(backend_calls(&ex).len(), 2, "{extra:?}");
    }
    assert_clean(Setup::Kong, &gw);
}

#[test]
fn kong_upstream_defaults_to_the_routes_service() {
    let mut gw = Gateway::builder(Profile::Kong, module())
        .plugin_config(r#"{"retries":1}"#)
        .property(
            &["kong", "router", "service"],
            br#"{"host":"orders.internal","port":9090,"protocol":"http"}"#.to_vec(),
        )
        .upstream("orders.internal:9090")
        .build()
        .unwrap();
    let ex = gw
        .run(
            Request::new("GET", "/x"),
            script(vec![Reply::status(503), ok("fine")]),
        )
        .unwrap();
    assert_eq!(ex.response.status, 200);
    let calls = backend_calls(&ex);
    assert_eq!(calls.len(), 2);
    assert!(calls
        .iter()
        .all(|c| c.upstream() == Some("orders.internal:9090")));
    assert_clean(Setup::Kong, &gw);
}

#[test]
fn kong_without_any_upstream_goes_native_and_says_why() {
    let mut gw = Gateway::builder(Profile::Kong, module())
        .plugin_config(r#"{"retries":1}"#)
        .without_property(&["kong", "router", "service"])
        .upstream(UPSTREAM)
        .workers(1)
        .build()
        .unwrap();
    let ex = gw
        .run(Request::new("GET", "/x"), script(vec![Reply::status(503)]))
        .unwrap();
    assert_eq!(ex.response.status, 503);
    assert_eq!(backend_calls(&ex).len(), 1);
    assert!(gw.log_contains("no `upstream` configured"));
    assert_clean(Setup::Kong, &gw);
}

#[test]
fn bad_configs_are_rejected_naming_their_field() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"retries":3,"retry_on":"502,503,timeout","retry_timeout":5000}"#,
            "per_try_timeout",
        ),
        (r#"{"retries":11}"#, "`retries`"),
        (r#"{"retries":"3"}"#, "`retries`"),
        (r#"{"retry_on":"502,sometimes"}"#, "`retry_on`"),
        (r#"{"per_try_timeout":0}"#, "`per_try_timeout`"),
        (r#"{"per_try_timeout":5000,"deadline":1000}"#, "`deadline`"),
        (r#"{"mode":"turbo"}"#, "`mode`"),
        (r#"{"upstream":"http://h/path"}"#, "`upstream`"),
        (r#"{"methods":["GE T"]}"#, "`methods`"),
        (r#"{"idempotency_header":"a b"}"#, "`idempotency_header`"),
        (r#"{"max_body_bytes":-1}"#, "`max_body_bytes`"),
        (
            r#"{"attempts_header":"transfer-encoding"}"#,
            "`attempts_header`",
        ),
        (r#"{"backoff":{"strategy":"fixed"}}"#, "`backoff.interval`"),
        (
            r#"{"backoff":{"base_interval":500,"max_interval":100}}"#,
            "`backoff.max_interval`",
        ),
        (r#"{"retry_after_max":"10s"}"#, "`retry_after_max`"),
        (r#"{"budget":{"percent":150}}"#, "`budget.percent`"),
        (r#"{"budget":{"scope":"cluster"}}"#, "`budget.scope`"),
        (r#"{"delay_endpoint":"localhost"}"#, "`delay_endpoint`"),
        (r#"{"retries":2,"colour":"blue"}"#, "`colour`"),
        ("not json", "(config)"),
    ];
    for profile in [Profile::Kong, Profile::Envoy] {
        for (config, field) in cases {
            let (gw, ex) = rejected(profile, config);
            let errors: Vec<String> = gw
                .logs()
                .into_iter()
                .filter(|l| l.level >= LogLevel::Error)
                .map(|l| l.message)
                .collect();
            assert!(
                errors.iter().any(|l| l.contains(field)),
                "{profile:?} {config}: no error line names {field}: {errors:?}"
            );
            // The gateway keeps serving: the request passes through untouched, once.
            assert_eq!(ex.response.status, 503, "{profile:?} {config}");
            assert_eq!(ex.calls.len(), 1, "{profile:?} {config}");
            assert!(gw.traps().is_empty(), "{profile:?} {config}");
        }
    }
}

/// A gateway whose filter got `config` (which it rejects), and one request through it whose
/// upstream answers 503 (which the filter would retry if it had a plan).
fn rejected(profile: Profile, config: &str) -> (Gateway, Exchange) {
    let mut gw = Gateway::builder(profile, module())
        .plugin_config(config)
        .cluster(CLUSTER)
        .build()
        .unwrap_or_else(|e| panic!("{profile:?} {config}: the gateway must start: {e}"));
    let ex = gw
        .run(
            Request::new("GET", "/x"),
            script(vec![Reply::status(503), ok("fine")]),
        )
        .unwrap();
    (gw, ex)
}

#[test]
fn paste_from_notes_names_both_timeouts() {
    let (gw, _) = rejected(
        Profile::Kong,
        r#"{"retries":3,"retry_on":"502,503,timeout","retry_timeout":5000}"#,
    );
    let line = log_lines(&gw, LogLevel::Error, "retry_timeout").join("\n");
    assert!(
        line.contains("per_try_timeout") && line.contains("deadline"),
        "{line}"
    );
}

#[test]
fn response_mode_on_kong_runs_in_dispatch_mode_with_a_warning() {
    // Kong cannot retry in the response phase; the host is known only on the first
    // request, so the filter says so then and forwards the requests itself.
    let mut gw = Gateway::builder(Profile::Kong, module())
        .plugin_config(r#"{"mode":"response","upstream":"127.0.0.1:8080"}"#)
        .build()
        .unwrap();
    let ex = gw
        .run(
            Request::new("GET", "/x"),
            script(vec![Reply::status(503), ok("fine")]),
        )
        .unwrap();
    assert_eq!(ex.response.status, 200);
    assert_eq!(backend_calls(&ex).len(), 2);
    assert_eq!(
        log_lines(
            &gw,
            LogLevel::Warn,
            "mode \"response\" is not possible on Kong"
        )
        .len(),
        1
    );
    assert!(gw.traps().is_empty(), "{:?}", gw.traps());
}

#[test]
fn a_response_cut_off_mid_body_is_a_failed_attempt() {
    // Kong reports :status and the announced size, then refuses the body (BadArgument):
    // the SDK getter would panic and trap; the filter must retry instead.
    for setup in [Setup::Kong, Setup::EnvoyDispatch] {
        let mut gw = setup.gateway("");
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![
                    Reply::truncated(200, 1000, b"partial".to_vec()),
                    ok("whole"),
                ]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        assert_eq!(ex.response.body, b"whole", "{setup:?}");
        assert_eq!(backend_calls(&ex).len(), 2, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn requests_on_both_workers_keep_working_after_many_retries() {
    for setup in SETUPS {
        let mut gw = setup.gateway(r#""retries":1"#);
        for i in 0..20 {
            let replies = if i % 2 == 0 {
                vec![Reply::status(502), ok("fine")]
            } else {
                vec![ok("fine")]
            };
            let ex = gw
                .run_on(i, Request::new("GET", "/x"), script(replies))
                .unwrap();
            assert_eq!(ex.response.status, 200, "{setup:?} request {i}");
        }
        assert_eq!(
            gw.instances_started(),
            2,
            "{setup:?}: no instance restarted"
        );
        assert_clean(setup, &gw);
    }
}
