//! Live mode: real sockets in front of and behind the gateway.
mod common;

use common::*;
use proxy_wasm_test_host::live::{LiveGateway, LiveOptions};
use proxy_wasm_test_host::Profile;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A one-thread upstream answering every request with `status` and `body`
/// (after `delay`); returns its address.
fn upstream(status: u16, body: Vec<u8>, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                std::thread::sleep(delay);
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nx-upstream: yes\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    addr
}

fn free_port_refusing() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// GET through the gateway: every byte the client receives before the
/// connection closes (or `timeout` passes: then `None`).
fn get_raw(gw: &LiveGateway, path: &str, timeout: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    Some(raw)
}

/// GET through the gateway: (status, body).
fn get(gw: &LiveGateway, path: &str) -> (u16, Vec<u8>) {
    let raw = get_raw(gw, path, Duration::from_secs(10)).expect("a response within 10 s");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

#[test]
fn live_passthrough_to_a_real_upstream() {
    let up = upstream(200, b"hello".to_vec(), Duration::ZERO);
    let gw = LiveGateway::start(
        builder(Profile::Kong, json!({})).upstream(&up),
        LiveOptions::default(),
    )
    .unwrap();
    assert_eq!(get(&gw, "/x"), (200, b"hello".to_vec()));
    let calls = gw.with_gateway(|g| g.calls().to_vec());
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/x");
}

#[test]
fn live_dispatch_relays_exact_bytes() {
    let original: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let up = upstream(201, original.clone(), Duration::ZERO);
    let script = json!({
        "on_request_headers": [{"op": "dispatch", "upstream": up, "timeout_ms": 5000}, {"op": "pause"}],
        "on_http_call_response": [{"op": "local_from_call"}],
        "on_response_headers": [{"op": "remove_response_header", "name": "content-length"}],
        "on_response_body": [{"op": "set_response_body_from_stash"}]
    });
    let gw = LiveGateway::start(builder(Profile::Kong, script), LiveOptions::default()).unwrap();
    let (status, body) = get(&gw, "/bytes");
    assert_eq!(status, 201);
    assert_eq!(body, original);
}

#[test]
fn live_failures_map_to_dispatch_status() {
    let refused = free_port_refusing();
    let slow = upstream(200, b"late".to_vec(), Duration::from_secs(3));
    let script = json!({
        "on_request_headers": [{"op": "dispatch", "upstream": refused, "timeout_ms": 2000}, {"op": "pause"}],
        "on_http_call_response": [{"op": "local_from_call"}]
    });
    let gw = LiveGateway::start(builder(Profile::Kong, script), LiveOptions::default()).unwrap();
    // Kong: the local response of a failed dispatch's callback is a dropped
    // connection: the client reads nothing at all.
    let raw = get_raw(&gw, "/", Duration::from_secs(10)).expect("closed, not hung");
    assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
    assert!(gw.with_gateway(|g| g.log_contains("dispatch_status=Some(\"broken connection\")")));
    assert!(gw.with_gateway(|g| g.log_contains("zero size buf in writer")));

    let script = json!({
        "on_request_headers": [{"op": "dispatch", "upstream": "backend", "timeout_ms": 200}, {"op": "pause"}],
        "on_http_call_response": [{"op": "local_from_call"}]
    });
    let gw = LiveGateway::start(
        builder(Profile::Envoy, script),
        LiveOptions::default().cluster("backend", &slow),
    )
    .unwrap();
    let t = Instant::now();
    assert_eq!(get(&gw, "/").0, 502);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn live_ticks_follow_real_time() {
    let up = upstream(200, Vec::new(), Duration::ZERO);
    let gw = LiveGateway::start(
        builder(
            Profile::Kong,
            json!({"on_configure": [{"op": "tick_period", "ms": 20}]}),
        )
        .upstream(&up),
        LiveOptions::default(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let ticks = gw.with_gateway(|g| markers(g, "probe on_tick").len());
    assert!(ticks >= 3, "{ticks}");
}

#[test]
fn live_clients_of_an_exited_kong_worker_hang() {
    // Kong: a rejected configuration kills the worker for good; nginx still
    // accepts connections and nothing answers them (issue #11).
    let gw = LiveGateway::start(
        builder(Profile::Kong, json!({"reject": []})),
        LiveOptions::default(),
    )
    .unwrap();
    assert_eq!(get_raw(&gw, "/", Duration::from_millis(500)), None);
}
