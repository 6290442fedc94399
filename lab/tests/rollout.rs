//! Tiny labs on real sockets, through real Envoy, under open-loop load; what a user would
//! see: one graceful replacement of one of three upstreams with and without kong-retry, and
//! one graceful replacement of one of two gateway nodes.

use kong_retry_lab::gateways::{Modules, Row};
use kong_retry_lab::load::{Kind, Load, Resend};
use kong_retry_lab::pool::UpstreamProgram;
use kong_retry_lab::report::RowResult;
use kong_retry_lab::run::{self, Settings, Setup};
use kong_retry_lab::scenario::{phases, Action, Plan};
use std::path::PathBuf;
use std::time::Duration;

/// 100 req/s for the plan's duration, upstreams answering after 20 ms, no wrk.
fn settings(plan: &Plan, upstreams: usize) -> Settings {
    Settings {
        upstreams,
        load: Load {
            rate: 100,
            duration: plan.duration,
            upstream_delay_ms: 20,
            timeout: Duration::from_secs(10),
        },
        wrk_seconds: 0,
    }
}

fn program() -> UpstreamProgram {
    UpstreamProgram {
        bin: env!("CARGO_BIN_EXE_kong-retry-lab").into(),
        leading_args: vec!["--as-upstream".into()],
    }
}

fn run_dir(name: &str) -> PathBuf {
    proxy_wasm_test_host::build::target_root()
        .join("lab-test")
        .join(format!("{name}-{}", std::process::id()))
}

/// Runs `rows` under `plan`, on one gateway or (`on_nodes`) two gateway nodes.
#[allow(clippy::panic)] // a test helper: a row that cannot run fails the test
fn run_rows(plan: &Plan, upstreams: usize, rows: &[Row], on_nodes: bool) -> Vec<RowResult> {
    let settings = settings(plan, upstreams);
    let modules = Modules::build(false).unwrap_or_else(|e| panic!("{e}"));
    let program = program();
    let setup = Setup {
        plan,
        settings: &settings,
        modules: &modules,
        program: &program,
    };
    rows.iter()
        .enumerate()
        .map(|(i, &row)| {
            let dir = run_dir(&format!("{}{i}", if on_nodes { "nodes" } else { "row" }));
            let r = if on_nodes {
                run::node_row(row, &setup, &dir)
            } else {
                run::row(row, &setup, &dir)
            };
            r.unwrap_or_else(|e| panic!("{}: {e}", row.label()))
        })
        .collect()
}

#[test]
fn the_filter_hides_a_graceful_replacement_that_plain_envoy_shows() {
    let plan = Plan {
        duration: Duration::from_millis(3000),
        actions: vec![(1000.0, Action::Drain(0)), (1600.0, Action::Restart(0))],
        phases: phases(&[("calm", 0.0, 1000.0), ("graceful", 1000.0, f64::MAX)]),
    };
    let results = run_rows(&plan, 3, &[Row::EnvoyPlain, Row::EnvoyResponse], false);
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
        phases: phases(&[("calm", 0.0, 300.0), ("node graceful", 300.0, f64::MAX)]),
    };
    let results = run_rows(&plan, 2, &[Row::EnvoyResponse], true);
    let r = &results[0];
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
