//! Issue 7 item 5: the Java example's client, once through the real filter on the test host
//! in live mode, in front of the example's payment server.
//!
//!   IdempotentClient ──HTTP──▶ LiveGateway (kong_retry.wasm, Kong profile, dispatch mode)
//!                                   │ dispatches (real sockets, real timeouts)
//!                                   ▼
//!                            [FaultProxy] ──▶ PaymentServer (JDK)
//!
//! Two runs of 20 payments: straight to the server, and through a small fault proxy that
//! drops some attempts (answer lost after the server did the work, connection closed before
//! forwarding, 503). Both must end with every payment made exactly once, and in the faulty
//! run the filter — not the client — must have done the retrying.
//!
//! Needs a JDK (`./scripts/setup.sh` installs one). The Java sources are compiled into
//! `target/java-live/classes` unless `examples/java/build/classes` is up to date.

// Test helpers outside #[test] functions are not covered by clippy.toml's allow-*-in-tests;
// a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proxy_wasm_test_host::live::{LiveGateway, LiveOptions};
use proxy_wasm_test_host::{build, Gateway, Profile, WasmModule};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

const OPERATIONS: usize = 20;
const SERVER_START: Duration = Duration::from_secs(30);
const CLIENT_RUN: Duration = Duration::from_secs(90);
/// The client's per-attempt timeout: longer than the gateway's `deadline` (as the example's
/// README advises), short enough that a hanging gateway fails the test quickly.
const CLIENT_PER_ATTEMPT_MS: u64 = 8_000;
const CLIENT_DEADLINE_MS: u64 = 20_000;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn filter() -> &'static WasmModule {
    static MODULE: OnceLock<WasmModule> = OnceLock::new();
    MODULE.get_or_init(|| {
        let (module, _) = kong_retry_demo::load_filter(false).unwrap_or_else(|e| panic!("{e}"));
        module
    })
}

// ---------------------------------------------------------------------------------------
// Java: classes, child processes

fn java_sources(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            java_sources(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "java") {
            out.push(path);
        }
    }
    Ok(())
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether `classes` holds the two entry points, compiled after every source changed.
fn up_to_date(classes: &Path, newest_source: SystemTime) -> bool {
    ["PaymentServer.class", "IdempotentClient.class"]
        .iter()
        .all(|c| {
            mtime(&classes.join("dev/kongretry/example").join(c))
                .is_some_and(|t| t >= newest_source)
        })
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The example's compiled main classes; compiles them when needed (once per process).
fn java_classes() -> PathBuf {
    static CLASSES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CLASSES
        .get_or_init(prepare_classes)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn prepare_classes() -> Result<PathBuf, String> {
    if !have("javac") || !have("java") {
        return Err(
            "no JDK (javac/java not found): run ./scripts/setup.sh, which installs openjdk-17-jdk-headless"
                .to_string(),
        );
    }
    let java_dir = kong_retry_demo::repo_root().join("examples").join("java");
    let mut sources = Vec::new();
    java_sources(&java_dir.join("src/main/java"), &mut sources)
        .map_err(|e| format!("reading examples/java/src/main/java: {e}"))?;
    let newest = sources
        .iter()
        .filter_map(|p| mtime(p))
        .max()
        .ok_or("no Java sources under examples/java/src/main/java")?;
    // What run-tests.sh compiled, if it is current; otherwise a private copy (run-tests.sh
    // deletes and rebuilds build/classes, so compiling there could race with it).
    let shipped = java_dir.join("build").join("classes");
    if up_to_date(&shipped, newest) {
        return Ok(shipped);
    }
    let private = build::target_root().join("java-live").join("classes");
    if up_to_date(&private, newest) {
        return Ok(private);
    }
    let tmp = private.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let out = Command::new("javac")
        .args(["--release", "17", "-d"])
        .arg(&tmp)
        .args(&sources)
        .output()
        .map_err(|e| format!("running javac: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "javac failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let _ = std::fs::remove_dir_all(&private);
    std::fs::rename(&tmp, &private).map_err(|e| format!("{}: {e}", private.display()))?;
    Ok(private)
}

/// A child process killed (and reaped) when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects a pipe's lines on a thread; `lines` sends each as it comes.
fn drain<R: Read + Send + 'static>(pipe: R, lines: mpsc::Sender<String>) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    })
}

/// `PaymentServer 0`: returns the process and its port.
fn start_server(classes: &Path) -> (ChildGuard, u16) {
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(classes)
        .args(["dev.kongretry.example.PaymentServer", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting PaymentServer: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = ChildGuard(child);
    let (tx, rx) = mpsc::channel();
    drain(stdout, tx);
    let line = rx
        .recv_timeout(SERVER_START)
        .unwrap_or_else(|e| panic!("PaymentServer did not say `listening on PORT`: {e}"));
    let port = line
        .strip_prefix("listening on ")
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or_else(|| panic!("unexpected first line from PaymentServer: {line:?}"));
    (guard, port)
}

struct ClientRun {
    success: bool,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

/// `IdempotentClient <url> N`, bounded by `CLIENT_RUN`; stopped at the first operation
/// that fails (the summary line is then missing and the test fails with the transcript).
fn run_client(classes: &Path, base_url: &str, operations: usize) -> ClientRun {
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(classes)
        .arg("dev.kongretry.example.IdempotentClient")
        .arg(base_url)
        .arg(operations.to_string())
        .arg("--per-attempt-ms")
        .arg(CLIENT_PER_ATTEMPT_MS.to_string())
        .arg("--deadline-ms")
        .arg(CLIENT_DEADLINE_MS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting IdempotentClient: {e}"));
    let (out_tx, out_rx) = mpsc::channel();
    let (err_tx, err_rx) = mpsc::channel();
    let out_thread = drain(child.stdout.take().expect("piped stdout"), out_tx);
    let err_thread = drain(child.stderr.take().expect("piped stderr"), err_tx);
    let mut guard = ChildGuard(child);
    let started = Instant::now();
    let mut stdout = Vec::new();
    let status = loop {
        stdout.extend(out_rx.try_iter());
        let failed_op = stdout
            .iter()
            .any(|l: &String| l.starts_with("operation ") && !l.contains(" attempts="));
        match guard.0.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if !failed_op && started.elapsed() < CLIENT_RUN => {
                thread::sleep(Duration::from_millis(50))
            }
            _ => break None,
        }
    };
    drop(guard); // kills it if it is still running, so the pipes close
    let _ = out_thread.join();
    let _ = err_thread.join();
    stdout.extend(out_rx.try_iter());
    let run = ClientRun {
        success: status.is_some_and(|s| s.success()),
        stdout,
        stderr: err_rx.try_iter().collect(),
    };
    if status.is_none() && started.elapsed() >= CLIENT_RUN {
        panic!(
            "IdempotentClient still running after {CLIENT_RUN:?}\nstdout:\n{}\nstderr:\n{}",
            run.stdout.join("\n"),
            run.stderr.join("\n")
        );
    }
    run
}

// ---------------------------------------------------------------------------------------
// Minimal HTTP/1.1 over std sockets (for the fault proxy, the delay server and /stats)

/// Reads one message: the head, then `content-length` bytes of body (or up to EOF when
/// there is none and `body_to_eof`).
fn read_message(stream: &mut TcpStream, body_to_eof: bool) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(len) => {
            while buf.len() < head_end + len {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed in body",
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        None if body_to_eof => {
            stream.read_to_end(&mut buf)?;
        }
        None => {}
    }
    Ok(buf)
}

fn header_value(message: &[u8], name: &str) -> Option<String> {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&message[..end]);
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// One request, one response, on a fresh connection.
fn round_trip(addr: SocketAddr, request: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = connect(addr)?;
    s.write_all(request)?;
    read_message(&mut s, true)
}

/// The payment server's `/stats`, asked directly.
fn server_stats(port: u16) -> Value {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let response = round_trip(
        addr,
        b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap_or_else(|e| panic!("GET /stats: {e}"));
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |i| i + 4);
    serde_json::from_slice(&response[start..]).unwrap_or_else(|e| {
        panic!(
            "/stats is not JSON ({e}): {}",
            String::from_utf8_lossy(&response)
        )
    })
}

/// A background accept loop that stops when dropped.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let flag = stop.clone();
        let accept = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let handle = handle.clone();
                        thread::spawn(move || {
                            if stream.set_nonblocking(false).is_ok()
                                && stream.set_read_timeout(Some(IO_TIMEOUT)).is_ok()
                                && stream.set_write_timeout(Some(IO_TIMEOUT)).is_ok()
                            {
                                handle(stream);
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Kong's loopback delay endpoint (kong/delay-server.conf): answers after `?ms=N`.
fn delay_server() -> Server {
    Server::start(|mut stream| {
        let Ok(request) = read_message(&mut stream, false) else {
            return;
        };
        let line = String::from_utf8_lossy(&request);
        let ms = line
            .split_once("ms=")
            .and_then(|(_, rest)| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().ok()
            })
            .unwrap_or(0)
            .min(5_000);
        thread::sleep(Duration::from_millis(ms));
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    })
}

// ---------------------------------------------------------------------------------------
// The fault proxy

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Forward and relay the answer.
    None,
    /// Forward, let the server do the work, then close without answering.
    AnswerLost,
    /// Close without forwarding.
    ClosedBeforeForwarding,
    /// Answer 503 without forwarding.
    Unavailable,
}

/// By the order in which idempotency keys first appear (operation k) and how often the
/// key was seen (attempt n): every operation but each fourth meets one or two faults.
fn fault_for(operation: usize, attempt: usize) -> Fault {
    match (operation % 4, attempt) {
        (1, 1) | (3, 2) => Fault::AnswerLost,
        (2, 1) => Fault::ClosedBeforeForwarding,
        (3, 1) => Fault::Unavailable,
        _ => Fault::None,
    }
}

#[derive(Default)]
struct FaultCounts {
    keys: Mutex<HashMap<String, (usize, usize)>>,
    answer_lost: AtomicUsize,
    closed_before: AtomicUsize,
    unavailable: AtomicUsize,
    forwarded: AtomicUsize,
}

impl FaultCounts {
    fn decide(&self, key: Option<String>) -> Fault {
        let Some(key) = key else { return Fault::None };
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let next = keys.len() + 1;
        let entry = keys.entry(key).or_insert((next, 0));
        entry.1 += 1;
        fault_for(entry.0, entry.1)
    }

    fn injected(&self) -> usize {
        self.answer_lost.load(Ordering::Relaxed)
            + self.closed_before.load(Ordering::Relaxed)
            + self.unavailable.load(Ordering::Relaxed)
    }
}

fn fault_proxy(upstream: SocketAddr, counts: Arc<FaultCounts>) -> Server {
    Server::start(move |mut client| {
        let Ok(request) = read_message(&mut client, false) else {
            return;
        };
        match counts.decide(header_value(&request, "idempotency-key")) {
            Fault::None => {
                if let Ok(response) = round_trip(upstream, &request) {
                    counts.forwarded.fetch_add(1, Ordering::Relaxed);
                    let _ = client.write_all(&response);
                }
            }
            Fault::AnswerLost => {
                if round_trip(upstream, &request).is_ok() {
                    counts.answer_lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            Fault::ClosedBeforeForwarding => {
                counts.closed_before.fetch_add(1, Ordering::Relaxed);
            }
            Fault::Unavailable => {
                counts.unavailable.fetch_add(1, Ordering::Relaxed);
                let _ = client.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        }
        let _ = client.shutdown(std::net::Shutdown::Both);
    })
}

// ---------------------------------------------------------------------------------------
// The runs

struct Outcome {
    client: ClientRun,
    stats: Value,
    /// Dispatches that carried `x-retry-attempt`: the filter's retries.
    retries: usize,
    retry_metric: Option<u64>,
    traps: usize,
}

fn gateway_config(upstream: SocketAddr, delay: SocketAddr) -> String {
    // A generous budget: this test is about exactly-once, not about the budget; the
    // default (20 % + 10/s) could refuse some of the ~20 retries made within a second.
    format!(
        r#"{{"mode":"dispatch","upstream":"{upstream}","retries":3,"retry_on":"gateway-error,connect-failure,timeout,reset","per_try_timeout":2000,"deadline":5000,"delay_endpoint":"{delay}","budget":{{"percent":100,"min_retries_per_second":100}}}}"#
    )
}

/// Server, optional fault proxy, delay server, live gateway, client: runs the client once.
fn run_through_filter(with_faults: Option<Arc<FaultCounts>>) -> Outcome {
    let classes = java_classes();
    let (_server, port) = start_server(&classes);
    let server_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = with_faults.map(|counts| fault_proxy(server_addr, counts));
    let upstream = proxy.as_ref().map_or(server_addr, |p| p.addr);
    let delay = delay_server();
    let builder = Gateway::builder(Profile::Kong, filter())
        .plugin_config(gateway_config(upstream, delay.addr))
        .upstream(&upstream.to_string())
        .workers(2)
        .seed(7);
    let gateway = LiveGateway::start(builder, LiveOptions::default())
        .unwrap_or_else(|e| panic!("live gateway: {e}"));

    let client = run_client(&classes, &gateway.url(), OPERATIONS);
    let stats = server_stats(port);
    let (retries, retry_metric, traps) = gateway.with_gateway(|gw| {
        let retries = gw
            .calls()
            .iter()
            .filter(|c| c.upstream() == Some(upstream.to_string().as_str()))
            .filter(|c| c.header("x-retry-attempt").is_some())
            .count();
        (
            retries,
            gw.metric("kong_retry_retries_total"),
            gw.traps().len(),
        )
    });
    gateway.stop();
    Outcome {
        client,
        stats,
        retries,
        retry_metric,
        traps,
    }
}

/// The client's summary says all ok, every payment took effect exactly once.
fn assert_exactly_once(o: &Outcome) {
    let transcript = || {
        format!(
            "client stdout:\n{}\nclient stderr:\n{}\nserver stats: {}",
            o.client.stdout.join("\n"),
            o.client.stderr.join("\n"),
            o.stats
        )
    };
    // The summary line goes on with `replayed=` and `attempts=` counts.
    let summary = format!("operations={OPERATIONS} ok={OPERATIONS} failed=0 ");
    assert!(o.client.success, "client failed\n{}", transcript());
    assert!(
        o.client
            .stdout
            .last()
            .is_some_and(|l| l.starts_with(&summary)),
        "{}",
        transcript()
    );
    assert_eq!(o.stats["payments"], OPERATIONS, "{}", transcript());
    let effects = o.stats["effects"].as_object().cloned().unwrap_or_default();
    assert_eq!(effects.len(), OPERATIONS, "{}", transcript());
    assert!(
        effects.values().all(|n| n == 1),
        "a payment took effect more than once\n{}",
        transcript()
    );
    assert_eq!(o.stats["mismatch_422"], 0, "{}", transcript());
    assert_eq!(o.stats["missing_key_400"], 0, "{}", transcript());
    assert_eq!(o.traps, 0, "the filter trapped\n{}", transcript());
}

/// Each operation needed one client attempt: whatever failed, the gateway hid it.
fn assert_one_client_attempt_each(o: &Outcome) {
    let ops: Vec<&String> = o
        .client
        .stdout
        .iter()
        .filter(|l| l.starts_with("operation "))
        .collect();
    assert_eq!(ops.len(), OPERATIONS, "{:?}", o.client.stdout);
    for line in ops {
        assert!(
            line.contains(" attempts=1"),
            "the client had to retry, the filter did not hide the fault: {line}\nstderr:\n{}",
            o.client.stderr.join("\n")
        );
    }
}

#[test]
fn java_client_through_the_filter_in_live_mode() {
    let o = run_through_filter(None);
    assert_exactly_once(&o);
    assert_one_client_attempt_each(&o);
    assert_eq!(o.retries, 0, "nothing failed, nothing to retry");
    assert_eq!(o.stats["replays"], 0);
}

#[test]
fn java_client_through_the_filter_with_injected_faults() {
    let counts = Arc::new(FaultCounts::default());
    let o = run_through_filter(Some(counts.clone()));
    assert_exactly_once(&o);
    assert_one_client_attempt_each(&o);

    let lost = counts.answer_lost.load(Ordering::Relaxed);
    let injected = counts.injected();
    // 20 operations: 5 × answer lost, 5 × closed before forwarding, 5 × 503 then answer lost.
    assert_eq!(lost, 10, "answers lost after the server did the work");
    assert_eq!(counts.closed_before.load(Ordering::Relaxed), 5);
    assert_eq!(counts.unavailable.load(Ordering::Relaxed), 5);
    assert!(
        o.retries >= injected,
        "the filter retried {} times for {injected} faults",
        o.retries
    );
    // Every lost answer was recovered by the filter's retry with the same key: a replay.
    assert_eq!(o.stats["replays"], lost, "{}", o.stats);
    match o.retry_metric {
        Some(n) => assert!(n > 0, "kong_retry_retries_total = {n} after {} retries", o.retries),
        None => eprintln!(
            "note: the filter defines no kong_retry_retries_total metric; retries counted from the gateway's call history: {}",
            o.retries
        ),
    }
}
