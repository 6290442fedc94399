//! `cargo run --release -p kong-retry-lab -- [--short]`: runs the rolling-upgrade lab and
//! writes docs/lab.md and docs/lab.png (`--short`: ~30 s of load, Envoy with and without
//! the filter, the table on stdout only).

use kong_retry_lab::gateways::{self, Modules, Row};
use kong_retry_lab::load::{request_id, Kind, Load};
use kong_retry_lab::pool::UpstreamProgram;
use kong_retry_lab::report::{self, RowResult};
use kong_retry_lab::run::{self, Settings};
use kong_retry_lab::scenario::Plan;
use kong_retry_lab::{err, plot, LabError};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--as-upstream") {
        std::process::exit(kong_retry_harness::upstream::cli::run(
            args.into_iter().skip(1),
        ));
    }
    let mut short = false;
    let mut only = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--short" => short = true,
            "--only" => only = it.next(),
            other => {
                eprintln!("usage: kong-retry-lab [--short] [--only TEXT]   (--only: rows whose label contains TEXT; not {other:?})");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = lab(short, only.as_deref()) {
        eprintln!("kong-retry-lab: {e}");
        std::process::exit(1);
    }
}

fn lab(short: bool, only: Option<&str>) -> Result<(), LabError> {
    let started = Instant::now();
    let root = kong_retry_harness::repo_root();
    let all: &[Row] = if short {
        &gateways::SHORT
    } else {
        &gateways::ALL
    };
    let rows: Vec<Row> = all
        .iter()
        .copied()
        .filter(|r| only.is_none_or(|t| r.label().contains(t)))
        .collect();
    if rows.is_empty() {
        return Err(err(format!("--only {only:?} matches no row")));
    }
    // A partial run prints its table and writes nothing under docs/.
    let partial = short || only.is_some();
    let plan = if short {
        Plan::short(15.0)
    } else {
        Plan::full(3)
    };
    let settings = Settings {
        upstreams: 3,
        load: Load {
            rate: 200,
            duration: plan.duration,
            upstream_delay_ms: 20,
            timeout: Duration::from_secs(10),
        },
        wrk_seconds: 3,
    };
    eprintln!("lab: building the filter module");
    let modules = Modules::build(rows.iter().any(|r| matches!(r, Row::KongPlain)))?;
    let program = UpstreamProgram::this_program()?;
    let dir = proxy_wasm_test_host::build::target_root().join("lab-runs");
    let mut results: Vec<RowResult> = Vec::new();
    for (i, &row) in rows.iter().enumerate() {
        eprintln!(
            "lab: [{}/{}] {} ({:.0} s of load at {} req/s)",
            i + 1,
            rows.len(),
            row.label(),
            plan.duration.as_secs_f64(),
            settings.load.rate
        );
        let r = run::row(
            row,
            &plan,
            &settings,
            &modules,
            &program,
            &dir.join(format!("row-{i}")),
        )?;
        let s = r.summary(&plan);
        eprintln!(
            "lab:   {} of {} failed, {} unkeyed POSTs applied twice, {} retries; {}",
            s.failed.values().sum::<usize>(),
            s.sent,
            s.unkeyed_twice,
            r.retries,
            report::failure_reasons(&r)
        );
        let counters: Vec<String> = r.counters.iter().map(|(n, v)| format!("{n} {v}")).collect();
        eprintln!("lab:   counters: {}", counters.join(", "));
        if std::env::var_os("KONG_RETRY_LAB_VERBOSE").is_some() {
            for o in r
                .outcomes
                .iter()
                .filter(|o| o.failed() && o.kind != Kind::UnkeyedPost)
            {
                let n = r.deliveries.get(&request_id(o.seq)).copied().unwrap_or(0);
                eprintln!(
                    "lab:   failed {} r{} due {:.0} ms after {:.0} ms, delivered {n}×: {} {}",
                    o.kind.name(),
                    o.seq,
                    o.scheduled_ms,
                    o.latency_ms,
                    o.failure.as_deref().unwrap_or(""),
                    o.detail.as_deref().unwrap_or("")
                );
            }
        }
        results.push(r);
    }
    let table = report::table(&results, &plan);
    let wall = started.elapsed();
    if partial {
        println!("{table}");
        println!(
            "(short lab: {:.0} s wall; the full lab: cargo run --release -p kong-retry-lab)",
            wall.as_secs_f64()
        );
        return Ok(());
    }
    let docs = root.join("docs");
    let png = docs.join("lab.png");
    plot::timeline(
        &results,
        plan.duration.as_secs_f64() * 1000.0,
        "kong-retry lab: rolling upgrade of 3 upstreams under 200 req/s (GET, keyed POST, unkeyed POST)",
        &png,
    )?;
    let md = kong_retry_lab::report::document(&results, &plan, &settings, &table, wall, &root);
    let path = docs.join("lab.md");
    std::fs::write(&path, md).map_err(|e| err(format!("writing {}: {e}", path.display())))?;
    println!("{table}");
    println!(
        "wrote {} and {} in {:.0} s",
        path.display(),
        png.display(),
        wall.as_secs_f64()
    );
    Ok(())
}
