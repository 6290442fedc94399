//! `kong-retry-idem-chaos [--seed N] [--requests N] [--concurrency N] [--etcd-restarts N]
//! [--on-store-unavailable deny|allow]`: the seeded chaos run of gateway idempotency on real
//! processes (two Envoys with the filter, one etcd, the scriptable upstream; see
//! `kong_retry_harness::idempotency::chaos`). Prints the report as Markdown; exits 1 when
//! an operation was applied twice, a 2xx was never applied or carried another
//! operation's body.

use kong_retry_harness::idempotency::chaos::{run, ChaosOptions};
use kong_retry_harness::idempotency::{filter_config, Nodes, Store};
use kong_retry_harness::upstream::{StartOptions, Upstream};
use serde_json::json;

const UPSTREAM_SUBCOMMAND: &str = "serve-upstream";

fn main() {
    // The upstream is this program too, on a subcommand: `cargo run --bin` builds no other.
    if std::env::args().nth(1).as_deref() == Some(UPSTREAM_SUBCOMMAND) {
        std::process::exit(kong_retry_harness::upstream::cli::run(
            std::env::args().skip(2),
        ));
    }
    match main_inner() {
        Ok(clean) => std::process::exit(if clean { 0 } else { 1 }),
        Err(e) => {
            eprintln!("kong-retry-idem-chaos: {e}");
            std::process::exit(2);
        }
    }
}

fn main_inner() -> Result<bool, String> {
    let mut options = ChaosOptions::full(7);
    let mut on_unavailable = "deny".to_string();
    let mut ops_file: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name} {v:?}: not a number"))
        };
        match a.as_str() {
            "--seed" => options.seed = number("--seed", value("--seed")?)?,
            "--requests" => options.requests = number("--requests", value("--requests")?)? as usize,
            "--concurrency" => {
                options.concurrency = number("--concurrency", value("--concurrency")?)? as usize
            }
            "--etcd-restarts" => {
                options.etcd_restarts =
                    number("--etcd-restarts", value("--etcd-restarts")?)? as usize
            }
            "--on-store-unavailable" => {
                on_unavailable = value("--on-store-unavailable")?;
                if on_unavailable != "deny" && on_unavailable != "allow" {
                    return Err(format!(
                        "--on-store-unavailable {on_unavailable:?}: deny or allow"
                    ));
                }
            }
            "--ops" => ops_file = Some(value("--ops")?),
            "-h" | "--help" => {
                println!("usage: kong-retry-idem-chaos [--seed N] [--requests N] [--concurrency N] [--etcd-restarts N] [--on-store-unavailable deny|allow] [--ops FILE (one line per operation)]");
                return Ok(true);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let wasm = kong_retry_harness::wasm::filter().map_err(|e| e.to_string())?;
    let config = filter_config(
        Store::Etcd,
        &json!({
            "on_store_unavailable": on_unavailable,
            "lock_timeout": options.lock_timeout_ms(),
        }),
        &json!({}),
    );
    eprintln!(
        "starting etcd, the upstream and two Envoys; filter config {config}\nrunning {} keyed POSTs, {} at once, {} etcd restarts, seed {}",
        options.requests, options.concurrency, options.etcd_restarts, options.seed
    );
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let upstream = Upstream::start_with(
        &me,
        &StartOptions {
            leading_args: vec![UPSTREAM_SUBCOMMAND.into()],
            ..StartOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let mut nodes = Nodes::start_with(2, &wasm, &config, upstream).map_err(|e| e.to_string())?;
    let report = run(&mut nodes, &options).map_err(|e| e.to_string())?;
    println!(
        "Command: `cargo run --release -p kong-retry-harness --bin kong-retry-idem-chaos -- --seed {} --requests {} --concurrency {} --etcd-restarts {} --on-store-unavailable {on_unavailable}`\n",
        options.seed, options.requests, options.concurrency, options.etcd_restarts
    );
    println!("Filter config: `{config}`\n");
    print!("{}", report.markdown());
    for (op, effects) in report.doubles() {
        println!(
            "\napplied {effects}×: operation {} ({:?}), attempts {}, client saw: succeeded {}, replayed {}, 409s {}, last {:?}",
            op.index,
            op.fault,
            op.attempts,
            op.succeeded,
            op.replayed,
            op.conflicts,
            op.failure
        );
    }
    let mut drops: std::collections::BTreeMap<&str, usize> = Default::default();
    for d in report.ops.iter().flat_map(|o| o.drops.iter()) {
        *drops.entry(d.as_str()).or_default() += 1;
    }
    for (why, count) in drops {
        println!("\ndropped {count}×: {why}");
    }
    for line in report.wasm_errors.iter().take(20) {
        println!("\nwasm error: {line}");
    }
    if let Some(path) = ops_file {
        let lines: Vec<String> = report
            .ops
            .iter()
            .map(|o| format!("{o:?} effects={}", report.effects_of(&o.key)))
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").map_err(|e| format!("{path}: {e}"))?;
    }
    let clean = report.doubles().is_empty()
        && report.phantom_successes().is_empty()
        && report.ops.iter().all(|o| !o.wrong_body);
    Ok(clean)
}
