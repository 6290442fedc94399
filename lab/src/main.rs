//! `cargo run --release -p kong-retry-lab -- [--short] [--only TEXT] [--java]`: runs the
//! rolling-upgrade lab (a rollout of the upstreams, then a gateway-node replacement) and
//! writes docs/lab.md and docs/lab.png (`--short`: ~15 s of load, Envoy with and without
//! the filter, no node replacement, then the Java client's exactly-once run when a JDK is
//! on PATH; `--short` and `--only` print the table only; `--java`: the Java run alone).

use kong_retry_lab::gateways::{self, Modules, Row};
use kong_retry_lab::load::{request_id, Kind, Load};
use kong_retry_lab::pool::UpstreamProgram;
use kong_retry_lab::report::{self, RowResult};
use kong_retry_lab::run::{self, Settings};
use kong_retry_lab::scenario::Plan;
use kong_retry_lab::{err, nodes, plot, LabError};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--as-upstream") {
        std::process::exit(kong_retry_harness::upstream::cli::run(
            args.into_iter().skip(1),
        ));
    }
    let mut short = false;
    let mut java_only = false;
    let mut only = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--short" => short = true,
            "--only" => only = it.next(),
            "--java" => java_only = true,
            other => {
                eprintln!("usage: kong-retry-lab [--short] [--only TEXT] [--java]   (--only: rows whose label contains TEXT; --java: the Java client's run alone; not {other:?})");
                std::process::exit(2);
            }
        }
    }
    let result = if java_only {
        java_run()
    } else {
        lab(short, only.as_deref())
    };
    if let Err(e) = result {
        eprintln!("kong-retry-lab: {e}");
        std::process::exit(1);
    }
}

fn lab(short: bool, only: Option<&str>) -> Result<(), LabError> {
    let started = Instant::now();
    let root = kong_retry_harness::repo_root();
    // Before anything is written under docs/: the revision the lab ran, not its output.
    let revision = kong_retry_lab::machine::revision(&root);
    let all: &[Row] = if short {
        &gateways::SHORT
    } else {
        &gateways::ALL
    };
    let matches = |label: &str| only.is_none_or(|t| label.contains(t));
    let rows: Vec<Row> = all.iter().copied().filter(|r| matches(r.label())).collect();
    // The gateway-node replacement: the full lab only.
    let node_rows: Vec<Row> = if short {
        Vec::new()
    } else {
        gateways::NODE_ROWS
            .iter()
            .copied()
            .filter(|&r| matches(&report::node_label(r, 2)))
            .collect()
    };
    if rows.is_empty() && node_rows.is_empty() {
        return Err(err(format!("--only {only:?} matches no row")));
    }
    // A partial run prints its table and writes nothing under docs/.
    let partial = short || only.is_some();
    let plan = if short {
        Plan::short(15.0)
    } else {
        Plan::full(3)
    };
    let node_plan = Plan::node_replacement(f64::from(nodes::DRAIN_TIME_S) * 1000.0);
    let settings = Settings {
        upstreams: 3,
        load: Load {
            rate: 200,
            duration: plan.duration,
            upstream_delay_ms: 20,
            // Above the filter's 10 s deadline: the gateway, not the client, gives up first.
            timeout: Duration::from_secs(15),
        },
        wrk_seconds: 3,
    };
    eprintln!("lab: building the filter module");
    let modules = Modules::build(rows.iter().any(|r| matches!(r, Row::KongPlain)))?;
    let program = UpstreamProgram::this_program()?;
    let dir = proxy_wasm_test_host::build::target_root().join("lab-runs");
    let total = rows.len() + node_rows.len();
    let mut results: Vec<RowResult> = Vec::new();
    let mut node_results: Vec<RowResult> = Vec::new();
    let jobs = rows
        .iter()
        .map(|&r| (r, false))
        .chain(node_rows.iter().map(|&r| (r, true)));
    for (i, (row, on_nodes)) in jobs.enumerate() {
        let (label, p) = if on_nodes {
            (report::node_label(row, 2), &node_plan)
        } else {
            (row.label().to_string(), &plan)
        };
        eprintln!(
            "lab: [{}/{total}] {label} ({:.0} s of load at {} req/s)",
            i + 1,
            p.duration.as_secs_f64(),
            settings.load.rate
        );
        let row_dir = dir.join(format!("row-{i}"));
        let setup = run::Setup {
            plan: p,
            settings: &settings,
            modules: &modules,
            program: &program,
        };
        let r = if on_nodes {
            run::node_row(row, &setup, &row_dir)?
        } else {
            run::row(row, &setup, &row_dir)?
        };
        print_row(&r, p);
        if on_nodes {
            node_results.push(r);
        } else {
            results.push(r);
        }
    }
    let upgrade = report::Variant::new(&plan, &results);
    let node_variant = report::Variant::new(&node_plan, &node_results);
    let wall = started.elapsed();
    let print_tables = || {
        if !results.is_empty() {
            println!("{}", upgrade.table);
        }
        if !node_results.is_empty() {
            println!("gateway-node replacement:\n{}", node_variant.table);
        }
    };
    if partial {
        print_tables();
        println!(
            "(partial lab: {:.0} s wall; the full lab: cargo run --release -p kong-retry-lab)",
            wall.as_secs_f64()
        );
        if short {
            println!();
            kong_retry_lab::java::demo(|| Ok(modules.filter.clone()), &program)?;
        }
        return Ok(());
    }
    let docs = root.join("docs");
    let png = docs.join("lab.png");
    plot::timeline(
        &[
            plot::Panel {
                title: "Rolling upgrade of 3 upstreams behind one gateway",
                results: &results,
                duration_ms: plan.duration.as_secs_f64() * 1000.0,
            },
            plot::Panel {
                title: "Gateway-node replacement: node A replaced, the client switches to node B on a connection failure",
                results: &node_results,
                duration_ms: node_plan.duration.as_secs_f64() * 1000.0,
            },
        ],
        "kong-retry lab: 200 req/s open loop (GET, keyed POST, unkeyed POST)",
        &png,
    )?;
    let md = report::document(&upgrade, Some(&node_variant), &settings, wall, &revision);
    let path = docs.join("lab.md");
    std::fs::write(&path, md).map_err(|e| err(format!("writing {}: {e}", path.display())))?;
    print_tables();
    println!(
        "wrote {} and {} in {:.0} s",
        path.display(),
        png.display(),
        wall.as_secs_f64()
    );
    Ok(())
}

/// `--java`: the Java client's exactly-once run alone.
fn java_run() -> Result<(), LabError> {
    let filter = || {
        eprintln!("lab: building the filter module");
        Ok(Modules::build(false)?.filter)
    };
    kong_retry_lab::java::demo(filter, &UpstreamProgram::this_program()?)
}

/// One row's numbers on stderr, as it finishes (KONG_RETRY_LAB_VERBOSE: every failure of a
/// GET or keyed POST, and every request the client resent to another node).
fn print_row(r: &RowResult, plan: &Plan) {
    let s = r.summary(plan);
    eprintln!(
        "lab:   {} of {} failed, {} unkeyed POSTs applied twice, {} retries; {}",
        s.failed.values().sum::<usize>(),
        s.sent,
        s.unkeyed_twice,
        r.retries,
        report::failure_reasons(r)
    );
    let counters: Vec<String> = r.counters.iter().map(|(n, v)| format!("{n} {v}")).collect();
    eprintln!("lab:   counters: {}", counters.join(", "));
    if std::env::var_os("KONG_RETRY_LAB_VERBOSE").is_some() {
        for o in r
            .outcomes
            .iter()
            .filter(|o| (o.failed() && o.kind != Kind::UnkeyedPost) || o.resent.is_some())
        {
            let n = r.deliveries.get(&request_id(o.seq)).copied().unwrap_or(0);
            eprintln!(
                "lab:   {} {} r{} due {:.0} ms after {:.0} ms on node {}{}, delivered {n}×: {} {}",
                if o.failed() { "failed" } else { "ok" },
                o.kind.name(),
                o.seq,
                o.scheduled_ms,
                o.latency_ms,
                o.node,
                o.resent
                    .map_or(String::new(), |w| format!(" (resent {})", w.name())),
                o.failure.as_deref().unwrap_or(""),
                o.detail.as_deref().unwrap_or("")
            );
        }
    }
}
