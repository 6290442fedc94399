//! The Java example's client (`examples/java`, `IdempotentClient`) making payments through
//! one real Envoy with kong-retry (response mode, the shipped retry schedule, `idempotency:
//! {enabled: true}`: the node's shared store) in front of our upstream, which does not
//! honour keys: it counts every 2xx it gives as an effect of its key. Faults on both sides
//! of the gateway: the upstream answers some calls 503 (the gateway retries them), and the
//! link between client and gateway loses some answers after the gateway stored them (the
//! client retries with the same key, the gateway replays). What the upstream applied per
//! key says whether each payment happened exactly once.

use crate::gateways::{envoy_retries, filter_config};
use crate::lost_answers::LossyLink;
use crate::pool::UpstreamProgram;
use crate::{err, LabError};
use kong_retry_harness::envoy::{Bootstrap, Envoy, WasmFilter};
use kong_retry_harness::java::{self, parse_payment, Payment};
use kong_retry_harness::process::{run_dir, Process};
use kong_retry_harness::upstream::{StartOptions, Upstream};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many payments, the upstream's script for them, and which client requests lose
/// their answer.
#[derive(Debug, Clone)]
pub struct JavaRun {
    pub payments: usize,
    /// The upstream's script (`harness/src/upstream/script.rs`): 20 ms of work per call,
    /// some calls answered 503.
    pub path: String,
    /// Client requests (1-based, over the whole run) whose answer the link loses.
    pub lose: Vec<usize>,
    /// The gateway's idempotency on (off: the control, where a lost answer is paid twice).
    pub gateway_idempotency: bool,
}

impl JavaRun {
    /// The demo's run: 20 payments, 3 upstream 503s, 2 lost answers.
    pub fn demo() -> JavaRun {
        JavaRun {
            payments: 20,
            path: "payments?id=java&delay_ms=20&plan=ok*3,503,ok*6,503,ok*5,503,ok".into(),
            lose: vec![6, 15],
            gateway_idempotency: true,
        }
    }
}

/// What the run measured.
#[derive(Debug, Clone)]
pub struct JavaResult {
    pub payments: Vec<Payment>,
    /// The client's last line, `operations=N ok=N failed=0 replayed=R attempts=A`.
    pub summary: String,
    /// Per key, without quotes: (upstream calls, effects).
    pub per_key: BTreeMap<String, (u64, u64)>,
    pub upstream_503s: usize,
    pub gateway_retries: u64,
    pub lost_answers: usize,
    pub client_requests: usize,
    pub filter_errors: Vec<String>,
    pub wall: Duration,
    pub client_log: PathBuf,
}

/// The gateway's filter config: the lab's response mode, with (or without) the gateway's
/// idempotency on the node-local shared store.
pub fn gateway_config(idempotency: bool) -> String {
    let mut cfg = filter_config("response", "backend");
    cfg["idempotency"] = serde_json::json!({ "enabled": idempotency });
    cfg.to_string()
}

/// Runs `run`: the upstream from `program`, one Envoy loading `filter`, the link, the client.
pub fn run(
    run: &JavaRun,
    filter: &Path,
    program: &UpstreamProgram,
) -> Result<JavaResult, LabError> {
    let classes = java::compile_example()?;
    let started = Instant::now();
    let options = StartOptions {
        leading_args: program.leading_args.clone(),
        ..StartOptions::default()
    };
    let upstream = Upstream::start_with(&program.bin, &options)?;
    let mut b = Bootstrap::new(&[upstream.addr()]);
    b.log_level = "warning".into();
    let envoy = Envoy::start(&b.filter(WasmFilter::kong_retry(
        filter,
        &gateway_config(run.gateway_idempotency),
    )))?;
    let link = LossyLink::start(envoy.addr(), &run.lose)?;
    let log = run_dir("lab-java-client")?.join("client.log");
    let urls = [format!("http://{}", link.addr())];
    let cmd = java::client_command(&classes, &urls, run.payments, &run.path);
    let mut client = Process::spawn("java", cmd, &log)?;
    // The client's own deadline is 60 s per payment; the run is far shorter when it works.
    if !client.wait_exit(Duration::from_secs(120)) {
        return Err(client
            .failure("the Java client did not finish within 120 s")
            .into());
    }
    let wall = started.elapsed();
    let output = client.output();
    let payments: Vec<Payment> = output.lines().filter_map(parse_payment).collect();
    let summary = output
        .lines()
        .rfind(|l| l.starts_with("operations="))
        .unwrap_or("")
        .to_string();
    let totals = upstream.summary()?;
    let per_key = totals
        .keys
        .iter()
        .map(|(k, c, e)| (k.trim_matches('"').to_string(), (*c, *e)))
        .collect();
    let upstream_503s = upstream
        .calls("java")?
        .iter()
        .filter(|c| c.step == "503")
        .count();
    Ok(JavaResult {
        payments,
        summary,
        per_key,
        upstream_503s,
        gateway_retries: envoy_retries(&envoy),
        lost_answers: link.lost(),
        client_requests: link.requests(),
        filter_errors: envoy.wasm_errors(),
        wall,
        client_log: log,
    })
}

impl JavaResult {
    /// The upstream's effects of each payment the client made, in order (0 when the upstream
    /// never applied its key).
    pub fn effects(&self) -> Vec<u64> {
        self.payments
            .iter()
            .map(|p| self.per_key.get(&p.key).map_or(0, |&(_, e)| e))
            .collect()
    }

    /// Every payment succeeded at the client and was applied exactly once upstream, and
    /// the upstream applied no key the client did not make.
    pub fn exactly_once(&self, expected: usize) -> bool {
        self.payments.len() == expected
            && self.payments.iter().all(|p| p.status == "200")
            && self.effects().iter().all(|&e| e == 1)
            && self.per_key.values().map(|&(_, e)| e).sum::<u64>() == expected as u64
    }

    /// The lines the demo prints.
    pub fn lines(&self, run: &JavaRun) -> Vec<String> {
        let effects = self.effects();
        let ok = self.payments.iter().filter(|p| p.status == "200").count();
        let twice = effects.iter().filter(|&&e| e > 1).count();
        let never = effects.iter().filter(|&&e| e == 0).count();
        let applied = if self.exactly_once(run.payments) {
            "each applied exactly once by the upstream".to_string()
        } else {
            format!(
                "NOT exactly once: {twice} applied more than once, {never} never applied, {} upstream effects in all",
                self.per_key.values().map(|&(_, e)| e).sum::<u64>()
            )
        };
        let replayed = self.payments.iter().filter(|p| p.replayed).count();
        let store = if run.gateway_idempotency {
            "idempotency: shared store"
        } else {
            "no gateway idempotency"
        };
        let mut lines = vec![
            format!("Java client (examples/java) -> Envoy 1.40 + kong-retry response, {store} -> an upstream that ignores keys:"),
            format!("  {} payments, {ok} succeeded, {applied}", run.payments),
            format!(
                "  {} upstream 503s retried by the gateway; {} answers lost on the way back, {replayed} replayed by the gateway",
                self.upstream_503s, self.lost_answers
            ),
            format!(
                "  {} client attempts ({}), {:.1} s",
                self.client_requests,
                self.summary,
                self.wall.as_secs_f64()
            ),
        ];
        if !self.filter_errors.is_empty() {
            lines.push(format!(
                "  the gateway logged filter errors: {}",
                self.filter_errors.join(" | ")
            ));
        }
        lines
    }
}

/// Why the run cannot start here (no JDK), or None.
pub fn unavailable() -> Option<String> {
    java::jdk_missing()
}

/// The short lab's Java part: the demo run, its lines on stdout (one line saying why when
/// there is no JDK; `filter` is built only when the run can happen); an error when a payment
/// was not applied exactly once or the gateway logged filter errors.
pub fn demo(
    filter: impl FnOnce() -> Result<PathBuf, LabError>,
    program: &UpstreamProgram,
) -> Result<(), LabError> {
    if let Some(why) = unavailable() {
        println!("Java client: skipped, {why}");
        return Ok(());
    }
    let filter = filter()?;
    eprintln!("lab: the Java client's payments through Envoy + kong-retry");
    let r = JavaRun::demo();
    let result = run(&r, &filter, program)?;
    for line in result.lines(&r) {
        println!("{line}");
    }
    if !result.exactly_once(r.payments) || !result.filter_errors.is_empty() {
        return Err(err(format!(
            "the Java client's payments were not exactly once (client log {})",
            result.client_log.display()
        )));
    }
    Ok(())
}
