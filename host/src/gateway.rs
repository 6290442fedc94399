//! A gateway node: several VM instances (workers) sharing one shared-data
//! store, clock and metrics; client requests driven through the filter's
//! phases under the profile's rules; upstream calls kept pending for the test.

use crate::http::{
    framing_ok, CallId, CallKind, ClientResponse, Failure, Reply, Request, RequestId, Source,
    UpstreamCall,
};
use crate::module::WasmModule;
use crate::profile::{LocalResponseRule, Phase, Profile};
use crate::worker::{CallResponse, Effect, Stream, TrapInfo, Worker, ROOT_ID};
use crate::HostError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// proxy-wasm log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub(crate) fn from_raw(raw: i32) -> LogLevel {
        match raw {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }
}

/// One log line: from `proxy_log`, the module's stdout/stderr, or the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub worker: usize,
    pub context_id: u32,
    pub level: LogLevel,
    pub message: String,
}

/// A trap that ended a worker's instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    pub worker: usize,
    /// The callback that trapped, e.g. `on_response_headers`.
    pub phase: &'static str,
    /// The request whose context trapped (None for a root context).
    pub request: Option<RequestId>,
    pub message: String,
}

/// Cost of one request (or of root-context work): wasm fuel (≈ instructions),
/// host calls and bytes copied across the boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub fuel: u64,
    pub callbacks: u64,
    pub host_calls: u64,
    pub bytes_to_guest: u64,
    pub bytes_from_guest: u64,
    /// `proxy_get_shared_data` calls (included in `host_calls`).
    pub shared_data_gets: u64,
    /// `proxy_set_shared_data` calls (included in `host_calls`).
    pub shared_data_sets: u64,
}

/// The result of [`Gateway::run`].
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request: RequestId,
    pub response: ClientResponse,
    /// The upstream calls made for this request, in order.
    pub calls: Vec<UpstreamCall>,
}

/// Immutable configuration of a gateway, shared with its workers.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub profile: Profile,
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    /// Later entries win; `None` removes a default property.
    pub properties: Vec<(Vec<String>, Option<Vec<u8>>)>,
    pub clusters: Vec<String>,
    pub upstream: String,
    pub shared_data_zone: bool,
    /// Kong: the name of the `shm_kv` zone (shown as `kong.configuration.nginx_wasm_shm_kv_<name>`).
    pub shared_data_zone_name: String,
    pub body_buffer_size: usize,
    pub fuel_per_callback: u64,
    pub memory_limit_bytes: usize,
    pub log_level: LogLevel,
    pub seed: u64,
    pub proxy_timeout_ms: u64,
}

pub(crate) struct Metric {
    pub name: String,
    pub kind: u32,
    pub value: u64,
}

/// State shared by all workers of one gateway node.
pub(crate) struct Node {
    pub now_ms: u64,
    pub shared_data: HashMap<String, (Vec<u8>, u32)>,
    pub next_cas: u32,
    pub metrics: Vec<Metric>,
    pub logs: Vec<LogEntry>,
    pub next_call_id: u64,
}

impl Node {
    pub fn define_metric(&mut self, name: &str, kind: u32) -> u32 {
        if let Some(i) = self.metrics.iter().position(|m| m.name == name) {
            return i as u32;
        }
        self.metrics.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
        });
        (self.metrics.len() - 1) as u32
    }
}

/// Builds a [`Gateway`].
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    settings: Settings,
    module: WasmModule,
    workers: usize,
}

impl GatewayBuilder {
    /// The filter's configuration (Kong: the filter chain's `config`).
    pub fn plugin_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.settings.plugin_config = bytes.into();
        self
    }

    /// The VM configuration given to `on_vm_start`.
    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.settings.vm_config = bytes.into();
        self
    }

    /// Number of VM instances (nginx workers / Envoy worker threads). Default 1.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Kong: whether an `shm_kv` zone is configured (default true). Without
    /// one, shared-data calls trap. With one, the Kong profile shows it to
    /// filters as the property `kong.configuration.nginx_wasm_shm_kv_<name>`.
    pub fn shared_data_zone(mut self, on: bool) -> Self {
        self.settings.shared_data_zone = on;
        self
    }

    /// Kong: the name of the configured `shm_kv` zone (default `kong_retry`),
    /// i.e. which `kong.configuration.nginx_wasm_shm_kv_<name>` property exists.
    pub fn shared_data_zone_name(mut self, name: &str) -> Self {
        self.settings.shared_data_zone_name = name.to_string();
        self
    }

    /// Kong: `client_body_buffer_size` (default 8192); larger bodies are
    /// spilled to a file and unreadable by the filter.
    pub fn body_buffer_size(mut self, bytes: usize) -> Self {
        self.settings.body_buffer_size = bytes;
        self
    }

    /// Sets a property (path parts joined as the ABI does); overrides defaults.
    pub fn property(mut self, path: &[&str], value: impl Into<Vec<u8>>) -> Self {
        self.settings.properties.push((
            path.iter().map(|s| s.to_string()).collect(),
            Some(value.into()),
        ));
        self
    }

    /// Removes a default property (e.g. to model a Kong version without it).
    pub fn without_property(mut self, path: &[&str]) -> Self {
        self.settings
            .properties
            .push((path.iter().map(|s| s.to_string()).collect(), None));
        self
    }

    /// Envoy: a cluster name dispatches may target.
    pub fn cluster(mut self, name: &str) -> Self {
        self.settings.clusters.push(name.to_string());
        self
    }

    /// Where the proxy's own path forwards (`host:port`). Also fills Kong's
    /// `kong.router.service` property.
    pub fn upstream(mut self, host_port: &str) -> Self {
        self.settings.upstream = host_port.to_string();
        self
    }

    /// Seed of the deterministic `random_get`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = seed;
        self
    }

    /// Fuel (≈ wasm instructions) allowed per callback. Default 200 million.
    pub fn fuel_per_callback(mut self, fuel: u64) -> Self {
        self.settings.fuel_per_callback = fuel;
        self
    }

    /// Maximum linear memory per instance. Default 256 MiB.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.settings.memory_limit_bytes = bytes;
        self
    }

    /// The level `proxy_get_log_level` reports. Default Trace (tests see everything).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.settings.log_level = level;
        self
    }

    /// Timeout of the proxy's own forward. Default: Kong 60 s, Envoy 15 s.
    pub fn proxy_timeout_ms(mut self, ms: u64) -> Self {
        self.settings.proxy_timeout_ms = ms;
        self
    }

    /// Starts every worker: instantiate, `on_vm_start`, `on_configure`.
    pub fn build(self) -> Result<Gateway, HostError> {
        let mut settings = self.settings;
        let zone = settings
            .shared_data_zone
            .then_some(settings.shared_data_zone_name.as_str());
        let mut props = default_properties(settings.profile, &settings.upstream, zone);
        props.append(&mut settings.properties);
        settings.properties = props;
        let settings = Arc::new(settings);
        let node = Arc::new(Mutex::new(Node {
            now_ms: 0,
            shared_data: HashMap::new(),
            next_cas: 0,
            metrics: Vec::new(),
            logs: Vec::new(),
            next_call_id: 0,
        }));
        let mut gw = Gateway {
            settings,
            module: self.module,
            node,
            slots: Vec::new(),
            flights: BTreeMap::new(),
            pending: BTreeMap::new(),
            history: Vec::new(),
            traps: Vec::new(),
            next_request: 0,
            root_stats: RequestStats::default(),
            instances_started: 0,
        };
        for index in 0..self.workers {
            let worker = gw.start_worker(index, 0)?;
            gw.slots.push(Slot {
                worker: Some(worker),
                generation: 0,
                next_tick_at: None,
                next_ctx: ROOT_ID + 1,
            });
            gw.reschedule_tick(index);
        }
        Ok(gw)
    }
}

/// Properties each profile provides. Kong (BRIEF): `kong.route_id`,
/// `kong.service_id` (3.4+), `kong.router.route`/`kong.router.service`
/// (3.6+), `kong.route_name`/`kong.service_name` (3.9+), nginx variables as
/// `ngx.<var>`; the read-only `kong.configuration.<key>` namespace
/// (kong/runloop/wasm.lua) shows kong.conf, here only the `shm_kv` zone
/// (`nginx_wasm_shm_kv_<zone>`, the dynamic key that defines it). Envoy:
/// `plugin_name`, `plugin_root_id`, `plugin_vm_id`.
fn default_properties(
    profile: Profile,
    upstream: &str,
    zone: Option<&str>,
) -> Vec<(Vec<String>, Option<Vec<u8>>)> {
    let p = |path: &[&str], v: &str| {
        (
            path.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            Some(v.as_bytes().to_vec()),
        )
    };
    match profile {
        Profile::Kong => {
            let (host, port) = match upstream.rsplit_once(':') {
                Some((h, port)) => (h.to_string(), port.parse::<u16>().unwrap_or(80)),
                None => (upstream.to_string(), 80),
            };
            let service = serde_json::json!({
                "id": "5f1c2bcd-0000-4000-8000-000000000002",
                "name": "test-service",
                "host": host,
                "port": port,
                "protocol": "http",
                "path": null,
                "retries": 5,
                "connect_timeout": 60000,
                "read_timeout": 60000,
                "write_timeout": 60000,
            });
            let route = serde_json::json!({
                "id": "5f1c2bcd-0000-4000-8000-000000000001",
                "name": "test-route",
                "paths": ["/"],
                "service": {"id": "5f1c2bcd-0000-4000-8000-000000000002"},
            });
            let mut props = vec![
                p(&["ngx", "hostname"], "kong-test-host"),
                p(
                    &["kong", "route_id"],
                    "5f1c2bcd-0000-4000-8000-000000000001",
                ),
                p(
                    &["kong", "service_id"],
                    "5f1c2bcd-0000-4000-8000-000000000002",
                ),
                p(&["kong", "route_name"], "test-route"),
                p(&["kong", "service_name"], "test-service"),
                p(&["kong", "router", "route"], &route.to_string()),
                p(&["kong", "router", "service"], &service.to_string()),
            ];
            if let Some(zone) = zone {
                let key = format!("nginx_wasm_shm_kv_{zone}");
                props.push(p(&["kong", "configuration", &key], "4m"));
            }
            props
        }
        Profile::Envoy => vec![
            p(&["plugin_name"], "filter"),
            p(&["plugin_root_id"], ""),
            p(&["plugin_vm_id"], ""),
        ],
    }
}

struct Slot {
    worker: Option<Worker>,
    /// Bumped when the instance is replaced; stale dispatch answers are dropped.
    generation: u64,
    next_tick_at: Option<u64>,
    next_ctx: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    RequestHeaders,
    AwaitRequestHeaders,
    RequestBody,
    AwaitRequestBody,
    Proxy,
    AwaitUpstream(CallId),
    ResponseHeaders,
    AwaitResponseHeaders,
    ResponseBody,
    AwaitResponseBody,
    Log,
    Done,
}

impl Stage {
    fn runnable(self) -> bool {
        matches!(
            self,
            Stage::RequestHeaders
                | Stage::RequestBody
                | Stage::Proxy
                | Stage::ResponseHeaders
                | Stage::ResponseBody
                | Stage::Log
        )
    }
}

/// A response as produced before the filter's response phases touched it.
#[derive(Debug, Clone)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    source: Source,
}

struct Flight {
    worker: usize,
    ctx: u32,
    generation: u64,
    stage: Stage,
    request: Request,
    source: Source,
    raw: Option<RawResponse>,
    /// The instance trapped while the forward was in flight: relay untouched.
    filter_gone: bool,
    response: Option<ClientResponse>,
    stats: RequestStats,
}

struct PendingCall {
    call: UpstreamCall,
    ctx: u32,
    generation: u64,
}

/// A gateway node running one filter module under a profile's rules.
pub struct Gateway {
    settings: Arc<Settings>,
    module: WasmModule,
    node: Arc<Mutex<Node>>,
    slots: Vec<Slot>,
    flights: BTreeMap<RequestId, Flight>,
    pending: BTreeMap<CallId, PendingCall>,
    history: Vec<UpstreamCall>,
    traps: Vec<Trap>,
    next_request: u64,
    root_stats: RequestStats,
    instances_started: u64,
}

const MAX_RUN_STEPS: usize = 10_000;
const MAX_RUN_FAKE_MS: u64 = 3_600_000;

impl Gateway {
    /// Starts building a gateway for `module` under `profile`.
    pub fn builder(profile: Profile, module: &WasmModule) -> GatewayBuilder {
        GatewayBuilder {
            settings: Settings {
                profile,
                plugin_config: Vec::new(),
                vm_config: Vec::new(),
                properties: Vec::new(),
                clusters: Vec::new(),
                upstream: "127.0.0.1:8080".to_string(),
                shared_data_zone: true,
                shared_data_zone_name: "kong_retry".to_string(),
                body_buffer_size: 8192,
                fuel_per_callback: 200_000_000,
                memory_limit_bytes: 256 << 20,
                log_level: LogLevel::Trace,
                seed: 0,
                proxy_timeout_ms: profile.default_proxy_timeout_ms(),
            },
            module: module.clone(),
            workers: 1,
        }
    }

    fn node(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_worker(&mut self, index: usize, generation: u64) -> Result<Worker, HostError> {
        self.instances_started += 1;
        Worker::start(
            index,
            self.settings.clone(),
            self.node.clone(),
            &self.module.module,
            generation,
        )
    }

    fn reschedule_tick(&mut self, w: usize) {
        let now = self.now_ms();
        let Some(slot) = self.slots.get_mut(w) else {
            return;
        };
        let Some(worker) = slot.worker.as_mut() else {
            slot.next_tick_at = None;
            return;
        };
        let state = worker.store.data_mut();
        if state.tick_changed {
            state.tick_changed = false;
            slot.next_tick_at = state.tick_period_ms.map(|p| now + p);
        }
    }

    /// The profile this gateway follows.
    pub fn profile(&self) -> Profile {
        self.settings.profile
    }

    /// Where the proxy's own path forwards (`host:port`).
    pub fn upstream(&self) -> &str {
        &self.settings.upstream
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    /// The fake clock, in ms since the gateway was built.
    pub fn now_ms(&self) -> u64 {
        self.node().now_ms
    }

    /// How many VM instances were started (workers × (1 + re-instantiations)).
    pub fn instances_started(&self) -> u64 {
        self.instances_started
    }

    /// The tick period a worker's root context set, if any.
    pub fn tick_period(&self, worker: usize) -> Option<u64> {
        self.slots
            .get(worker)?
            .worker
            .as_ref()?
            .store
            .data()
            .tick_period_ms
    }

    /// Sends a client request to a worker (index taken modulo the worker
    /// count) and runs its phases until it waits for something.
    pub fn send(&mut self, worker: usize, request: Request) -> RequestId {
        let w = worker % self.slots.len();
        self.next_request += 1;
        let rid = RequestId(self.next_request);
        let mut flight = Flight {
            worker: w,
            ctx: 0,
            generation: 0,
            stage: Stage::RequestHeaders,
            request,
            source: Source::Upstream,
            raw: None,
            filter_gone: false,
            response: None,
            stats: RequestStats::default(),
        };
        // Kong (BRIEF): after a trap the next request gets a fresh instance
        // whose root context is configured again.
        if self.slots[w].worker.is_none() {
            let generation = self.slots[w].generation;
            match self.start_worker(w, generation) {
                Ok(worker) => {
                    self.slots[w].worker = Some(worker);
                    self.slots[w].next_ctx = ROOT_ID + 1;
                    self.reschedule_tick(w);
                }
                Err(e) => {
                    self.host_log(
                        w,
                        crate::LogLevel::Error,
                        format!("cannot start instance: {e}"),
                    );
                    let (status, headers, body) = self.profile().trap_response();
                    flight.response = Some(ClientResponse {
                        status,
                        headers,
                        body,
                        source: Source::Gateway,
                        trapped: true,
                        framing_error: false,
                    });
                    flight.stage = Stage::Done;
                    self.flights.insert(rid, flight);
                    return rid;
                }
            }
        }
        let slot = &mut self.slots[w];
        let ctx = slot.next_ctx;
        slot.next_ctx += 1;
        flight.ctx = ctx;
        flight.generation = slot.generation;
        let profile = self.settings.profile;
        let req = &flight.request;
        let mut req_headers = vec![
            (":authority".to_string(), req.authority.clone()),
            (":method".to_string(), req.method.clone()),
            (":path".to_string(), req.path.clone()),
            (":scheme".to_string(), req.scheme.clone()),
        ];
        req_headers.extend(req.wire_headers());
        let stream = Stream {
            request: Some(rid),
            req_headers,
            req_body: req.body.clone(),
            req_body_spilled: profile
                .request_body_spilled(req.body.len(), self.settings.body_buffer_size),
            ..Stream::default()
        };
        if let Some(worker) = slot.worker.as_mut() {
            worker.store.data_mut().streams.insert(ctx, stream);
        }
        self.flights.insert(rid, flight);
        let created = self.callback(
            w,
            Phase::RequestHeaders,
            ctx,
            "proxy_on_context_create",
            &[ctx as i32, ROOT_ID as i32],
        );
        if created.is_ok() {
            self.pump();
        }
        rid
    }

    /// Calls awaiting an answer, oldest first.
    pub fn pending(&self) -> Vec<UpstreamCall> {
        self.pending.values().map(|p| p.call.clone()).collect()
    }

    /// Every upstream call ever made, in order.
    pub fn calls(&self) -> &[UpstreamCall] {
        &self.history
    }

    /// Every trap so far.
    pub fn traps(&self) -> &[Trap] {
        &self.traps
    }

    /// All log lines so far.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.node().logs.clone()
    }

    /// Whether any log line contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.node().logs.iter().any(|l| l.message.contains(needle))
    }

    /// A metric's value by name.
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.node()
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// All metrics, in definition order.
    pub fn metrics(&self) -> Vec<(String, u64)> {
        self.node()
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect()
    }

    /// A shared-data value.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.node().shared_data.get(key).map(|(v, _)| v.clone())
    }

    /// Seeds or overwrites a shared-data value (as another node would).
    pub fn set_shared_data(&mut self, key: &str, value: &[u8]) {
        let mut node = self.node();
        node.next_cas = node.next_cas.wrapping_add(1).max(1);
        let cas = node.next_cas;
        node.shared_data
            .insert(key.to_string(), (value.to_vec(), cas));
    }

    /// The response the client got, once the request is complete.
    pub fn response(&self, rid: RequestId) -> Option<ClientResponse> {
        self.flights.get(&rid)?.response.clone()
    }

    /// Fuel (≈ wasm instructions) the filter spent on a request.
    pub fn fuel_used(&self, rid: RequestId) -> Option<u64> {
        Some(self.flights.get(&rid)?.stats.fuel)
    }

    /// Cost of a request: fuel, callbacks, host calls, bytes copied.
    pub fn stats(&self, rid: RequestId) -> Option<RequestStats> {
        Some(self.flights.get(&rid)?.stats)
    }

    /// Cost of root-context work (start-up excluded): ticks, root dispatches.
    pub fn root_stats(&self) -> RequestStats {
        self.root_stats
    }

    /// Answers a pending call. The reply's `after_ms` is ignored here.
    pub fn answer(&mut self, id: CallId, reply: Reply) -> Result<(), HostError> {
        let pending = self.pending.remove(&id).ok_or(HostError::UnknownCall(id))?;
        match pending.call.kind {
            CallKind::Proxied => self.answer_proxied(&pending, reply),
            CallKind::Dispatch { token, .. } => self.answer_dispatch(&pending, token, reply),
        }
        self.pump();
        Ok(())
    }

    /// The time of the next tick or call timeout, if any.
    pub fn next_timer_ms(&self) -> Option<u64> {
        let ticks = self
            .slots
            .iter()
            .filter(|s| s.worker.is_some())
            .filter_map(|s| s.next_tick_at);
        let timeouts = self
            .pending
            .values()
            .map(|p| p.call.sent_at_ms.saturating_add(p.call.timeout_ms));
        ticks.chain(timeouts).min()
    }

    /// Advances the fake clock, firing ticks (per worker, per period) and call
    /// timeouts in time order.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now_ms().saturating_add(ms);
        while let Some(t) = self.next_timer_ms() {
            if t > target {
                break;
            }
            self.node().now_ms = t.max(self.now_ms());
            self.fire_timers();
        }
        self.node().now_ms = target;
    }

    fn fire_timers(&mut self) {
        let now = self.now_ms();
        for w in 0..self.slots.len() {
            let due = self.slots[w].worker.is_some()
                && self.slots[w].next_tick_at.is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            let period = self.slots[w]
                .worker
                .as_ref()
                .and_then(|x| x.store.data().tick_period_ms);
            self.slots[w].next_tick_at = period.map(|p| now + p);
            // Kong (BRIEF): on_tick fires in every worker, on its root context.
            let _ = self.callback(w, Phase::Tick, ROOT_ID, "proxy_on_tick", &[ROOT_ID as i32]);
            self.pump();
        }
        let expired: Vec<CallId> = self
            .pending
            .values()
            .filter(|p| p.call.sent_at_ms.saturating_add(p.call.timeout_ms) <= now)
            .map(|p| p.call.id)
            .collect();
        for id in expired {
            let _ = self.answer(id, Reply::failure(Failure::Timeout));
        }
    }

    /// Drives one request to completion: new pending calls are answered by
    /// `upstream`; when nothing is pending the clock advances to the next
    /// timer or delayed answer. Errors instead of hanging.
    pub fn run(
        &mut self,
        request: Request,
        upstream: impl FnMut(&UpstreamCall) -> Reply,
    ) -> Result<Exchange, HostError> {
        self.run_on(0, request, upstream)
    }

    /// [`Gateway::run`] on a given worker.
    pub fn run_on(
        &mut self,
        worker: usize,
        request: Request,
        mut upstream: impl FnMut(&UpstreamCall) -> Reply,
    ) -> Result<Exchange, HostError> {
        let start_ms = self.now_ms();
        let rid = self.send(worker, request);
        let mut seen: HashSet<CallId> = HashSet::new();
        let mut scheduled: Vec<(u64, CallId, Reply)> = Vec::new();
        for step in 0..MAX_RUN_STEPS {
            if let Some(response) = self.response(rid) {
                let calls = self
                    .history
                    .iter()
                    .filter(|c| c.request == Some(rid))
                    .cloned()
                    .collect();
                return Ok(Exchange {
                    request: rid,
                    response,
                    calls,
                });
            }
            let fresh: Vec<UpstreamCall> = self
                .pending
                .values()
                .filter(|p| !seen.contains(&p.call.id))
                .map(|p| p.call.clone())
                .collect();
            if !fresh.is_empty() {
                for call in fresh {
                    seen.insert(call.id);
                    let reply = upstream(&call);
                    if reply.delay_ms() == 0 {
                        let _ = self.answer(call.id, reply);
                    } else {
                        scheduled.push((self.now_ms() + reply.delay_ms(), call.id, reply));
                    }
                }
                continue;
            }
            let next_answer = scheduled.iter().map(|(t, _, _)| *t).min();
            let next = match (next_answer, self.next_timer_ms()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => {
                        return Err(HostError::Stuck {
                            request: rid,
                            steps: step,
                            reason: "no response, nothing pending and no timer".to_string(),
                        })
                    }
                },
            };
            if next.saturating_sub(start_ms) > MAX_RUN_FAKE_MS {
                return Err(HostError::Stuck {
                    request: rid,
                    steps: step,
                    reason: format!("no response after {MAX_RUN_FAKE_MS} ms of fake time"),
                });
            }
            let now = self.now_ms();
            self.advance(next.saturating_sub(now));
            let now = self.now_ms();
            let (due, later): (Vec<_>, Vec<_>) =
                scheduled.into_iter().partition(|(t, _, _)| *t <= now);
            scheduled = later;
            for (_, id, reply) in due {
                if self.pending.contains_key(&id) {
                    let _ = self.answer(id, reply);
                }
            }
        }
        Err(HostError::Stuck {
            request: rid,
            steps: MAX_RUN_STEPS,
            reason: "step limit reached".to_string(),
        })
    }

    fn host_log(&self, worker: usize, level: LogLevel, message: String) {
        self.node().logs.push(LogEntry {
            worker,
            context_id: 0,
            level,
            message,
        });
    }

    /// The request of a context of the worker's current instance (context ids
    /// restart with each instance, so the generation disambiguates).
    fn flight_of(&self, w: usize, ctx: u32) -> Option<RequestId> {
        let generation = self.slots.get(w)?.generation;
        self.flights
            .iter()
            .rev()
            .find(|(_, f)| f.worker == w && f.ctx == ctx && f.generation == generation)
            .map(|(id, _)| *id)
    }

    fn live_flight_of(&self, w: usize, ctx: u32) -> Option<RequestId> {
        self.flight_of(w, ctx)
            .filter(|id| self.flights.get(id).is_some_and(|f| f.stage != Stage::Done))
    }

    fn stream_mut(&mut self, w: usize, ctx: u32) -> Option<&mut Stream> {
        self.slots
            .get_mut(w)?
            .worker
            .as_mut()?
            .store
            .data_mut()
            .streams
            .get_mut(&ctx)
    }

    /// Runs one callback, books its cost, applies its effects, handles a trap.
    fn callback(
        &mut self,
        w: usize,
        phase: Phase,
        ctx: u32,
        export: &str,
        args: &[i32],
    ) -> Result<Option<i32>, ()> {
        let Some(worker) = self.slots.get_mut(w).and_then(|s| s.worker.as_mut()) else {
            return Err(());
        };
        let result = worker.call(phase, ctx, export, args);
        let state = worker.store.data_mut();
        let effects = std::mem::take(&mut state.effects);
        let stats = std::mem::take(&mut state.stats);
        let fuel = std::mem::take(&mut state.fuel_used);
        let rid = if ctx == ROOT_ID {
            None
        } else {
            self.flight_of(w, ctx)
        };
        let book = match rid.and_then(|r| self.flights.get_mut(&r)) {
            Some(f) => &mut f.stats,
            None => &mut self.root_stats,
        };
        book.fuel += fuel;
        book.callbacks += 1;
        book.host_calls += stats.host_calls;
        book.bytes_to_guest += stats.bytes_to_guest;
        book.bytes_from_guest += stats.bytes_from_guest;
        book.shared_data_gets += stats.shared_data_gets;
        book.shared_data_sets += stats.shared_data_sets;
        self.reschedule_tick(w);
        match result {
            Ok(v) => {
                self.apply_effects(w, effects);
                Ok(v)
            }
            Err(trap) => {
                // Dispatches sent before the trap did reach the upstream.
                for e in effects {
                    if let Effect::Dispatch { call, .. } = e {
                        self.history.push(call);
                    }
                }
                self.on_trap(w, trap, rid);
                Err(())
            }
        }
    }

    fn apply_effects(&mut self, w: usize, effects: Vec<Effect>) {
        let generation = self.slots[w].generation;
        for effect in effects {
            match effect {
                Effect::Dispatch { ctx, call } => {
                    self.history.push(call.clone());
                    self.pending.insert(
                        call.id,
                        PendingCall {
                            call,
                            ctx,
                            generation,
                        },
                    );
                }
                Effect::Continue { ctx } => {
                    let Some(rid) = self.live_flight_of(w, ctx) else {
                        continue;
                    };
                    let after_headers = self.after_request_headers(rid);
                    let Some(f) = self.flights.get_mut(&rid) else {
                        continue;
                    };
                    f.stage = match f.stage {
                        Stage::AwaitRequestHeaders => after_headers,
                        Stage::AwaitRequestBody => Stage::Proxy,
                        Stage::AwaitResponseHeaders => Stage::ResponseBody,
                        Stage::AwaitResponseBody => Stage::Log,
                        other => other,
                    };
                }
                Effect::LocalResponse {
                    ctx,
                    status,
                    headers,
                    body,
                    rule,
                } => self.apply_local_response(w, ctx, status, headers, body, rule),
            }
        }
    }

    fn after_request_headers(&self, rid: RequestId) -> Stage {
        let Some(f) = self.flights.get(&rid) else {
            return Stage::Done;
        };
        let headers = f.request.wire_headers();
        if self
            .profile()
            .has_request_body(&headers, f.request.body.len())
        {
            Stage::RequestBody
        } else {
            Stage::Proxy
        }
    }

    fn apply_local_response(
        &mut self,
        w: usize,
        ctx: u32,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        rule: LocalResponseRule,
    ) {
        let profile = self.profile();
        let Some(rid) = self.live_flight_of(w, ctx) else {
            return;
        };
        let body = profile.local_response_body(&body);
        let mut raw = RawResponse {
            status,
            headers: Vec::new(),
            body: body.clone(),
            source: Source::Local,
        };
        let Some(stream) = self.stream_mut(w, ctx) else {
            return;
        };
        match rule {
            LocalResponseRule::ReplaceStatusAndBody => {
                // Kong in on_response_headers: status and body replaced, headers
                // argument ignored, upstream headers (stale content-length) kept.
                stream.resp_headers.retain(|(k, _)| k != ":status");
                stream
                    .resp_headers
                    .insert(0, (":status".to_string(), status.to_string()));
                stream.resp_body = body;
                raw.headers = stream
                    .resp_headers
                    .iter()
                    .filter(|(k, _)| !k.starts_with(':'))
                    .cloned()
                    .collect();
            }
            _ => {
                let hs = profile.local_response_headers(&headers, body.len());
                raw.headers = hs.clone();
                stream.resp_headers = vec![(":status".to_string(), status.to_string())];
                stream.resp_headers.extend(hs);
                stream.resp_body = body;
            }
        }
        stream.has_response = true;
        let Some(f) = self.flights.get_mut(&rid) else {
            return;
        };
        if let Stage::AwaitUpstream(call) = f.stage {
            self.pending.remove(&call);
        }
        f.source = Source::Local;
        f.raw = Some(raw);
        f.stage = match (profile, rule) {
            (_, LocalResponseRule::ReplaceStatusAndBody) => Stage::Log,
            // Kong (BRIEF, real host): after a local response the filter's
            // response headers, response body (once, whole) and log run.
            (Profile::Kong, _) => Stage::ResponseHeaders,
            (Profile::Envoy, _) => Stage::Log,
        };
        if profile == Profile::Kong {
            // ngx_proxy_wasm_host.c: "local response produced, cancelling
            // pending dispatch calls".
            self.pending
                .retain(|_, p| !(p.call.worker == w && p.ctx == ctx && p.call.is_dispatch()));
        }
    }

    fn on_trap(&mut self, w: usize, trap: TrapInfo, rid: Option<RequestId>) {
        self.traps.push(Trap {
            worker: w,
            phase: trap.phase.name(),
            request: rid,
            message: trap.message.clone(),
        });
        self.host_log(
            w,
            LogLevel::Critical,
            format!("{} trapped: {}", trap.phase.name(), trap.message),
        );
        // The instance is gone: every request it carried loses its filter
        // (BRIEF: on_log is not called; the next request gets a fresh instance).
        let slot = &mut self.slots[w];
        slot.worker = None;
        slot.generation += 1;
        slot.next_tick_at = None;
        self.pending
            .retain(|_, p| !(p.call.worker == w && p.call.is_dispatch()));
        let profile = self.profile();
        let ids: Vec<RequestId> = self
            .flights
            .iter()
            .filter(|(_, f)| f.worker == w && f.stage != Stage::Done)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(f) = self.flights.get_mut(&id) else {
                continue;
            };
            if let Stage::AwaitUpstream(_) = f.stage {
                f.filter_gone = true;
                continue;
            }
            let raw = f.raw.clone().unwrap_or_else(|| {
                let (status, headers, body) = profile.trap_response();
                RawResponse {
                    status,
                    headers,
                    body,
                    source: Source::Gateway,
                }
            });
            f.response = Some(finish(raw, true));
            f.stage = Stage::Done;
        }
    }

    /// Runs runnable stages until every request waits or is done.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let next = self
                .flights
                .iter()
                .find(|(_, f)| f.stage.runnable())
                .map(|(id, _)| *id);
            let Some(rid) = next else { return };
            self.step(rid);
        }
    }

    fn step(&mut self, rid: RequestId) {
        let profile = self.profile();
        let Some(f) = self.flights.get(&rid) else {
            return;
        };
        let (w, ctx, stage) = (f.worker, f.ctx, f.stage);
        let set = |gw: &mut Gateway, s: Stage| {
            if let Some(f) = gw.flights.get_mut(&rid) {
                f.stage = s;
            }
        };
        let unchanged = |gw: &Gateway| gw.flights.get(&rid).map(|f| f.stage) == Some(stage);
        match stage {
            Stage::RequestHeaders => {
                let (n, body_len) = match self.stream_mut(w, ctx) {
                    Some(s) => (s.req_headers.len(), s.req_body.len()),
                    None => return set(self, Stage::Done),
                };
                let eos = profile.request_headers_end_of_stream(body_len);
                let r = self.callback(
                    w,
                    Phase::RequestHeaders,
                    ctx,
                    "proxy_on_request_headers",
                    &[ctx as i32, n as i32, eos as i32],
                );
                let Ok(action) = r else { return };
                if !unchanged(self) {
                    return;
                }
                let next = self.after_request_headers(rid);
                if action == Some(1) && profile.pause_waits(Phase::RequestHeaders) {
                    // Envoy: StopIteration holds the headers, not the body.
                    if next == Stage::RequestBody && !profile.headers_pause_holds_body() {
                        set(self, Stage::RequestBody);
                    } else {
                        set(self, Stage::AwaitRequestHeaders);
                    }
                } else {
                    set(self, next);
                }
            }
            Stage::RequestBody => {
                let len = self
                    .stream_mut(w, ctx)
                    .map(|s| s.req_body.len())
                    .unwrap_or(0);
                // Kong (BRIEF): called once with the whole body, end_of_stream true.
                let r = self.callback(
                    w,
                    Phase::RequestBody,
                    ctx,
                    "proxy_on_request_body",
                    &[ctx as i32, len as i32, 1],
                );
                let Ok(action) = r else { return };
                if !unchanged(self) {
                    return;
                }
                if action == Some(1) && profile.pause_waits(Phase::RequestBody) {
                    set(self, Stage::AwaitRequestBody);
                } else {
                    set(self, Stage::Proxy);
                }
            }
            Stage::Proxy => self.forward(rid),
            Stage::ResponseHeaders => {
                if self.flights.get(&rid).is_some_and(|f| f.filter_gone) {
                    return self.finish_untouched(rid);
                }
                let (n, empty) = match self.stream_mut(w, ctx) {
                    Some(s) => (s.resp_headers.len(), s.resp_body.is_empty()),
                    None => return set(self, Stage::Done),
                };
                let r = self.callback(
                    w,
                    Phase::ResponseHeaders,
                    ctx,
                    "proxy_on_response_headers",
                    &[ctx as i32, n as i32, empty as i32],
                );
                let Ok(action) = r else { return };
                if !unchanged(self) {
                    return;
                }
                if action == Some(1) && profile.pause_waits(Phase::ResponseHeaders) {
                    // Envoy: StopIteration holds the headers, not the body; a
                    // Continue from the body callback lets the response go on.
                    if !empty && !profile.headers_pause_holds_body() {
                        set(self, Stage::ResponseBody);
                    } else {
                        set(self, Stage::AwaitResponseHeaders);
                    }
                } else {
                    set(self, Stage::ResponseBody);
                }
            }
            Stage::ResponseBody => {
                let len = self
                    .stream_mut(w, ctx)
                    .map(|s| s.resp_body.len())
                    .unwrap_or(0);
                // Kong (BRIEF): the body callback runs once with the whole body,
                // also for an empty one; Envoy calls it only when there is data.
                if len == 0 && profile == Profile::Envoy {
                    return set(self, Stage::Log);
                }
                let r = self.callback(
                    w,
                    Phase::ResponseBody,
                    ctx,
                    "proxy_on_response_body",
                    &[ctx as i32, len as i32, 1],
                );
                let Ok(action) = r else { return };
                if !unchanged(self) {
                    return;
                }
                if action == Some(1) && profile.pause_waits(Phase::ResponseBody) {
                    set(self, Stage::AwaitResponseBody);
                } else {
                    set(self, Stage::Log);
                }
            }
            Stage::Log => self.complete(rid),
            _ => {}
        }
    }

    /// The proxy forwards the (possibly modified) request upstream.
    fn forward(&mut self, rid: RequestId) {
        let Some(f) = self.flights.get(&rid) else {
            return;
        };
        let (w, ctx) = (f.worker, f.ctx);
        let (headers, body) = match self.stream_mut(w, ctx) {
            Some(s) => (s.req_headers.clone(), s.req_body.clone()),
            None => return,
        };
        let pseudo = |n: &str| {
            crate::http::find_header(&headers, n)
                .unwrap_or("")
                .to_string()
        };
        let mut node = self.node();
        node.next_call_id += 1;
        let call = UpstreamCall {
            id: CallId(node.next_call_id),
            request: Some(rid),
            worker: w,
            kind: CallKind::Proxied,
            method: pseudo(":method"),
            path: pseudo(":path"),
            authority: pseudo(":authority"),
            headers: headers
                .iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .cloned()
                .collect(),
            body,
            timeout_ms: self.settings.proxy_timeout_ms,
            sent_at_ms: node.now_ms,
        };
        drop(node);
        let id = call.id;
        self.history.push(call.clone());
        let generation = self.slots[w].generation;
        self.pending.insert(
            id,
            PendingCall {
                call,
                ctx,
                generation,
            },
        );
        if let Some(f) = self.flights.get_mut(&rid) {
            f.stage = Stage::AwaitUpstream(id);
        }
    }

    fn answer_proxied(&mut self, pending: &PendingCall, reply: Reply) {
        let Some(rid) = pending.call.request else {
            return;
        };
        let Some(f) = self.flights.get(&rid) else {
            return;
        };
        if f.stage != Stage::AwaitUpstream(pending.call.id) {
            return;
        }
        let (w, ctx) = (f.worker, f.ctx);
        let profile = self.profile();
        let raw = match reply {
            Reply::Response {
                status,
                headers,
                body,
                ..
            }
            | Reply::Truncated {
                status,
                headers,
                body,
                ..
            } => RawResponse {
                status,
                headers,
                body,
                source: Source::Upstream,
            },
            Reply::Failure { failure, .. } => {
                let (status, headers, body) = profile.proxy_failure_response(failure);
                RawResponse {
                    status,
                    headers,
                    body,
                    source: Source::Gateway,
                }
            }
        };
        if let Some(stream) = self.stream_mut(w, ctx) {
            stream.resp_headers = vec![(":status".to_string(), raw.status.to_string())];
            stream.resp_headers.extend(raw.headers.iter().cloned());
            stream.resp_body = raw.body.clone();
            stream.has_response = true;
        }
        if let Some(f) = self.flights.get_mut(&rid) {
            f.source = raw.source;
            f.raw = Some(raw);
            f.stage = Stage::ResponseHeaders;
        }
    }

    fn answer_dispatch(&mut self, pending: &PendingCall, token: u32, reply: Reply) {
        let w = pending.call.worker;
        let ctx = pending.ctx;
        if self.slots[w].generation != pending.generation || self.slots[w].worker.is_none() {
            return;
        }
        if ctx != ROOT_ID && self.live_flight_of(w, ctx).is_none() {
            return;
        }
        let profile = self.profile();
        let kong = profile == Profile::Kong;
        let ok_status = || vec![(":dispatch_status".to_string(), "ok".to_string())];
        let (resp, n, body_size) = match reply {
            Reply::Response {
                status,
                headers,
                body,
                ..
            } => {
                let mut hs = vec![(":status".to_string(), status.to_string())];
                hs.extend(headers);
                let n = hs.len();
                let len = body.len();
                let hidden = if kong { ok_status() } else { Vec::new() };
                (
                    CallResponse {
                        headers: hs,
                        hidden,
                        body,
                        body_readable: true,
                    },
                    n,
                    len,
                )
            }
            // Kong (BRIEF, real host): a dispatch cut off mid-body still reports
            // :status and the announced size (a FIN cut even `:dispatch_status:
            // ok`); reading the body fails.
            Reply::Truncated {
                status,
                headers,
                announced_len,
                body,
                ..
            } if kong => {
                let mut hs = vec![(":status".to_string(), status.to_string())];
                hs.extend(headers);
                let n = hs.len();
                (
                    CallResponse {
                        headers: hs,
                        hidden: ok_status(),
                        body,
                        body_readable: false,
                    },
                    n,
                    announced_len,
                )
            }
            // Envoy's async client reports a body cut off as a reset.
            Reply::Truncated { .. } => (
                CallResponse {
                    headers: Vec::new(),
                    hidden: profile.dispatch_failure_headers(Failure::Reset),
                    body: Vec::new(),
                    body_readable: true,
                },
                0,
                0,
            ),
            Reply::Failure { failure, .. } => (
                CallResponse {
                    headers: Vec::new(),
                    hidden: profile.dispatch_failure_headers(failure),
                    body: Vec::new(),
                    body_readable: true,
                },
                0,
                0,
            ),
        };
        if let Some(worker) = self.slots[w].worker.as_mut() {
            worker.store.data_mut().call_response = Some(resp);
        }
        let _ = self.callback(
            w,
            Phase::CallResponse,
            ctx,
            "proxy_on_http_call_response",
            &[ctx as i32, token as i32, n as i32, body_size as i32, 0],
        );
        if let Some(worker) = self.slots[w].worker.as_mut() {
            worker.store.data_mut().call_response = None;
        }
    }

    /// The filter's instance is gone: the client gets the upstream's answer as is.
    fn finish_untouched(&mut self, rid: RequestId) {
        let Some(f) = self.flights.get_mut(&rid) else {
            return;
        };
        if let Some(raw) = f.raw.clone() {
            f.response = Some(finish(raw, true));
        }
        f.stage = Stage::Done;
    }

    /// Fixes the client's response, then on_log, on_done, on_delete.
    fn complete(&mut self, rid: RequestId) {
        let Some(f) = self.flights.get(&rid) else {
            return;
        };
        let (w, ctx, source) = (f.worker, f.ctx, f.source);
        let Some(stream) = self.stream_mut(w, ctx) else {
            if let Some(f) = self.flights.get_mut(&rid) {
                f.stage = Stage::Done;
            }
            return;
        };
        let status = crate::http::find_header(&stream.resp_headers, ":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
            .unwrap_or(502);
        let headers: Vec<(String, String)> = stream
            .resp_headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .cloned()
            .collect();
        let body = stream.resp_body.clone();
        let framing_error = !framing_ok(&headers, body.len());
        if let Some(f) = self.flights.get_mut(&rid) {
            f.response = Some(ClientResponse {
                status,
                headers,
                body,
                source,
                trapped: false,
                framing_error,
            });
            f.stage = Stage::Done;
        }
        let c = ctx as i32;
        if self
            .callback(w, Phase::Log, ctx, "proxy_on_log", &[c])
            .is_err()
        {
            return;
        }
        if self
            .callback(w, Phase::Done, ctx, "proxy_on_done", &[c])
            .is_err()
        {
            return;
        }
        if self
            .callback(w, Phase::Done, ctx, "proxy_on_delete", &[c])
            .is_err()
        {
            return;
        }
        if let Some(worker) = self.slots[w].worker.as_mut() {
            worker.store.data_mut().streams.remove(&ctx);
        }
        // A finished stream's dispatches are never delivered.
        self.pending
            .retain(|_, p| !(p.call.worker == w && p.ctx == ctx && p.call.is_dispatch()));
    }
}

fn finish(raw: RawResponse, trapped: bool) -> ClientResponse {
    let framing_error = !framing_ok(&raw.headers, raw.body.len());
    ClientResponse {
        status: raw.status,
        headers: raw.headers,
        body: raw.body,
        source: raw.source,
        trapped,
        framing_error,
    }
}
