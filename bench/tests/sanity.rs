//! Runs every scenario of the benchmark with a few requests and checks that the counts
//! make sense. No timing is asserted: fuel, host calls and bytes are counts.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kong_retry_bench::{
    self as bench, Calls, Feature, Filter, Filters, Report, RequestKind, Scenario, UpstreamKind,
    MODES, PUT_BODY_BYTES,
};
use proxy_wasm_test_host::WasmModule;
use std::sync::OnceLock;

const REQUESTS: usize = 5;

fn filters() -> &'static Filters {
    static FILTERS: OnceLock<Filters> = OnceLock::new();
    FILTERS.get_or_init(|| Filters {
        kong_retry: bench::load_filter(None)
            .expect("build the filter (./wasm-build.sh)")
            .0,
        // The test insists on the floor: a broken fixture should not go unnoticed.
        floor: Ok(bench::load_floor().expect("build bench/fixtures/noop-filter")),
    })
}

fn module() -> &'static WasmModule {
    &filters().kong_retry
}

fn report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| bench::run_all(filters(), REQUESTS, |_| {}).expect("every scenario runs"))
}

fn calls(native: u32, dispatch: u32, delay: u32) -> Calls {
    Calls {
        native,
        dispatch,
        delay,
    }
}

#[test]
fn every_available_row_is_measured_with_nonzero_counts() {
    let report = report();
    let adaptive = bench::available(module(), Feature::Adaptive).unwrap();
    let expected_rows = bench::scenarios()
        .iter()
        .filter(|s| s.mode.needs.is_none() || adaptive)
        .count();
    assert_eq!(report.rows.len(), expected_rows);
    assert!(
        expected_rows >= 16,
        "3 modes × GET/PUT × happy/retried, 2 floors × GET/PUT"
    );
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    for row in &report.rows {
        let name = format!(
            "{} {} {}",
            row.scenario.mode.name,
            row.scenario.request.label(),
            row.scenario.upstream.label()
        );
        let t = &row.totals;
        assert_eq!(t.requests, REQUESTS as u64, "{name}");
        assert!(t.fuel > 0, "{name}: fuel");
        assert!(t.fuel_max >= t.fuel / t.requests, "{name}: max ≥ mean");
        assert!(t.callbacks >= 3 * t.requests, "{name}: callbacks");
        if row.scenario.mode.filter == Filter::KongRetry {
            assert!(t.host_calls > 0, "{name}: host calls");
            assert!(t.bytes_to_guest > 0, "{name}: the filter reads headers");
        }
    }
}

#[test]
fn calls_per_request_per_mode() {
    let report = report();
    let get = |mode: &str, up| {
        report
            .row(mode, RequestKind::Get, up)
            .unwrap()
            .scenario
            .expect
    };
    // Kong dispatch: exactly one upstream call per happy request, nothing native.
    assert_eq!(get("Kong dispatch", UpstreamKind::Happy), calls(0, 1, 0));
    // A retry on Kong waits on the delay endpoint, then dispatches again.
    assert_eq!(get("Kong dispatch", UpstreamKind::Retried), calls(0, 2, 1));
    assert_eq!(get("Envoy response", UpstreamKind::Happy), calls(1, 0, 0));
    assert_eq!(get("Envoy response", UpstreamKind::Retried), calls(1, 1, 0));
    assert_eq!(get("Envoy dispatch", UpstreamKind::Happy), calls(0, 1, 0));
    assert_eq!(get("Envoy dispatch", UpstreamKind::Retried), calls(0, 2, 0));
}

#[test]
fn bodies_are_copied_where_the_mode_needs_them() {
    let report = report();
    let body = PUT_BODY_BYTES as u64;
    // Envoy dispatch mode sends a request with a body natively first (Envoy forwards the
    // headers before the filter has the body), copying it as response mode does.
    let copied = |mode: &str| {
        let t = &report
            .row(mode, RequestKind::Put1KiB, UpstreamKind::Happy)
            .unwrap()
            .totals;
        t.bytes_to_guest / t.requests
    };
    assert_eq!(copied("Envoy dispatch"), copied("Envoy response"));
    for mode in ["Kong dispatch", "Envoy response"] {
        let put = &report
            .row(mode, RequestKind::Put1KiB, UpstreamKind::Happy)
            .unwrap()
            .totals;
        let get = &report
            .row(mode, RequestKind::Get, UpstreamKind::Happy)
            .unwrap()
            .totals;
        // The copy kept for a retry is read into the guest.
        assert!(
            put.bytes_to_guest / put.requests >= get.bytes_to_guest / get.requests + body,
            "{mode}: PUT body read into the guest"
        );
        if mode.ends_with("dispatch") {
            // ... and sent out again by the dispatch.
            assert!(
                put.bytes_from_guest / put.requests >= body,
                "{mode}: PUT body dispatched"
            );
        }
    }
}

#[test]
fn a_retry_costs_more_than_the_happy_path() {
    let report = report();
    let mut compared = 0;
    for mode in MODES {
        for request in RequestKind::ALL {
            let (Some(happy), Some(retried)) = (
                report.row(mode.name, request, UpstreamKind::Happy),
                report.row(mode.name, request, UpstreamKind::Retried),
            ) else {
                continue;
            };
            compared += 1;
            assert!(
                retried.totals.fuel > happy.totals.fuel,
                "{} {}",
                mode.name,
                request.label()
            );
            assert!(
                retried.totals.host_calls > happy.totals.host_calls,
                "{} {}",
                mode.name,
                request.label()
            );
        }
    }
    // Kong dispatch, Envoy response and Envoy dispatch have retried rows in every build.
    assert!(compared >= 3 * RequestKind::ALL.len(), "{compared} pairs");
}

#[test]
fn adaptive_rows_appear_or_are_reported_unavailable() {
    let report = report();
    let header = bench::Header::default();
    let text = bench::render(report, &header);
    if bench::available(module(), Feature::Adaptive).unwrap() {
        assert!(report.unavailable.is_empty());
        let calm = report
            .row(
                "Kong adaptive-calm",
                RequestKind::Put1KiB,
                UpstreamKind::Happy,
            )
            .unwrap();
        assert_eq!(
            calm.scenario.expect,
            calls(1, 0, 0),
            "calm requests go natively"
        );
        // Issue 6: at most one shared-data read per calm request, no write.
        assert!(calm.totals.shared_data_gets <= calm.totals.requests);
        assert_eq!(calm.totals.shared_data_sets, 0);
        // Issue 6: the calm path copies no body.
        assert!(
            calm.totals.bytes_to_guest / calm.totals.requests < PUT_BODY_BYTES as u64,
            "calm PUT copied its body"
        );
        let protected = report
            .row(
                "Kong adaptive-protected",
                RequestKind::Get,
                UpstreamKind::Happy,
            )
            .unwrap();
        assert_eq!(
            protected.scenario.expect,
            calls(0, 1, 0),
            "protected requests dispatch"
        );
        let ratios: Vec<_> = bench::ratios(report)
            .into_iter()
            .filter(|r| r.ratio.numerator == "Kong adaptive-calm")
            .collect();
        assert_eq!(ratios.len(), RequestKind::ALL.len());
        assert!(ratios
            .iter()
            .all(|r| r.fuel_percent > 0.0 && r.met().is_some()));
        assert!(text.contains("Kong adaptive-calm / Kong dispatch, GET: fuel"));
    } else {
        assert_eq!(report.unavailable, vec![Feature::Adaptive]);
        assert!(text.contains("adaptive: not available in this build"));
        assert!(!text.contains("| Kong adaptive"));
        assert!(bench::ratios(report)
            .iter()
            .all(|r| r.ratio.numerator != "Kong adaptive-calm"));
    }
    for row in &report.rows {
        assert!(text.contains(&format!(
            "| {} | {} | {} | {} |",
            row.scenario.mode.name,
            row.scenario.request.label(),
            row.scenario.upstream.label(),
            row.scenario.expect.describe()
        )));
    }
}

#[test]
fn a_request_that_does_not_make_the_expected_calls_is_an_error() {
    let mode = MODES.iter().find(|m| m.name == "Kong dispatch").unwrap();
    let wrong = Scenario {
        mode,
        request: RequestKind::Get,
        upstream: UpstreamKind::Happy,
        expect: calls(1, 0, 0),
    };
    let err = bench::measure(module(), &wrong, 1).unwrap_err();
    assert!(
        err.contains("made 1 dispatch, expected 1 native"),
        "unexpected error: {err}"
    );
}

#[test]
fn the_floor_is_below_every_mode_of_the_filter() {
    let report = report();
    for (floor, host) in [
        ("Kong floor (no-op filter)", "Kong "),
        ("Envoy floor (no-op filter)", "Envoy "),
    ] {
        for request in RequestKind::ALL {
            let floor_row = report.row(floor, request, UpstreamKind::Happy).unwrap();
            assert_eq!(floor_row.scenario.expect, calls(1, 0, 0), "{floor}: native");
            // The no-op filter copies no body.
            let t = &floor_row.totals;
            assert!(
                t.bytes_to_guest / t.requests < PUT_BODY_BYTES as u64,
                "{floor}"
            );
            let above: Vec<_> = report
                .rows
                .iter()
                .filter(|r| {
                    r.scenario.mode.name.starts_with(host)
                        && r.scenario.mode.name != floor
                        && r.scenario.request == request
                })
                .collect();
            assert!(
                !above.is_empty(),
                "{floor}: no row of the filter to compare"
            );
            for row in above {
                assert!(
                    row.totals.fuel > t.fuel,
                    "{} {} below the floor",
                    row.scenario.mode.name,
                    request.label()
                );
            }
        }
    }
}
