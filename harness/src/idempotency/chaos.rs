//! The seeded chaos run: keyed POSTs (one logical operation each, its own key and body)
//! through two gateway nodes sharing one etcd, while the upstream resets, hangs and
//! answers 503 as each operation's script says, the client loses responses and gives up
//! on slow ones, and etcd is restarted during the run. The client retries every
//! operation on the other node with the same key and bytes, as `docs/en` tells API
//! consumers to: after `Retry-After` on 409, with capped jittered backoff on 502/503/504,
//! at once on a lost or timed-out answer, up to a bound of attempts and time.
//!
//! What is counted comes from where it happens: the client's answers (status,
//! `idempotent-replayed`), and the upstream's own count of effects per key (a 2xx it
//! answered is an applied operation). A key the upstream applied twice is a double effect.

use super::rng::Rng;
use super::{is_problem, keyed_post, replayed, retry_after_secs, Nodes};
use crate::client::{self, ClientError};
use crate::HarnessError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How one chaos run goes.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub seed: u64,
    /// Logical operations (keyed POSTs), each with its own key.
    pub requests: usize,
    /// Client threads sending at once.
    pub concurrency: usize,
    /// etcd restarts, spread evenly over the run (by operations finished).
    pub etcd_restarts: usize,
    /// How long etcd stays down at each restart (then it restarts on the same ports and data).
    pub etcd_down: Duration,
    /// Attempts the client makes per operation, at most.
    pub client_attempts: u32,
    /// The client's overall deadline per operation.
    pub client_deadline: Duration,
    /// The client's timeout of one attempt (above the filter's `deadline`).
    pub client_timeout: Duration,
    /// The short timeout of the first attempt of a [`Fault::ClientGivesUp`] operation.
    pub impatient_timeout: Duration,
    /// How long the upstream takes on every call of a [`Fault::ClientGivesUp`] operation.
    pub slow_upstream: Duration,
}

impl ChaosOptions {
    /// The filter's `idempotency.lock_timeout` for this run, sized as the operator guide
    /// says: longer than the client keeps retrying one key. A key whose outcome is unknown
    /// (the client gave up on a slow upstream that went on to apply it) is then never run a
    /// second time: its client ends with "outcome unknown" instead. With a shorter lock, the
    /// client's late retry runs the operation again once the lock has expired.
    pub fn lock_timeout_ms(&self) -> u64 {
        (self.client_deadline + Duration::from_secs(10)).as_millis() as u64
    }

    /// 1,000 operations, 8 at once, 3 etcd restarts of 1 s.
    pub fn full(seed: u64) -> Self {
        ChaosOptions {
            seed,
            requests: 1000,
            concurrency: 8,
            etcd_restarts: 3,
            etcd_down: Duration::from_secs(1),
            client_attempts: 10,
            client_deadline: Duration::from_secs(30),
            client_timeout: Duration::from_secs(8),
            impatient_timeout: Duration::from_millis(250),
            slow_upstream: Duration::from_millis(700),
        }
    }
}

/// What one operation meets, drawn from its seeded stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The upstream answers 200 at once.
    Clean,
    /// The upstream answers 503 once, then 200 (the gateway's own retry covers it).
    Upstream503,
    /// The upstream answers 503 three times (the gateway gives up, releases the key), then
    /// 200: the client's retry runs for real.
    Upstream503Thrice,
    /// The upstream resets the connection mid-response once, then answers 200.
    UpstreamReset,
    /// The upstream hangs once (the gateway's per-try timeout), then answers 200.
    UpstreamHang,
    /// The upstream answers 503 on every call: the operation cannot succeed.
    UpstreamDown,
    /// The first 2xx is read whole and thrown away, as if lost on the way back to the
    /// client (the gateway finished it): the client's retry must get it replayed.
    LostResponse,
    /// The upstream takes `slow_upstream`, and the client's first attempt gives up after
    /// `impatient_timeout`, closing its connection while the upstream works.
    ClientGivesUp,
}

/// Percent weights of the faults, in draw order.
const WEIGHTS: [(Fault, u64); 8] = [
    (Fault::Clean, 45),
    (Fault::Upstream503, 10),
    (Fault::Upstream503Thrice, 6),
    (Fault::UpstreamReset, 8),
    (Fault::UpstreamHang, 5),
    (Fault::UpstreamDown, 4),
    (Fault::LostResponse, 12),
    (Fault::ClientGivesUp, 10),
];

impl Fault {
    pub fn draw(rng: &mut Rng) -> Fault {
        let total: u64 = WEIGHTS.iter().map(|(_, w)| w).sum();
        let mut x = rng.below(total);
        for (f, w) in WEIGHTS {
            if x < w {
                return f;
            }
            x -= w;
        }
        Fault::Clean
    }

    pub fn label(self) -> &'static str {
        match self {
            Fault::Clean => "clean",
            Fault::Upstream503 => "upstream 503 once",
            Fault::Upstream503Thrice => "upstream 503 ×3 (gateway gives up)",
            Fault::UpstreamReset => "upstream reset once",
            Fault::UpstreamHang => "upstream hang once (timeout)",
            Fault::UpstreamDown => "upstream 503 always",
            Fault::LostResponse => "response lost on the way back",
            Fault::ClientGivesUp => "client gives up on a slow upstream",
        }
    }

    /// The upstream script's query part.
    fn script(self, slow: Duration) -> String {
        match self {
            Fault::Clean | Fault::LostResponse => "plan=ok".into(),
            Fault::Upstream503 => "plan=503,ok".into(),
            Fault::Upstream503Thrice => "plan=503*3,ok".into(),
            Fault::UpstreamReset => "plan=reset,ok".into(),
            Fault::UpstreamHang => "plan=hang,ok".into(),
            Fault::UpstreamDown => "plan=503".into(),
            Fault::ClientGivesUp => format!("plan=ok&delay_ms={}", slow.as_millis()),
        }
    }
}

/// What the client saw for one operation.
#[derive(Debug, Clone, Default)]
pub struct OpRecord {
    pub index: usize,
    pub key: String,
    pub fault: Option<Fault>,
    pub attempts: u32,
    /// Ended with a 2xx.
    pub succeeded: bool,
    /// ... which carried `idempotent-replayed: true`.
    pub replayed: bool,
    /// ... whose body was not the upstream's answer to this operation.
    pub wrong_body: bool,
    /// Why it failed (the last answer), when it did.
    pub failure: Option<String>,
    pub conflicts: u32,
    pub gateway_503: u32,
    pub upstream_5xx: u32,
    pub timeouts: u32,
    pub dropped: u32,
    pub unprocessable: u32,
    pub lost: u32,
    /// Every dropped connection's error, as the client saw it.
    pub drops: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    pub options: ChaosOptions,
    pub ops: Vec<OpRecord>,
    /// Upstream effects per key (2xx answers), every key the upstream saw.
    pub effects: BTreeMap<String, u64>,
    /// Upstream calls per key.
    pub upstream_calls: BTreeMap<String, u64>,
    pub etcd_restarts: Vec<Duration>,
    pub wall: Duration,
    /// The nodes' idempotency counters, summed.
    pub metrics: Vec<(String, f64)>,
    /// wasm `[error]`/`[critical]` lines of the nodes' logs.
    pub wasm_errors: Vec<String>,
}

impl ChaosReport {
    pub fn effects_of(&self, key: &str) -> u64 {
        self.effects.get(key).copied().unwrap_or(0)
    }

    /// Keys the upstream applied more than once.
    pub fn doubles(&self) -> Vec<(&OpRecord, u64)> {
        self.ops
            .iter()
            .map(|o| (o, self.effects_of(&o.key)))
            .filter(|(_, e)| *e > 1)
            .collect()
    }

    /// Succeeded at the client, yet the upstream never applied it (must be none).
    pub fn phantom_successes(&self) -> Vec<&OpRecord> {
        self.ops
            .iter()
            .filter(|o| o.succeeded && self.effects_of(&o.key) == 0)
            .collect()
    }

    /// Failed at the client, yet applied (once) by the upstream: the client does not know.
    pub fn failed_but_applied(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| !o.succeeded && self.effects_of(&o.key) > 0)
            .count()
    }

    /// The report as Markdown: totals, then one row per fault.
    pub fn markdown(&self) -> String {
        let n = |f: &dyn Fn(&OpRecord) -> bool| self.ops.iter().filter(|o| f(o)).count();
        let sum =
            |f: &dyn Fn(&OpRecord) -> u32| self.ops.iter().map(|o| u64::from(f(o))).sum::<u64>();
        let effects: u64 = self.ops.iter().map(|o| self.effects_of(&o.key)).sum();
        let calls: u64 = self
            .ops
            .iter()
            .map(|o| self.upstream_calls.get(&o.key).copied().unwrap_or(0))
            .sum();
        let mut t = String::new();
        t.push_str("| | count |\n|---|---:|\n");
        let mut row = |what: &str, v: String| t.push_str(&format!("| {what} | {v} |\n"));
        row(
            "keyed POSTs (one key and body each)",
            self.ops.len().to_string(),
        );
        row(
            "attempts sent by the client",
            sum(&|o| o.attempts).to_string(),
        );
        row("ended 2xx at the client", n(&|o| o.succeeded).to_string());
        row(
            "… of which replayed (`idempotent-replayed: true`)",
            n(&|o| o.succeeded && o.replayed).to_string(),
        );
        row(
            "ended failed after all client retries",
            n(&|o| !o.succeeded).to_string(),
        );
        row("got at least one 409", n(&|o| o.conflicts > 0).to_string());
        row("409 answers in all", sum(&|o| o.conflicts).to_string());
        row(
            "gateway 503 problem+json answers (store unavailable)",
            sum(&|o| o.gateway_503).to_string(),
        );
        row(
            "upstream 5xx answers reaching the client",
            sum(&|o| o.upstream_5xx).to_string(),
        );
        row(
            "client timeouts / dropped connections",
            format!("{} / {}", sum(&|o| o.timeouts), sum(&|o| o.dropped)),
        );
        row(
            "responses lost on the way back (thrown away)",
            sum(&|o| o.lost).to_string(),
        );
        row(
            "422 answers (same key and bytes: must be 0)",
            sum(&|o| o.unprocessable).to_string(),
        );
        row(
            "upstream calls / effects (2xx answers)",
            format!("{calls} / {effects}"),
        );
        row(
            "**keys applied twice or more**",
            format!("**{}**", self.doubles().len()),
        );
        row(
            "2xx at the client, never applied (must be 0)",
            self.phantom_successes().len().to_string(),
        );
        row(
            "2xx body not this operation's (must be 0)",
            n(&|o| o.wrong_body).to_string(),
        );
        row(
            "failed at the client, applied once upstream",
            self.failed_but_applied().to_string(),
        );
        let restarts: Vec<String> = self
            .etcd_restarts
            .iter()
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .collect();
        row(
            "etcd restarts (time down)",
            format!("{} ({})", self.etcd_restarts.len(), restarts.join(", ")),
        );
        row(
            "wasm error lines in the Envoy logs",
            self.wasm_errors.len().to_string(),
        );
        row("wall time", format!("{:.0} s", self.wall.as_secs_f64()));
        t.push('\n');
        t.push_str("| fault (per operation) | ops | 2xx | replayed | failed | got 409 | gateway 503 | timeouts / drops | applied twice |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let mut faults: Vec<Fault> = self.ops.iter().filter_map(|o| o.fault).collect();
        faults.sort();
        faults.dedup();
        for f in faults {
            let of: Vec<&OpRecord> = self.ops.iter().filter(|o| o.fault == Some(f)).collect();
            let c = |p: &dyn Fn(&OpRecord) -> bool| of.iter().filter(|o| p(o)).count();
            let total = |p: &dyn Fn(&OpRecord) -> u32| of.iter().map(|o| p(o)).sum::<u32>();
            t.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |\n",
                f.label(),
                of.len(),
                c(&|o| o.succeeded),
                c(&|o| o.succeeded && o.replayed),
                c(&|o| !o.succeeded),
                c(&|o| o.conflicts > 0),
                total(&|o| o.gateway_503),
                total(&|o| o.timeouts),
                total(&|o| o.dropped),
                c(&|o| self.effects_of(&o.key) > 1),
            ));
        }
        if !self.metrics.is_empty() {
            t.push_str(
                "\nThe nodes' idempotency counters, summed:\n\n| metric | value |\n|---|---:|\n",
            );
            for (name, v) in &self.metrics {
                t.push_str(&format!("| `{name}` | {v} |\n"));
            }
        }
        t
    }
}

/// Runs the chaos on `nodes` (started with the config the caller chose).
pub fn run(nodes: &mut Nodes, options: &ChaosOptions) -> Result<ChaosReport, HarnessError> {
    let started = Instant::now();
    let Nodes {
        etcd,
        upstream,
        nodes: envoys,
    } = &mut *nodes;
    let addrs: Vec<std::net::SocketAddr> = envoys.iter().map(|e| e.addr()).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    let records: Mutex<Vec<OpRecord>> = Mutex::new(Vec::with_capacity(options.requests));
    let restarts: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
    let restart_error: Mutex<Option<HarnessError>> = Mutex::new(None);
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 1..=options.etcd_restarts {
                let at = k * options.requests / (options.etcd_restarts + 1);
                while done.load(Ordering::SeqCst) < at && !finished.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if finished.load(Ordering::SeqCst) {
                    return;
                }
                let down = Instant::now();
                etcd.stop();
                std::thread::sleep(options.etcd_down);
                if let Err(e) = etcd.restart() {
                    *restart_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return;
                }
                restarts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(down.elapsed());
            }
        });
        let workers: Vec<_> = (0..options.concurrency.max(1))
            .map(|_| {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= options.requests {
                        return;
                    }
                    let record = operation(&addrs, options, i);
                    records
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(record);
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        finished.store(true, Ordering::SeqCst);
    });
    if let Some(e) = restart_error
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        return Err(HarnessError::new(format!(
            "etcd restart during the chaos run: {e}"
        )));
    }
    let wall = started.elapsed();
    let summary = upstream.summary()?;
    let mut ops = records.into_inner().unwrap_or_else(|p| p.into_inner());
    ops.sort_by_key(|o| o.index);
    let mut report = ChaosReport {
        options: options.clone(),
        ops,
        effects: summary
            .keys
            .iter()
            .map(|(k, _, e)| (k.clone(), *e))
            .collect(),
        upstream_calls: summary
            .keys
            .iter()
            .map(|(k, c, _)| (k.clone(), *c))
            .collect(),
        etcd_restarts: restarts.into_inner().unwrap_or_else(|p| p.into_inner()),
        wall,
        metrics: Vec::new(),
        wasm_errors: Vec::new(),
    };
    report.metrics = nodes.idempotency_metrics()?;
    report.wasm_errors = nodes.wasm_errors();
    Ok(report)
}

/// One operation, retried by the client until it ends.
fn operation(addrs: &[std::net::SocketAddr], o: &ChaosOptions, index: usize) -> OpRecord {
    let mut rng = Rng::for_item(o.seed, index as u64);
    let fault = Fault::draw(&mut rng);
    let key = format!("chaos-{}-{index}", o.seed);
    let path = format!("/orders?id={key}&{}", fault.script(o.slow_upstream));
    let body = format!(
        "{{\"operation\":{index},\"amount_cents\":{}}}",
        rng.below(100_000)
    );
    let mut rec = OpRecord {
        index,
        key: key.clone(),
        fault: Some(fault),
        ..OpRecord::default()
    };
    let mut node = rng.below(addrs.len() as u64) as usize;
    let begun = Instant::now();
    let expected_body = format!("ok {key} call ");
    while rec.attempts < o.client_attempts && begun.elapsed() < o.client_deadline {
        rec.attempts += 1;
        let first = rec.attempts == 1;
        let timeout = if first && fault == Fault::ClientGivesUp {
            o.impatient_timeout
        } else {
            o.client_timeout
        };
        let req = keyed_post(&path, &key, body.as_bytes()).timeout(timeout);
        let answer = client::send(addrs[node % addrs.len()], &req);
        node += 1;
        let wait = match answer {
            Ok(r) if (200..300).contains(&r.status) => {
                if first && fault == Fault::LostResponse {
                    rec.lost += 1;
                    continue;
                }
                rec.succeeded = true;
                rec.replayed = replayed(&r);
                rec.wrong_body = !r.text().starts_with(&expected_body);
                rec.failure = None;
                break;
            }
            Ok(r) if r.status == 409 => {
                rec.conflicts += 1;
                rec.failure = Some("409".into());
                Duration::from_secs(retry_after_secs(&r).unwrap_or(1))
            }
            Ok(r) if r.status == 422 => {
                rec.unprocessable += 1;
                rec.failure = Some(format!("422: {}", r.text()));
                break;
            }
            Ok(r) if matches!(r.status, 429 | 502 | 503 | 504) => {
                if is_problem(&r) {
                    rec.gateway_503 += 1;
                } else {
                    rec.upstream_5xx += 1;
                }
                rec.failure = Some(format!("{} {}", r.status, r.text().trim()));
                backoff(&mut rng, rec.attempts)
            }
            Ok(r) => {
                rec.failure = Some(format!("{} {}", r.status, r.text().trim()));
                break;
            }
            Err(ClientError::Timeout) => {
                rec.timeouts += 1;
                rec.failure = Some("client timeout".into());
                Duration::ZERO
            }
            Err(e) => {
                rec.dropped += 1;
                rec.drops.push(e.to_string());
                rec.failure = Some(e.to_string());
                backoff(&mut rng, rec.attempts)
            }
        };
        let left = o.client_deadline.saturating_sub(begun.elapsed());
        std::thread::sleep(wait.min(left));
    }
    rec
}

/// Full jitter over 100 ms · 2^(attempt-1), capped at 2 s.
fn backoff(rng: &mut Rng, attempt: u32) -> Duration {
    let cap = (100u64 << attempt.saturating_sub(1).min(5)).min(2000);
    Duration::from_millis(rng.below(cap + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_follow_their_weights_and_the_seed() {
        let draws = |seed| -> Vec<Fault> {
            (0..1000)
                .map(|i| Fault::draw(&mut Rng::for_item(seed, i)))
                .collect()
        };
        assert_eq!(draws(7), draws(7));
        let d = draws(7);
        let clean = d.iter().filter(|f| **f == Fault::Clean).count();
        assert!((350..550).contains(&clean), "{clean}");
        assert!(d.contains(&Fault::ClientGivesUp) && d.contains(&Fault::UpstreamDown));
        assert_eq!(WEIGHTS.iter().map(|(_, w)| w).sum::<u64>(), 100);
    }

    #[test]
    fn backoff_is_capped() {
        let mut r = Rng::new(3);
        assert!((1..20).all(|a| backoff(&mut r, a) <= Duration::from_millis(2000)));
    }
}
