//! A tiny lab: one graceful replacement of one of three upstreams under open-loop load,
//! through real Envoy with and without kong-retry; what a user would see.

use kong_retry_lab::gateways::{Modules, Row};
use kong_retry_lab::load::{Kind, Load, Resend};
use kong_retry_lab::pool::UpstreamProgram;
use kong_retry_lab::run::{self, Settings};
use kong_retry_lab::scenario::{Action, Phase, Plan};
use std::time::Duration;

fn tiny_plan() -> Plan {
    Plan {
        duration: Duration::from_millis(3000),
        actions: vec![(1000.0, Action::Drain(0)), (1600.0, Action::Restart(0))],
        phases: vec![
            Phase {
                name: "calm",
                from_ms: 0.0,
                to_ms: 1000.0,
            },
            Phase {
                name: "graceful",
                from_ms: 1000.0,
                to_ms: f64::MAX,
            },
        ],
    }
}

#[test]
fn the_filter_hides_a_graceful_replacement_that_plain_envoy_shows() {
    let plan = tiny_plan();
    let settings = Settings {
        upstreams: 3,
        load: Load {
            rate: 100,
            duration: plan.duration,
            upstream_delay_ms: 20,
            timeout: Duration::from_secs(10),
        },
        wrk_seconds: 0,
    };
    let modules = Modules::build(false).unwrap_or_else(|e| panic!("{e}"));
    let program = UpstreamProgram {
        bin: env!("CARGO_BIN_EXE_kong-retry-lab").into(),
        leading_args: vec!["--as-upstream".into()],
    };
    let dir = proxy_wasm_test_host::build::target_root().join("lab-test");
    let results: Vec<_> = [Row::EnvoyPlain, Row::EnvoyResponse]
        .iter()
        .enumerate()
        .map(|(i, &row)| {
            run::row(
                row,
                &plan,
                &settings,
                &modules,
                &program,
                &dir.join(format!("{}-{i}", std::process::id())),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", row.label()))
        })
        .collect();
    let plain = results[0].summary(&plan);
    let with = results[1].summary(&plan);
    assert_eq!(plain.sent, 300);
    assert!(
        plain.failed.get(&Kind::Get).copied().unwrap_or(0) > 0,
        "without a retry layer the replaced instance's GETs fail: {plain:?}"
    );
    assert_eq!(
        with.failed.get(&Kind::Get).copied().unwrap_or(0),
        0,
        "kong-retry: no GET fails while one instance is replaced: {with:?}"
    );
    assert_eq!(
        with.unkeyed_twice, 0,
        "kong-retry never sends an unkeyed POST twice"
    );
    assert_eq!(with.duplicate_effects, 0);
    assert!(results[1].retries > 0, "the filter retried");
    assert!(
        results[1].filter_errors.is_empty(),
        "{:?}",
        results[1].filter_errors
    );
}

#[test]
fn a_gracefully_replaced_gateway_node_costs_no_request_when_the_client_switches_node() {
    let drain = f64::from(kong_retry_lab::nodes::DRAIN_TIME_S) * 1000.0;
    let plan = Plan {
        duration: Duration::from_millis(4500 + drain as u64),
        actions: vec![
            (300.0, Action::DrainNode(0)),
            (800.0 + drain, Action::StopNode(0)),
            (1300.0 + drain, Action::StartNode(0)),
        ],
        phases: vec![
            Phase {
                name: "calm",
                from_ms: 0.0,
                to_ms: 300.0,
            },
            Phase {
                name: "node graceful",
                from_ms: 300.0,
                to_ms: f64::MAX,
            },
        ],
    };
    let settings = Settings {
        upstreams: 2,
        load: Load {
            rate: 100,
            duration: plan.duration,
            upstream_delay_ms: 20,
            timeout: Duration::from_secs(10),
        },
        wrk_seconds: 0,
    };
    let modules = Modules::build(false).unwrap_or_else(|e| panic!("{e}"));
    let program = UpstreamProgram {
        bin: env!("CARGO_BIN_EXE_kong-retry-lab").into(),
        leading_args: vec!["--as-upstream".into()],
    };
    let dir = proxy_wasm_test_host::build::target_root()
        .join("lab-test")
        .join(format!("nodes-{}", std::process::id()));
    let r = run::node_row(
        Row::EnvoyResponse,
        &plan,
        &settings,
        &modules,
        &program,
        &dir,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s = r.summary(&plan);
    assert_eq!(s.sent, 550);
    let failed = |k| s.failed.get(&k).copied().unwrap_or(0);
    // Node A's closed listener refuses new connections, which the client sends to node B.
    // (A connection caught in the listener's queue as it closes is reset; the client resends
    // a GET or keyed POST, not an unkeyed POST: that one may fail, so it is not counted.)
    assert_eq!(failed(Kind::Get) + failed(Kind::KeyedPost), 0, "{s:?}");
    assert!(
        s.resent
            .get(&Resend::AfterConnectFailure)
            .copied()
            .unwrap_or(0)
            > 0,
        "the client met node A's closed listener and switched: {s:?}"
    );
    assert_eq!(s.duplicate_effects, 0);
    assert!(
        r.outcomes.iter().rev().take(10).all(|o| o.node == 0),
        "the client went back to node A once it was back"
    );
    assert!(r.filter_errors.is_empty(), "{:?}", r.filter_errors);
}
