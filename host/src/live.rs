//! Live mode: a real HTTP/1.1 front on 127.0.0.1 feeding a [`Gateway`], whose
//! dispatches and proxied requests go to real TCP addresses with real
//! timeouts. The fake clock follows real time and ticks fire from a timer.
//!
//! Test and lab infrastructure: one connection per upstream call, no TLS.

use crate::gateway::{Gateway, GatewayBuilder};
use crate::http::{
    CallId, CallKind, ClientResponse, Failure, Reply, Request, RequestId, UpstreamCall,
};
use crate::profile::Profile;
use crate::HostError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Options of a live gateway.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Listen address; port 0 picks a free one. Default `127.0.0.1:0`.
    pub listen: String,
    /// Envoy: cluster name → `host:port`.
    pub clusters: HashMap<String, String>,
    /// How often the fake clock catches up with real time (fires ticks and
    /// timeouts). Default 5 ms.
    pub clock_step_ms: u64,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            listen: "127.0.0.1:0".to_string(),
            clusters: HashMap::new(),
            clock_step_ms: 5,
        }
    }
}

impl LiveOptions {
    /// Maps an Envoy cluster name to a real `host:port`.
    pub fn cluster(mut self, name: &str, host_port: &str) -> Self {
        self.clusters
            .insert(name.to_string(), host_port.to_string());
        self
    }
}

struct Shared {
    gw: Gateway,
    started: Instant,
    launched: HashSet<CallId>,
    waiting: HashMap<RequestId, oneshot::Sender<ClientResponse>>,
    next_worker: usize,
}

type State = Arc<Mutex<Shared>>;

fn lock(state: &State) -> MutexGuard<'_, Shared> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running live gateway; stops when dropped.
pub struct LiveGateway {
    addr: SocketAddr,
    state: State,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LiveGateway {
    /// Builds the gateway and starts serving.
    pub fn start(builder: GatewayBuilder, options: LiveOptions) -> Result<LiveGateway, HostError> {
        let gw = builder.build()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| HostError::Live(format!("tokio runtime: {e}")))?;
        let listener = runtime
            .block_on(TcpListener::bind(&options.listen))
            .map_err(|e| HostError::Live(format!("binding {}: {e}", options.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HostError::Live(format!("local address: {e}")))?;
        let state: State = Arc::new(Mutex::new(Shared {
            gw,
            started: Instant::now(),
            launched: HashSet::new(),
            waiting: HashMap::new(),
            next_worker: 0,
        }));
        let options = Arc::new(options);
        runtime.spawn(accept_loop(listener, state.clone(), options.clone()));
        runtime.spawn(clock_loop(state.clone(), options));
        Ok(LiveGateway {
            addr,
            state,
            runtime: Some(runtime),
        })
    }

    /// The address the front listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Inspects the gateway (logs, calls, metrics, traps) under its lock.
    pub fn with_gateway<T>(&self, f: impl FnOnce(&mut Gateway) -> T) -> T {
        f(&mut lock(&self.state).gw)
    }

    /// Stops serving.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for LiveGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Brings the fake clock to real time, then launches new calls and hands
/// finished responses to their clients.
fn settle(state: &State, options: &Arc<LiveOptions>) {
    let mut s = lock(state);
    let elapsed = s.started.elapsed().as_millis() as u64;
    let now = s.gw.now_ms();
    if elapsed > now {
        s.gw.advance(elapsed - now);
    }
    let fresh: Vec<UpstreamCall> =
        s.gw.pending()
            .into_iter()
            .filter(|c| !s.launched.contains(&c.id))
            .collect();
    for call in &fresh {
        s.launched.insert(call.id);
    }
    let profile = s.gw.profile();
    let upstream = s.gw.upstream().to_string();
    let done: Vec<RequestId> = s
        .waiting
        .keys()
        .filter(|rid| s.gw.response(**rid).is_some())
        .copied()
        .collect();
    for rid in done {
        if let (Some(tx), Some(resp)) = (s.waiting.remove(&rid), s.gw.response(rid)) {
            let _ = tx.send(resp);
        }
    }
    drop(s);
    for call in fresh {
        let target = match &call.kind {
            CallKind::Proxied => Some(upstream.clone()),
            CallKind::Dispatch { upstream, .. } => match profile {
                Profile::Kong => Some(upstream.clone()),
                Profile::Envoy => options.clusters.get(upstream).cloned(),
            },
        };
        tokio::spawn(perform(state.clone(), options.clone(), call, target));
    }
}

async fn clock_loop(state: State, options: Arc<LiveOptions>) {
    let mut interval = tokio::time::interval(Duration::from_millis(options.clock_step_ms.max(1)));
    loop {
        interval.tick().await;
        settle(&state, &options);
    }
}

async fn accept_loop(listener: TcpListener, state: State, options: Arc<LiveOptions>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let options = options.clone();
                async move { serve(state, options, req).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The gateway closed the connection without a response (`Source::Dropped`):
/// hyper closes the connection when the service fails.
#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the gateway dropped the connection")
    }
}

impl std::error::Error for ConnectionDropped {}

async fn serve(
    state: State,
    options: Arc<LiveOptions>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, ConnectionDropped> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => return Ok(plain(400, "bad request body")),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let mut request = Request::new(parts.method.as_str(), &path);
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == hyper::header::HOST {
            request.authority = value;
        } else {
            request.headers.push((name.as_str().to_string(), value));
        }
    }
    request.body = body;
    let (tx, rx) = oneshot::channel();
    {
        let mut s = lock(&state);
        let workers = s.gw.workers();
        let worker = s.next_worker % workers;
        s.next_worker = s.next_worker.wrapping_add(1);
        let rid = s.gw.send(worker, request);
        s.waiting.insert(rid, tx);
    }
    settle(&state, &options);
    // A request sent to an exited Kong worker never completes: the client
    // waits, as on the real host.
    match rx.await {
        Ok(resp) if resp.is_dropped() => Err(ConnectionDropped),
        Ok(resp) => Ok(to_hyper(resp)),
        Err(_) => Ok(plain(500, "gateway stopped")),
    }
}

fn plain(status: u16, body: &str) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    r
}

fn to_hyper(resp: ClientResponse) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(resp.body)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(resp.status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    for (k, v) in resp.headers {
        // hyper frames the body itself.
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            r.headers_mut().append(name, value);
        }
    }
    r
}

async fn perform(
    state: State,
    options: Arc<LiveOptions>,
    call: UpstreamCall,
    target: Option<String>,
) {
    let reply = match target {
        None => Reply::failure(Failure::Refused),
        Some(target) => {
            let timeout = Duration::from_millis(call.timeout_ms.max(1));
            match tokio::time::timeout(timeout, exchange(&target, &call)).await {
                Ok(reply) => reply,
                Err(_) => Reply::failure(Failure::Timeout),
            }
        }
    };
    {
        let mut s = lock(&state);
        let elapsed = s.started.elapsed().as_millis() as u64;
        let now = s.gw.now_ms();
        if elapsed > now {
            s.gw.advance(elapsed - now);
        }
        // The fake clock may have timed the call out already.
        let _ = s.gw.answer(call.id, reply);
    }
    settle(&state, &options);
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn exchange(target: &str, call: &UpstreamCall) -> Reply {
    let addr = if target.contains(':') {
        target.to_string()
    } else {
        format!("{target}:80")
    };
    let stream = match TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(_) => return Reply::failure(Failure::Refused),
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return Reply::failure(Failure::Reset);
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = hyper::Request::builder()
        .method(call.method.as_str())
        .uri(if call.path.is_empty() {
            "/"
        } else {
            call.path.as_str()
        })
        .header(hyper::header::HOST, call.authority.as_str());
    for (k, v) in &call.headers {
        if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    let Ok(request) = builder.body(Full::new(Bytes::from(call.body.clone()))) else {
        return Reply::failure(Failure::Reset);
    };
    let Ok(response) = sender.send_request(request).await else {
        return Reply::failure(Failure::Reset);
    };
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(k, _)| *k != hyper::header::TRANSFER_ENCODING)
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let announced =
        crate::http::find_header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Err(_) => {
                let mut reply =
                    Reply::truncated(status, announced.unwrap_or(bytes.len() + 1), bytes);
                if let Reply::Truncated { headers: h, .. } = &mut reply {
                    *h = headers;
                }
                return reply;
            }
        }
    }
    let mut reply = Reply::status(status).body(bytes);
    if let Reply::Response { headers: h, .. } = &mut reply {
        *h = headers;
    }
    reply
}
