//! `kong-retry-idem-cost [--requests N] [--fuel-requests N] [--only latency|fuel]
//! [--store off|shared|etcd]`: what gateway idempotency costs one keyed POST (see
//! `kong_retry_harness::idempotency::cost`). Latency: N sequential keyed POSTs through a
//! real Envoy per store (off, shared, etcd); fuel: keyed POSTs on the test host, Kong and
//! Envoy profiles, with the etcd calls answered by a real etcd. Prints Markdown tables.

use kong_retry_harness::etcd::Etcd;
use kong_retry_harness::idempotency::cost::{latency, Latency};
use kong_retry_harness::idempotency::fuel::{fuel, Fuel};
use kong_retry_harness::idempotency::Store;
use kong_retry_harness::upstream::{cli, StartOptions, Upstream};
use proxy_wasm_test_host::{Profile, WasmModule};
use std::time::Duration;

const UPSTREAM_SUBCOMMAND: &str = "serve-upstream";

fn main() {
    // The upstream is this program too (`cargo run --bin` builds no other bin).
    if std::env::args().nth(1).as_deref() == Some(UPSTREAM_SUBCOMMAND) {
        std::process::exit(cli::run(std::env::args().skip(2)));
    }
    if let Err(e) = main_inner() {
        eprintln!("kong-retry-idem-cost: {e}");
        std::process::exit(2);
    }
}

fn main_inner() -> Result<(), String> {
    let mut requests = 2000usize;
    let mut fuel_requests = 500usize;
    let mut only: Option<String> = None;
    let mut stores = vec![Store::Off, Store::Shared, Store::Etcd];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--requests" => requests = number("--requests", &value("--requests")?)?,
            "--fuel-requests" => {
                fuel_requests = number("--fuel-requests", &value("--fuel-requests")?)?
            }
            "--only" => only = Some(value("--only")?),
            "--store" => {
                let v = value("--store")?;
                stores = vec![match v.as_str() {
                    "off" => Store::Off,
                    "shared" => Store::Shared,
                    "etcd" => Store::Etcd,
                    _ => return Err(format!("--store {v:?}: off, shared or etcd")),
                }];
            }
            "-h" | "--help" => {
                println!("usage: kong-retry-idem-cost [--requests N] [--fuel-requests N] [--only latency|fuel] [--store off|shared|etcd]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    // The upstream is served by this program (see main).
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let upstream = || {
        Upstream::start_with(
            &me,
            &StartOptions {
                leading_args: vec![UPSTREAM_SUBCOMMAND.into()],
                ..StartOptions::default()
            },
        )
    };
    let wasm = kong_retry_harness::wasm::filter().map_err(|e| e.to_string())?;
    if only.as_deref() != Some("fuel") {
        let mut rows: Vec<Latency> = Vec::new();
        for &s in &stores {
            eprintln!(
                "latency: {requests} keyed POSTs through a real Envoy, store {}",
                s.name()
            );
            rows.push(latency(&wasm, s, requests, 100, &upstream).map_err(|e| e.to_string())?);
        }
        print!("{}", latency_table(&rows));
    }
    if only.as_deref() != Some("latency") {
        let module =
            WasmModule::from_file(&wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
        let etcd = Etcd::start().map_err(|e| e.to_string())?;
        let mut rows: Vec<Fuel> = Vec::new();
        for profile in [Profile::Kong, Profile::Envoy] {
            for s in [Store::Off, Store::Shared, Store::Etcd] {
                eprintln!(
                    "fuel: {fuel_requests} keyed POSTs on the test host, {profile:?}, store {}",
                    s.name()
                );
                rows.push(
                    fuel(&module, profile, s, etcd.addr(), fuel_requests)
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        print!("{}", fuel_table(&rows));
    }
    Ok(())
}

fn number(name: &str, v: &str) -> Result<usize, String> {
    v.parse().map_err(|_| format!("{name} {v:?}: not a number"))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn latency_table(rows: &[Latency]) -> String {
    let base = rows.iter().find(|r| r.store == Store::Off);
    let mut t = String::from("| idempotency | requests | p50 ms | p99 ms | mean ms | added p50 ms | added p99 ms |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let added = |p: f64| match base {
            Some(b) if r.store != Store::Off => {
                let (a, b) = (r.percentile(p).as_secs_f64(), b.percentile(p).as_secs_f64());
                format!("{:+.2}", (a - b) * 1000.0)
            }
            _ => "—".into(),
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.store.name(),
            r.requests,
            ms(r.percentile(50.0)),
            ms(r.percentile(99.0)),
            ms(r.mean()),
            added(50.0),
            added(99.0)
        ));
    }
    t.push('\n');
    t
}

fn fuel_table(rows: &[Fuel]) -> String {
    let mut t = String::from("| profile | idempotency | requests | fuel / request | added fuel | host calls / request | etcd calls / request | shared-data gets / sets per request |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let base = rows
            .iter()
            .find(|b| b.profile == r.profile && b.store == Store::Off);
        let f = r.per_request(r.totals.fuel);
        let added = match base {
            Some(b) if r.store != Store::Off => format!("{:+.0}", f - b.per_request(b.totals.fuel)),
            _ => "—".into(),
        };
        t.push_str(&format!(
            "| {:?} | {} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} / {:.1} |\n",
            r.profile,
            r.store.name(),
            r.requests,
            f,
            added,
            r.per_request(r.totals.host_calls),
            r.per_request(r.etcd_calls),
            r.per_request(r.totals.shared_data_gets),
            r.per_request(r.totals.shared_data_sets),
        ));
    }
    t.push('\n');
    t
}
