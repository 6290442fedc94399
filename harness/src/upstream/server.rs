//! The upstream server behind `kong-retry-upstream`: answers each request as its
//! [`Script`] says, records every call, and reports them on `/_control/...`.
//!
//! Thread per connection, keep-alive, loopback only. Optionally it appends every request it
//! received whole to a journal file (so that effects are counted even after a SIGKILL) and
//! drains gracefully when asked (see [`Options::drain`]).

use super::script::{pattern, Script, Step};
use crate::http1;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happened to one request, as `/_control/calls` reports it.
#[derive(Debug, Clone)]
struct CallRecord {
    n: u64,
    method: String,
    path: String,
    arrived_ms: f64,
    answered_ms: f64,
    body_len: usize,
    body_sha256: String,
    key: Option<String>,
    attempt: Option<String>,
    step: String,
}

#[derive(Default)]
struct Book {
    /// Calls per script id, in arrival order.
    calls: BTreeMap<String, Vec<CallRecord>>,
    /// Requests whose head came but whose body never did (the peer went away).
    incomplete: u64,
    /// Per idempotency key: calls, and effects (calls answered 2xx: applied once each).
    keys: BTreeMap<String, (u64, u64)>,
}

struct State {
    started: Instant,
    book: Mutex<Book>,
    /// One line per request received whole (see [`Options::journal`]).
    journal: Option<Mutex<File>>,
    /// Set once a drain began: answers close their connection.
    draining: AtomicBool,
    /// Requests received and not yet answered.
    in_flight: AtomicUsize,
    /// Connections waiting for their next request, by connection number: a drain closes them.
    idle: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

/// How [`serve_with`] runs.
#[derive(Default)]
pub struct Options {
    /// Appends `<ms since start> <method> <id> <idempotency-key or -> <x-retry-attempt or
    /// -> <x-envoy-attempt-count or ->` for every request received whole, before it is
    /// answered: the request's effect is applied on arrival, so the journal counts effects
    /// even when the process is killed before it answers.
    pub journal: Option<File>,
    /// When this becomes true (e.g. from a SIGTERM handler) the server drains: it stops
    /// accepting (the listening socket is shut down), closes idle keep-alive connections,
    /// answers the requests in flight (with `connection: close`), then exits the process
    /// (status 0; after `drain_limit` at the latest).
    pub drain: Option<&'static AtomicBool>,
    pub drain_limit: Duration,
}

impl State {
    fn ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves on `listener` until the process is stopped.
pub fn serve(listener: TcpListener) -> std::io::Result<()> {
    serve_with(listener, Options::default())
}

/// Serves on `listener` until the process is stopped or has drained.
pub fn serve_with(listener: TcpListener, options: Options) -> std::io::Result<()> {
    let state = Arc::new(State {
        started: Instant::now(),
        book: Mutex::new(Book::default()),
        journal: options.journal.map(Mutex::new),
        draining: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        idle: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(0),
    });
    if let Some(flag) = options.drain {
        use std::os::fd::AsRawFd;
        let fd = listener.as_raw_fd();
        let state = state.clone();
        let limit = options.drain_limit;
        std::thread::spawn(move || drain_when(flag, fd, &state, limit));
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            if state.draining.load(Ordering::SeqCst) {
                break;
            }
            continue;
        };
        let state = state.clone();
        std::thread::spawn(move || connection(stream, &state));
    }
    // Draining: the drain thread exits the process once the requests in flight are answered.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits for `flag`, then drains (see [`Options::drain`]).
fn drain_when(flag: &AtomicBool, listener_fd: i32, state: &State, limit: Duration) {
    while !flag.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    state.draining.store(true, Ordering::SeqCst);
    // SAFETY: shutdown(2) on the listening socket this process owns; it stays open (the accept
    // loop holds it), new connections are refused and the accept loop wakes with an error.
    unsafe {
        libc::shutdown(listener_fd, libc::SHUT_RDWR);
    }
    let idle: Vec<TcpStream> = state
        .idle
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .map(|(_, s)| s)
        .collect();
    for s in idle {
        let _ = s.shutdown(Shutdown::Both);
    }
    let until = Instant::now() + limit;
    while state.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("kong-retry-upstream drained");
    std::process::exit(0);
}

fn connection(stream: TcpStream, state: &State) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut r = BufReader::new(read_half);
    let mut w = stream;
    loop {
        if let Ok(idle) = w.try_clone() {
            state
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(conn, idle);
        }
        if state.draining.load(Ordering::SeqCst) {
            return;
        }
        let head = http1::read_head(&mut r);
        state
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&conn);
        let head = match head {
            Ok(Some(h)) => h,
            _ => return,
        };
        let _busy = InFlight::new(state);
        let arrived_ms = state.ms();
        let mut parts = head.start.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let body =
            match http1::framing(&head.headers, false).and_then(|f| http1::read_body(&mut r, f)) {
                Ok(b) => b,
                Err(_) => {
                    state.book().incomplete += 1;
                    return;
                }
            };
        let close = http1::header(&head.headers, "connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || state.draining.load(Ordering::SeqCst);
        if target.starts_with("/_control/") {
            let (status, value) = control(&target, state);
            let text = value.to_string();
            let _ = respond(
                &mut w,
                status,
                &[("content-type", "application/json".into())],
                text.as_bytes(),
                false,
            );
            if close {
                return;
            }
            continue;
        }
        let script = match Script::from_target(&target) {
            Ok(s) => s,
            Err(e) => {
                let _ = respond(
                    &mut w,
                    400,
                    &[],
                    format!("bad script: {e}\n").as_bytes(),
                    false,
                );
                return;
            }
        };
        let key = http1::header(&head.headers, "idempotency-key").map(str::to_string);
        if let Some(journal) = &state.journal {
            let field = |name: &str| http1::header(&head.headers, name).unwrap_or("-");
            let line = format!(
                "{arrived_ms:.1} {method} {} {} {} {}\n",
                script.id,
                key.as_deref().unwrap_or("-"),
                field("x-retry-attempt"),
                field("x-envoy-attempt-count"),
            );
            // One write(2) per line on an O_APPEND file: whole lines, even across a SIGKILL.
            let _ = journal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(line.as_bytes());
        }
        // Numbered and recorded under one lock (parallel calls of one id), on arrival, so
        // that a hanging call is seen while it hangs.
        let mut book = state.book();
        let calls = book.calls.entry(script.id.clone()).or_default();
        let n = calls.len() as u64 + 1;
        let step = script.step(n);
        let mut record = CallRecord {
            n,
            method: method.clone(),
            path: target.clone(),
            arrived_ms,
            answered_ms: arrived_ms,
            body_len: body.len(),
            body_sha256: http1::sha256_hex(&body),
            key: key.clone(),
            attempt: http1::header(&head.headers, "x-retry-attempt").map(str::to_string),
            step: step.label(),
        };
        calls.push(record.clone());
        drop(book);
        if script.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(script.delay_ms));
        }
        let keep = match step {
            Step::Hang => {
                hang(&w);
                false
            }
            Step::Reset => {
                reset(w.try_clone().ok(), &script);
                false
            }
            Step::Status(code) => {
                let mut headers =
                    common_headers(&script, n, &body, state.draining.load(Ordering::SeqCst));
                if let Some(ra) = &script.retry_after {
                    headers.push(("retry-after", ra.clone()));
                }
                let text = format!("fail {code} call {n}\n");
                respond(&mut w, code, &headers, text.as_bytes(), method == "HEAD").is_ok()
            }
            Step::Ok => {
                let headers =
                    common_headers(&script, n, &body, state.draining.load(Ordering::SeqCst));
                let reply = if script.echo {
                    body.clone()
                } else if let Some(size) = script.size {
                    pattern(size)
                } else {
                    format!("ok {} call {n}\n", script.id).into_bytes()
                };
                if (200..300).contains(&script.status) {
                    if let Some(k) = &key {
                        state.book().keys.entry(k.clone()).or_default().1 += 1;
                    }
                }
                respond(&mut w, script.status, &headers, &reply, method == "HEAD").is_ok()
            }
        };
        if let Some(k) = &key {
            state.book().keys.entry(k.clone()).or_default().0 += 1;
        }
        record.answered_ms = state.ms();
        if let Some(calls) = state.book().calls.get_mut(&script.id) {
            if let Some(slot) = calls.iter_mut().find(|c| c.n == n) {
                slot.answered_ms = record.answered_ms;
            }
        }
        if !keep || close || state.draining.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Counts a request as in flight while it lives (a drain waits for it).
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn new(state: &'a State) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn common_headers(
    script: &Script,
    n: u64,
    body: &[u8],
    draining: bool,
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-upstream-call", n.to_string()),
        ("x-body-sha256", http1::sha256_hex(body)),
        ("x-body-length", body.len().to_string()),
    ];
    if draining {
        // A draining server tells the client this connection ends with this answer.
        h.push(("connection", "close".into()));
    }
    for i in 1..=script.cookies {
        h.push(("set-cookie", format!("c{i}=v{i}; Path=/")));
    }
    h
}

fn respond(
    w: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let bodiless = status == 204 || status == 304 || (100..200).contains(&status);
    if !bodiless {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !bodiless && !head_only {
        bytes.extend_from_slice(body);
    }
    w.write_all(&bytes)?;
    w.flush()
}

/// No answer: wait until the peer goes away (at most a minute).
fn hang(stream: &TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let until = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 1];
    while Instant::now() < until {
        match stream.peek(&mut buf) {
            Ok(0) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Headers announcing a body, half of it, then a TCP reset (SO_LINGER 0 and close).
fn reset(stream: Option<TcpStream>, script: &Script) {
    let Some(mut s) = stream else { return };
    let body = pattern(script.size.unwrap_or(2000).max(2));
    let head = format!(
        "HTTP/1.1 {} OK\r\ncontent-length: {}\r\n\r\n",
        script.status,
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body[..body.len() / 2]);
    let _ = s.flush();
    std::thread::sleep(Duration::from_millis(20));
    crate::tcp::reset_on_close(&s);
    drop(s);
}

fn control(target: &str, state: &State) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let book = state.book();
    match path {
        "/_control/calls" => {
            let id = param("id").unwrap_or_else(|| "-".into());
            let calls: Vec<Value> = book
                .calls
                .get(&id)
                .map(|cs| cs.iter().map(call_json).collect())
                .unwrap_or_default();
            (200, Value::Array(calls))
        }
        "/_control/summary" => {
            let calls: usize = book.calls.values().map(Vec::len).sum();
            let keys: serde_json::Map<String, Value> = book
                .keys
                .iter()
                .map(|(k, (c, e))| (k.clone(), json!({"calls": c, "effects": e})))
                .collect();
            (
                200,
                json!({"calls": calls, "incomplete": book.incomplete, "keys": keys}),
            )
        }
        _ => (404, json!({"error": format!("no control endpoint {path}")})),
    }
}

fn call_json(c: &CallRecord) -> Value {
    json!({
        "n": c.n,
        "method": c.method,
        "path": c.path,
        "arrived_ms": c.arrived_ms,
        "answered_ms": c.answered_ms,
        "body_len": c.body_len,
        "body_sha256": c.body_sha256,
        "key": c.key,
        "attempt": c.attempt,
        "step": c.step,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
