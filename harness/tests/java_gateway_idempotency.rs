//! The Java example's client (`examples/java`, `IdempotentClient`) against two real Envoys
//! with the filter's gateway idempotency on one real etcd, with our upstream behind them —
//! an upstream that does NOT honour idempotency keys: the gateway must.
//!
//! The client makes 50 payments, one after the other, through two gateway nodes and moves
//! to the other node when one fails. Three times during the run the node serving the
//! client is killed (SIGKILL, by pid), each time while a payment is at a moment where the
//! client cannot know its outcome:
//!
//! * **upstream still working** (once, on the 10th upstream call, which the upstream holds
//!   without applying it): the node dies with the request in the upstream's hands. Its
//!   key stays locked in etcd until `lock_timeout`; the other node answers the client's
//!   retry with 409 and `Retry-After`, and once the lock is over it runs the payment.
//! * **answer in flight** (twice, after 25 and after 40 payments): the upstream has applied
//!   the payment and the node has sent its answer, which is still on its way to the client.
//!   The other node must answer the retry from etcd with the stored result.
//!
//! In front of each node sits a TCP relay (the network path, or the load balancer, between
//! client and gateway pod). For the second kind it kills its node as the first bytes of
//! the next answer come through and drops them; the client sees its connection break. The
//! killed node is restarted (a new Envoy behind the same relay) before the next kill.
//!
//! Asserted: every payment ended with one complete result at the client (the upstream's
//! answer, byte for byte, replays included); the upstream applied each key once; each
//! answer-in-flight kill's payment was replayed, the upstream-working kill's payment saw 409
//! and ran once; no Envoy logged a wasm error.
//!
//! Why the kills are placed and not random: a node killed after the upstream applied a
//! payment but before the node stored the result leaves an unknown outcome (the operator
//! guide, "What becomes of the key when the request is over"): duplicates get 409 until
//! `lock_timeout`, and then the payment runs again — the documented residual risk, which a
//! test of "exactly once" must not hit by chance.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kong_retry_harness::envoy::{Bootstrap, Envoy, WasmFilter};
use kong_retry_harness::etcd::Etcd;
use kong_retry_harness::http1::sha256_hex;
use kong_retry_harness::java::{self, parse_payment, Payment};
use kong_retry_harness::process::{run_dir, Process};
use kong_retry_harness::upstream::Upstream;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const PAYMENTS: usize = 50;
/// The upstream call that hangs (is never applied) until its node is killed.
const HANG_CALL: u64 = 10;
/// After how many completed payments each answer-in-flight kill is armed.
const ANSWER_KILLS_AFTER: [usize; 2] = [25, 40];
/// The whole run, Envoy restarts included, must end within this.
const RUN_LIMIT: Duration = Duration::from_secs(240);
/// The upstream's script: its own call counter (`id`), 50 ms of work per payment, and
/// call HANG_CALL held unanswered (and so not applied) until the peer goes away.
const PAYMENT_PATH: &str = "payments?id=java&delay_ms=50&plan=ok*9,hang,ok";

/// What a relay reports to the test.
enum Event {
    /// Relay `n` killed its node and dropped the answer it was carrying.
    Tripped(usize),
}

/// What one relay shares with its threads.
struct RelayState {
    node: usize,
    target: Mutex<SocketAddr>,
    /// The node's pid, killed when the relay trips.
    pid: AtomicU32,
    /// Shared by all relays: the next answer through any of them trips it.
    armed: Arc<AtomicBool>,
    /// A request went to the node and no answer came back yet.
    awaiting: AtomicBool,
    events: Mutex<Sender<Event>>,
    stop: AtomicBool,
}

/// A TCP relay on 127.0.0.1 in front of one gateway node.
struct Relay {
    addr: SocketAddr,
    state: Arc<RelayState>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(node: usize, envoy: &Envoy, armed: Arc<AtomicBool>, events: Sender<Event>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(RelayState {
            node,
            target: Mutex::new(envoy.addr()),
            pid: AtomicU32::new(envoy.pid()),
            armed,
            awaiting: AtomicBool::new(false),
            events: Mutex::new(events),
            stop: AtomicBool::new(false),
        });
        let addr = listener.local_addr().unwrap();
        let s = state.clone();
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || relay_connection(client, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Relay {
            addr,
            state,
            accept: Some(accept),
        }
    }

    /// The node behind this relay is now `envoy`.
    fn point_at(&self, envoy: &Envoy) {
        *self.state.target.lock().unwrap() = envoy.addr();
        self.state.pid.store(envoy.pid(), Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn relay_connection(client: TcpStream, s: &Arc<RelayState>) {
    let _ = client.set_nonblocking(false);
    let target = *s.target.lock().unwrap();
    let Ok(node) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        // The node is down: the client sees its connection closed, as behind a balancer.
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    for sock in [&client, &node] {
        let _ = sock.set_nodelay(true);
        let _ = sock.set_read_timeout(Some(Duration::from_secs(60)));
    }
    let (Ok(mut c_read), Ok(mut n_write)) = (client.try_clone(), node.try_clone()) else {
        return;
    };
    let state = s.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if n_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    state.awaiting.store(true, Ordering::SeqCst);
                }
            }
        }
        let _ = n_write.shutdown(Shutdown::Write);
    });
    let (mut n_read, mut c_write) = (node, client);
    let mut buf = [0u8; 16384];
    // The answer's bytes held back while the relay is armed, until they hold the first body
    // byte: the filter releases a stored result's body only after the store answered (the
    // head may go before it: Envoy cannot hold a response head and still read its body), so
    // the first body byte is the moment from which a duplicate can be replayed.
    let mut held: Vec<u8> = Vec::new();
    loop {
        match n_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                s.awaiting.store(false, Ordering::SeqCst);
                if s.armed.load(Ordering::SeqCst) {
                    held.extend_from_slice(&buf[..n]);
                    let body_began = held
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .is_some_and(|p| held.len() > p + 4);
                    if !body_began {
                        continue;
                    }
                    if s.armed.swap(false, Ordering::SeqCst) {
                        // The node answered: kill it with the answer in flight, and lose it.
                        kill(s.pid.load(Ordering::SeqCst));
                        let _ = c_write.shutdown(Shutdown::Both);
                        let _ = n_read.shutdown(Shutdown::Both);
                        let _ = s.events.lock().unwrap().send(Event::Tripped(s.node));
                        return;
                    }
                } else if !held.is_empty() {
                    held.extend_from_slice(&buf[..n]);
                }
                let out = if held.is_empty() {
                    &buf[..n]
                } else {
                    // Another relay tripped meanwhile: this answer goes on whole.
                    held.as_slice()
                };
                if c_write.write_all(out).is_err() {
                    break;
                }
                held.clear();
            }
        }
    }
    s.awaiting.store(false, Ordering::SeqCst);
    let _ = c_write.shutdown(Shutdown::Write);
}

fn kill(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on the pid of an Envoy this test started and has not reaped (its
        // guard reaps it when the test drops it after this kill).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// The filter built from this checkout, once per test process.
fn filter_wasm() -> PathBuf {
    static WASM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match WASM.get_or_init(|| kong_retry_harness::wasm::filter().map_err(|e| e.to_string())) {
        Ok(p) => p.clone(),
        Err(e) => panic!("cannot build the filter: {e}"),
    }
}

/// The Java example's main classes, compiled into a run directory of their own.
fn java_classes() -> PathBuf {
    java::compile_example().unwrap_or_else(|e| panic!("{e}"))
}

/// Two gateway nodes' config: dispatch or response mode, idempotency on etcd.
fn filter_config(mode: &str) -> String {
    json!({
        "mode": mode,
        "upstream": "backend",
        "retries": 2,
        "retry_on": "502,503,504,connect-failure,timeout,reset",
        "per_try_timeout": 3000,
        "deadline": 6500,
        "backoff": { "strategy": "fixed", "interval": 10 },
        "idempotency": {
            "enabled": true,
            "store": "etcd",
            "etcd": { "endpoint": "etcd", "timeout": 1000 },
            // Short, so that the held payment's lock ends within the client's patience:
            // its `Retry-After` must stay within the client's 10 s cap.
            "lock_timeout": 7000,
        },
    })
    .to_string()
}

/// One gateway node.
fn start_node(upstream: SocketAddr, etcd: SocketAddr, mode: &str) -> Envoy {
    let b = Bootstrap::new(&[upstream])
        .cluster("etcd", etcd)
        .filter(WasmFilter::kong_retry(&filter_wasm(), &filter_config(mode)));
    Envoy::start(&b).unwrap_or_else(|e| panic!("{e}"))
}

/// Reads the lines a growing file got since `seen` (whole lines only).
fn new_lines(path: &Path, seen: &mut usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let Some(end) = text.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    if end < *seen {
        return Vec::new();
    }
    let lines = String::from_utf8_lossy(&text[*seen..=end])
        .lines()
        .map(str::to_string)
        .collect();
    *seen = end + 1;
    lines
}

/// What the run measured.
#[derive(Debug, Default)]
struct Run {
    payments: Vec<Payment>,
    /// Kills whose payment the upstream still held (not applied).
    working_kills: usize,
    /// Kills with an applied payment's answer in flight.
    answer_kills: usize,
    /// Client attempts answered 409, and the payments they belonged to.
    conflicts_409: usize,
    payments_with_409: HashSet<String>,
    attempt_lines: usize,
    summary: String,
    killed_logs: Vec<(PathBuf, Vec<String>)>,
}

/// The two gateway nodes and their relays.
struct Gateway {
    nodes: [Option<Envoy>; 2],
    relays: Vec<Relay>,
    upstream: SocketAddr,
    etcd: SocketAddr,
    mode: String,
}

impl Gateway {
    /// Kills node `n` (SIGKILL) unless its relay did already, keeps its wasm errors, and
    /// starts a new node behind the same relay.
    fn kill_and_restart(&mut self, n: usize, run: &mut Run) {
        let dead = self.nodes[n].take().unwrap();
        kill(dead.pid());
        assert!(
            wait_gone(dead.pid(), Duration::from_secs(5)),
            "node {n} (pid {}) still runs after SIGKILL",
            dead.pid()
        );
        run.killed_logs
            .push((dead.log_path().to_path_buf(), dead.wasm_errors()));
        drop(dead);
        let fresh = start_node(self.upstream, self.etcd, &self.mode);
        self.relays[n].point_at(&fresh);
        self.nodes[n] = Some(fresh);
    }

    fn all_up(&self) -> bool {
        self.nodes.iter().all(Option::is_some)
    }
}

fn two_nodes_killed_three_times(mode: &str) {
    // Built before the clock starts: the wall time is the run's.
    let classes = java_classes();
    filter_wasm();
    let started = Instant::now();
    let etcd = Etcd::start().unwrap_or_else(|e| panic!("{e}"));
    let upstream = Upstream::start().unwrap_or_else(|e| panic!("{e}"));
    let (u, e, m) = (upstream.addr(), etcd.addr(), mode.to_string());
    let second = std::thread::spawn(move || start_node(u, e, &m));
    let first = start_node(upstream.addr(), etcd.addr(), mode);
    let nodes = [Some(first), Some(second.join().unwrap())];
    let (tx, rx): (Sender<Event>, Receiver<Event>) = channel();
    let armed = Arc::new(AtomicBool::new(false));
    let relays: Vec<Relay> = (0..2)
        .map(|i| Relay::start(i, nodes[i].as_ref().unwrap(), armed.clone(), tx.clone()))
        .collect();
    drop(tx);
    let mut gateway = Gateway {
        nodes,
        relays,
        upstream: upstream.addr(),
        etcd: etcd.addr(),
        mode: mode.to_string(),
    };

    let log = run_dir("java-client").unwrap().join("client.log");
    let urls: Vec<String> = gateway
        .relays
        .iter()
        .map(|r| format!("http://{}", r.addr))
        .collect();
    let mut cmd = java::client_command(&classes, &urls, PAYMENTS, PAYMENT_PATH);
    // Longer than the gateway's deadline (6.5 s), as the example's README says.
    cmd.args(["--per-attempt-ms", "8000", "--deadline-ms", "40000"]);
    // Owned here: dropped (stopped) with the test, also when an assertion fails.
    let mut java = Process::spawn("java", cmd, &log).unwrap_or_else(|e| panic!("{e}"));

    let mut run = Run::default();
    let mut armed_for = None;
    let mut seen = 0usize;
    let mut last_poll = Instant::now();
    let until = started + RUN_LIMIT;
    loop {
        let exited = java.exited().is_some();
        for line in new_lines(&log, &mut seen) {
            if let Some(p) = parse_payment(&line) {
                run.payments.push(p);
            } else if let Some(rest) = line.strip_prefix("op=") {
                run.attempt_lines += 1;
                if line.contains(" outcome=409 ") {
                    run.conflicts_409 += 1;
                    let op = rest.split_whitespace().next().unwrap_or("");
                    run.payments_with_409.insert(op.to_string());
                }
            } else if line.starts_with("operations=") {
                run.summary = line;
            }
        }
        if exited {
            break;
        }
        // The upstream-working kill: the node that has the held call in hand dies.
        if run.working_kills == 0 && last_poll.elapsed() > Duration::from_millis(20) {
            last_poll = Instant::now();
            let held = upstream.calls("java").unwrap_or_default();
            if held.iter().any(|c| c.n == HANG_CALL) {
                let waiting: Vec<usize> = (0..2)
                    .filter(|&n| gateway.relays[n].state.awaiting.load(Ordering::SeqCst))
                    .collect();
                assert_eq!(waiting.len(), 1, "{mode}: nodes with a request in hand");
                run.working_kills += 1;
                gateway.kill_and_restart(waiting[0], &mut run);
            }
        }
        // An answer-in-flight kill, once its payment count is reached and both nodes are
        // up; each is armed once.
        let k = run.answer_kills;
        if k < ANSWER_KILLS_AFTER.len()
            && run.payments.len() >= ANSWER_KILLS_AFTER[k]
            && armed_for != Some(k)
            && gateway.all_up()
        {
            armed_for = Some(k);
            armed.store(true, Ordering::SeqCst);
        }
        if let Ok(Event::Tripped(n)) = rx.recv_timeout(Duration::from_millis(5)) {
            run.answer_kills += 1;
            gateway.kill_and_restart(n, &mut run);
        }
        assert!(
            Instant::now() < until,
            "{mode}: the run did not end within {RUN_LIMIT:?}; client log {}",
            log.display()
        );
    }
    let wall = started.elapsed();
    check(mode, &run, &upstream, &log, wall);
    for n in gateway.nodes.iter().flatten() {
        n.check_wasm_clean()
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
}

/// The run's assertions (see the module comment).
fn check(mode: &str, run: &Run, upstream: &Upstream, log: &Path, wall: Duration) {
    let context = format!("{mode}: client log {}", log.display());
    // The upstream's key is the header's value; the client prints it without the quotes.
    let summary = upstream.summary().unwrap();
    let per_key: BTreeMap<String, (u64, u64)> = summary
        .keys
        .iter()
        .map(|(k, c, e)| (k.trim_matches('"').to_string(), (*c, *e)))
        .collect();
    let replayed = run.payments.iter().filter(|p| p.replayed).count();
    // The measured numbers first, so that a failed run shows them too.
    println!(
        "{mode}: payments={} kills={} (upstream working {}, answer in flight {}) upstream_calls={} upstream_effects={} replayed={} client_attempts={} 409s={} wall={:.1}s (client: {})",
        run.payments.len(),
        run.working_kills + run.answer_kills,
        run.working_kills,
        run.answer_kills,
        summary.calls,
        per_key.values().map(|(_, e)| e).sum::<u64>(),
        replayed,
        run.attempt_lines,
        run.conflicts_409,
        wall.as_secs_f64(),
        run.summary,
    );

    // The client: every payment a 200, the summary line says so.
    assert_eq!(run.working_kills, 1, "{context}: upstream-working kills");
    assert_eq!(
        run.answer_kills,
        ANSWER_KILLS_AFTER.len(),
        "{context}: answer-in-flight kills"
    );
    let client_log = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(run.payments.len(), PAYMENTS, "{context}:\n{client_log}");
    assert!(
        run.summary
            .starts_with(&format!("operations={PAYMENTS} ok={PAYMENTS} failed=0 ")),
        "{context}: {}",
        run.summary
    );
    let keys: HashSet<&str> = run.payments.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys.len(), PAYMENTS, "{context}: one key per payment");

    // The upstream: each key applied once; the client got the answer of that call.
    let not_once: Vec<String> = run
        .payments
        .iter()
        .enumerate()
        .filter(|(_, p)| per_key.get(&p.key).map(|(_, e)| *e) != Some(1))
        .map(|(i, p)| {
            let (c, e) = per_key.get(&p.key).copied().unwrap_or((0, 0));
            format!(
                "payment {} (attempts={}, replayed={}): upstream calls={c} effects={e}",
                i + 1,
                p.attempts,
                p.replayed
            )
        })
        .collect();
    assert!(
        not_once.is_empty(),
        "{context}: payments not applied exactly once:\n{}",
        not_once.join("\n")
    );
    assert_eq!(per_key.len(), PAYMENTS, "{context}: keys the upstream saw");
    let calls = upstream.calls("java").unwrap();
    for (i, p) in run.payments.iter().enumerate() {
        let op = i + 1;
        assert_eq!(p.status, "200", "{context}: payment {op}: {p:?}");
        let applied = calls
            .iter()
            .find(|c| {
                c.step == "ok" && c.key.as_deref().map(|k| k.trim_matches('"')) == Some(&p.key)
            })
            .unwrap_or_else(|| panic!("{context}: payment {op}: no applied upstream call"));
        let original = format!("ok java call {}\n", applied.n);
        assert_eq!(
            p.body_sha256,
            sha256_hex(original.as_bytes()),
            "{context}: payment {op}: the client's body is not the upstream's answer {original:?}"
        );
    }

    // The held call's payment: the upstream saw it twice (held, then run once its lock was
    // over) and the client waited through 409s on the other node; no other payment saw 409.
    let held_key = calls
        .iter()
        .find(|c| c.n == HANG_CALL)
        .and_then(|c| c.key.clone())
        .unwrap_or_default();
    let held_key = held_key.trim_matches('"');
    assert_eq!(
        per_key.get(held_key),
        Some(&(2, 1)),
        "{context}: the held payment's (upstream calls, effects)"
    );
    let short: HashSet<String> = [held_key.chars().take(8).collect::<String>()].into();
    assert_eq!(
        run.payments_with_409, short,
        "{context}: payments whose attempts got 409"
    );
    assert_eq!(
        summary.calls,
        PAYMENTS as u64 + 1,
        "{context}: upstream calls"
    );

    // Each answer-in-flight kill lost one applied payment's answer; the other node replayed it.
    assert_eq!(replayed, run.answer_kills, "{context}: replayed payments");

    // No node logged a wasm error, the killed ones included.
    for (path, errors) in &run.killed_logs {
        assert!(errors.is_empty(), "{mode}: {}: {errors:?}", path.display());
    }
}

/// Waits until `pid` has exited (a zombie counts as gone: it serves nothing).
fn wait_gone(pid: u32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 3 is the state; `Z` zombie, `X` dead, nothing when it was reaped.
        let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
        if matches!(state, None | Some('Z') | Some('X')) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn java_client_two_envoys_one_etcd_each_payment_once_dispatch_mode() {
    two_nodes_killed_three_times("dispatch");
}

#[test]
fn java_client_two_envoys_one_etcd_each_payment_once_response_mode() {
    two_nodes_killed_three_times("response");
}
