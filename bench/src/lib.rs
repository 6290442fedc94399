//! What the kong_retry filter costs per request, measured on the proxy-wasm test host with
//! the real `.wasm`: wasm fuel (≈ instructions), host calls, bytes copied across the
//! host/guest boundary and callbacks, for each mode, on the happy path and for a request
//! retried once (503, then 200).
//!
//! These are counts, not timings: the same `.wasm` and the same scenario give the same
//! numbers on any machine and in any build profile of this crate. What they leave out
//! (sockets, the proxy's own work) is discussed in `docs/benchmarks.md`.
//!
//! # Adding a mode
//!
//! The scenarios are data: one [`Mode`] entry in [`MODES`] per row group. A mode that
//! needs a filter feature names it in [`Mode::needs`]; when the filter refuses the
//! feature's probe config at configure time, the mode's rows are left out and the report
//! says `<feature>: not available in this build` instead of failing. A goal of the form
//! "mode A costs at most x % of mode B" is one [`Ratio`] in [`RATIOS`].
//!
//! # The floor
//!
//! A gateway without the filter runs no wasm at all, so "no filter" is no row. The floor
//! rows run instead a filter that does nothing (`bench/fixtures/noop-filter`: same SDK,
//! same release profile): what any Rust proxy-wasm filter pays per request for the
//! callbacks and the SDK's context bookkeeping, whatever it does.

use proxy_wasm_test_host::{
    build, CallKind, Exchange, Gateway, HostError, LogLevel, Profile, Reply, Request, RequestStats,
    UpstreamCall, WasmModule,
};
use std::path::{Path, PathBuf};

/// The backend as Kong dispatches see it (`host:port`).
pub const UPSTREAM: &str = "orders.internal:8080";
/// The backend as an Envoy cluster.
pub const CLUSTER: &str = "orders";
/// Kong's loopback delay endpoint (kong/delay-server.conf): how Kong waits between attempts.
pub const DELAY_ENDPOINT: &str = "127.0.0.1:8555";
/// Workers per gateway; requests alternate between them (the real-host figures used 2).
pub const WORKERS: usize = 2;
/// Requests per worker run before measuring, so one-time work (host detection, first
/// allocations, caches) is not charged to the measured requests.
pub const WARMUP_PER_WORKER: usize = 2;
/// Fake-clock time between two requests, ms: 1000 requests take one second of host time,
/// so per-worker caches with a 1 s lifetime expire about once per run (real traffic is
/// denser, so caches hit more often there than here).
pub const GAP_MS: u64 = 1;
/// The level `proxy_get_log_level` reports: a production level (the test host's default,
/// Trace, would charge every request for formatting debug lines nobody reads).
pub const LOG_LEVEL: LogLevel = LogLevel::Info;
/// Measured requests per row unless `--requests` says otherwise.
pub const DEFAULT_REQUESTS: usize = 1000;
/// Body of the PUT request.
pub const PUT_BODY_BYTES: usize = 1024;
/// Body of every upstream answer (the 503 and the 200 alike).
pub const RESPONSE_BODY_BYTES: usize = 128;
/// Added to every mode's config. Fixed backoff, so every retried request waits exactly
/// once (full jitter may draw 0). The retry budget stays on with its defaults, except a
/// floor high enough that every retried request of a row is allowed (each row retries
/// every request, far above the default 20 %): its cost is in every row.
pub const COMMON_CONFIG: &str =
    r#""backoff":{"strategy":"fixed","interval":25},"budget":{"min_retries_per_second":100000}"#;

/// Start of the generated part of `docs/benchmarks.md`.
pub const BEGIN_MARKER: &str = "<!-- kong-retry-bench:begin -->";
/// End of the generated part of `docs/benchmarks.md`.
pub const END_MARKER: &str = "<!-- kong-retry-bench:end -->";

/// A filter feature some modes need; its absence is reported, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `mode: "adaptive"` (a filter built before adaptive mode has none).
    Adaptive,
}

impl Feature {
    /// How the report names it.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Adaptive => "adaptive",
        }
    }

    /// The host and smallest config a build with the feature accepts.
    fn probe(self) -> (Profile, String) {
        match self {
            Feature::Adaptive => (
                Profile::Kong,
                format!(r#"{{"mode":"adaptive","upstream":"{UPSTREAM}"}}"#),
            ),
        }
    }

    /// The line the report prints when the filter refuses the feature.
    pub fn unavailable_line(self) -> String {
        format!("{}: not available in this build", self.name())
    }
}

/// Upstream calls of one request, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Calls {
    /// The proxy's own forward (the filter let the request go natively).
    pub native: u32,
    /// The filter's dispatches to the backend.
    pub dispatch: u32,
    /// Kong: dispatches to the delay endpoint (waiting between attempts).
    pub delay: u32,
}

impl Calls {
    const fn new(native: u32, dispatch: u32, delay: u32) -> Self {
        Calls {
            native,
            dispatch,
            delay,
        }
    }

    /// Counts the calls of one exchange.
    pub fn of(ex: &Exchange) -> Self {
        let mut c = Calls::default();
        for call in &ex.calls {
            match &call.kind {
                CallKind::Proxied => c.native += 1,
                CallKind::Dispatch { upstream, .. } if upstream == DELAY_ENDPOINT => c.delay += 1,
                CallKind::Dispatch { .. } => c.dispatch += 1,
            }
        }
        c
    }

    /// E.g. `1 native + 1 dispatch`.
    pub fn describe(self) -> String {
        let parts: Vec<String> = [
            (self.native, "native"),
            (self.dispatch, "dispatch"),
            (self.delay, "delay"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(" + ")
        }
    }
}

/// Which `.wasm` a mode runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// The kong_retry filter being measured.
    KongRetry,
    /// `bench/fixtures/noop-filter`: the floor (see the crate docs).
    Floor,
}

/// The modules the modes run.
pub struct Filters {
    pub kong_retry: WasmModule,
    /// The floor filter, or why it could not be built (its rows are then left out).
    pub floor: Result<WasmModule, String>,
}

impl Filters {
    fn get(&self, filter: Filter) -> Result<&WasmModule, &str> {
        match filter {
            Filter::KongRetry => Ok(&self.kong_retry),
            Filter::Floor => self.floor.as_ref().map_err(String::as_str),
        }
    }
}

/// One group of rows: a host, a filter config, and what its requests must do.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// Unique, shown in the table, e.g. `Kong dispatch`.
    pub name: &'static str,
    pub profile: Profile,
    pub filter: Filter,
    /// The config's own fields (a JSON object body without braces); [`COMMON_CONFIG`] is added.
    pub config: &'static str,
    /// A filter feature without which the mode is skipped.
    pub needs: Option<Feature>,
    /// Calls per happy request (upstream answers 200).
    pub happy: Calls,
    /// Calls per retried request (503, then 200); `None`: no retried rows for this mode.
    pub retried: Option<Calls>,
}

impl Mode {
    /// The whole plugin config (the floor filter reads none).
    pub fn config_json(&self) -> String {
        match self.filter {
            Filter::KongRetry => format!("{{{},{COMMON_CONFIG}}}", self.config),
            Filter::Floor => String::new(),
        }
    }
}

/// The modes measured, in table order.
pub const MODES: &[Mode] = &[
    Mode {
        name: "Kong dispatch",
        profile: Profile::Kong,
        filter: Filter::KongRetry,
        config: r#""mode":"dispatch","upstream":"orders.internal:8080","delay_endpoint":"127.0.0.1:8555""#,
        needs: None,
        happy: Calls::new(0, 1, 0),
        retried: Some(Calls::new(0, 2, 1)),
    },
    Mode {
        name: "Envoy response",
        profile: Profile::Envoy,
        filter: Filter::KongRetry,
        config: r#""mode":"response","upstream":"orders""#,
        needs: None,
        happy: Calls::new(1, 0, 0),
        retried: Some(Calls::new(1, 1, 0)),
    },
    Mode {
        name: "Envoy dispatch",
        profile: Profile::Envoy,
        filter: Filter::KongRetry,
        config: r#""mode":"dispatch","upstream":"orders""#,
        needs: None,
        happy: Calls::new(0, 1, 0),
        retried: Some(Calls::new(0, 2, 0)),
    },
    // Calm: the route has seen no failure and is in no maintenance window, so requests go
    // natively and the filter only watches. (A 503 here would reach the client and start
    // protection, which is the protected rows' business: no retried rows.)
    Mode {
        name: "Kong adaptive-calm",
        profile: Profile::Kong,
        filter: Filter::KongRetry,
        config: r#""mode":"adaptive","upstream":"orders.internal:8080","delay_endpoint":"127.0.0.1:8555""#,
        needs: Some(Feature::Adaptive),
        happy: Calls::new(1, 0, 0),
        retried: None,
    },
    // Protected from the first request by a maintenance window around the host's fake
    // clock (it starts at 2023-11-14T22:13:20Z), so requests go through dispatch mode.
    Mode {
        name: "Kong adaptive-protected",
        profile: Profile::Kong,
        filter: Filter::KongRetry,
        config: r#""mode":"adaptive","upstream":"orders.internal:8080","delay_endpoint":"127.0.0.1:8555","maintenance_windows":[{"start":"2023-11-14T00:00:00Z","end":"2023-11-15T00:00:00Z"}]"#,
        needs: Some(Feature::Adaptive),
        happy: Calls::new(0, 1, 0),
        retried: Some(Calls::new(0, 2, 1)),
    },
    Mode {
        name: "Kong floor (no-op filter)",
        profile: Profile::Kong,
        filter: Filter::Floor,
        config: "",
        needs: None,
        happy: Calls::new(1, 0, 0),
        retried: None,
    },
    Mode {
        name: "Envoy floor (no-op filter)",
        profile: Profile::Envoy,
        filter: Filter::Floor,
        config: "",
        needs: None,
        happy: Calls::new(1, 0, 0),
        retried: None,
    },
];

/// What `numerator` costs as a share of `denominator` (same request, happy path); with a
/// goal, "at most `goal_percent` % of the fuel".
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    pub numerator: &'static str,
    pub denominator: &'static str,
    pub goal_percent: Option<f64>,
}

/// The ratios the report prints (adaptive mode's design goal: adaptive-calm ≤ 5 % of
/// dispatch mode's fuel; the floor shows how much of that any filter spends).
pub const RATIOS: &[Ratio] = &[
    Ratio {
        numerator: "Kong adaptive-calm",
        denominator: "Kong dispatch",
        goal_percent: Some(5.0),
    },
    Ratio {
        numerator: "Kong floor (no-op filter)",
        denominator: "Kong dispatch",
        goal_percent: None,
    },
];

/// The client request of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `GET /orders/7?expand=items`, no body.
    Get,
    /// `PUT /orders/7` with a [`PUT_BODY_BYTES`] JSON body.
    Put1KiB,
}

impl RequestKind {
    pub const ALL: [RequestKind; 2] = [RequestKind::Get, RequestKind::Put1KiB];

    pub fn label(self) -> &'static str {
        match self {
            RequestKind::Get => "GET",
            RequestKind::Put1KiB => "PUT 1 KiB",
        }
    }

    /// The request as a client sends it.
    pub fn request(self) -> Request {
        let base = |method: &str, path: &str| {
            Request::new(method, path)
                .authority("api.example.com")
                .header("user-agent", "kong-retry-bench/1")
                .header("accept", "application/json")
                .header("x-request-id", "5d9c1a7e-0b7f-4c1e-9a51-3f6f2d1b8c42")
        };
        match self {
            RequestKind::Get => base("GET", "/orders/7?expand=items"),
            RequestKind::Put1KiB => base("PUT", "/orders/7")
                .header("content-type", "application/json")
                .body(json_of_len(PUT_BODY_BYTES, "order")),
        }
    }
}

/// What the upstream does for a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// Answers 200 at once.
    Happy,
    /// Answers the first attempt 503, the next 200, at once.
    Retried,
}

impl UpstreamKind {
    pub fn label(self) -> &'static str {
        match self {
            UpstreamKind::Happy => "200",
            UpstreamKind::Retried => "503, 200",
        }
    }
}

/// One row: a mode, a request, an upstream behaviour, and the calls each request must make.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub mode: &'static Mode,
    pub request: RequestKind,
    pub upstream: UpstreamKind,
    pub expect: Calls,
}

/// All rows, in table order: per mode, happy GET and PUT, then retried GET and PUT.
pub fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for mode in MODES {
        let kinds = [
            (UpstreamKind::Happy, Some(mode.happy)),
            (UpstreamKind::Retried, mode.retried),
        ];
        for (upstream, expect) in kinds {
            let Some(expect) = expect else { continue };
            for request in RequestKind::ALL {
                let expect = envoy_dispatch_with_body(mode, request, upstream).unwrap_or(expect);
                out.push(Scenario {
                    mode,
                    request,
                    upstream,
                    expect,
                });
            }
        }
    }
    out
}

/// Envoy forwards a request's headers before the filter has its body, so in dispatch mode a
/// request with a body takes its first attempt natively, as response mode does (seen on
/// Envoy 1.40; src/adapter/driver/mod.rs `start_exchange`).
fn envoy_dispatch_with_body(
    mode: &Mode,
    request: RequestKind,
    upstream: UpstreamKind,
) -> Option<Calls> {
    if mode.name != "Envoy dispatch" || request != RequestKind::Put1KiB {
        return None;
    }
    Some(match upstream {
        UpstreamKind::Happy => Calls::new(1, 0, 0),
        UpstreamKind::Retried => Calls::new(1, 1, 0),
    })
}

/// A JSON object of exactly `len` bytes (`len` ≥ 32).
fn json_of_len(len: usize, kind: &str) -> Vec<u8> {
    let head = format!(r#"{{"kind":"{kind}","id":7,"pad":""#);
    let tail = "\"}";
    let pad = len.saturating_sub(head.len() + tail.len());
    let mut s = head;
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str(tail);
    s.into_bytes()
}

/// The body of every upstream answer.
pub fn response_body() -> Vec<u8> {
    json_of_len(RESPONSE_BODY_BYTES, "answer")
}

fn upstream_reply(status: u16) -> Reply {
    let body = response_body();
    Reply::status(status)
        .header("content-type", "application/json")
        .header("content-length", &body.len().to_string())
        .header("cache-control", "no-store")
        .body(body)
}

/// The scripted upstream of one request.
fn upstream(kind: UpstreamKind) -> impl FnMut(&UpstreamCall) -> Reply {
    let mut backend_calls = 0u32;
    move |call| {
        if call.upstream() == Some(DELAY_ENDPOINT) {
            // kong/delay-server.conf answers 204 after the asked delay.
            let ms = call
                .path
                .split("ms=")
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            return Reply::status(204).after_ms(ms);
        }
        backend_calls += 1;
        match (kind, backend_calls) {
            (UpstreamKind::Retried, 1) => upstream_reply(503),
            _ => upstream_reply(200),
        }
    }
}

/// Cost summed over the measured requests of a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub fuel: u64,
    pub fuel_max: u64,
    pub callbacks: u64,
    pub host_calls: u64,
    pub bytes_to_guest: u64,
    pub bytes_from_guest: u64,
    pub shared_data_gets: u64,
    pub shared_data_sets: u64,
}

impl Totals {
    fn add(&mut self, s: RequestStats) {
        self.requests += 1;
        self.fuel += s.fuel;
        self.fuel_max = self.fuel_max.max(s.fuel);
        self.callbacks += s.callbacks;
        self.host_calls += s.host_calls;
        self.bytes_to_guest += s.bytes_to_guest;
        self.bytes_from_guest += s.bytes_from_guest;
        self.shared_data_gets += s.shared_data_gets;
        self.shared_data_sets += s.shared_data_sets;
    }

    /// Mean per request.
    pub fn mean(&self, total: u64) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            total as f64 / self.requests as f64
        }
    }

    pub fn fuel_mean(&self) -> f64 {
        self.mean(self.fuel)
    }
    pub fn callbacks_mean(&self) -> f64 {
        self.mean(self.callbacks)
    }
    pub fn host_calls_mean(&self) -> f64 {
        self.mean(self.host_calls)
    }
    pub fn bytes_to_guest_mean(&self) -> f64 {
        self.mean(self.bytes_to_guest)
    }
    pub fn bytes_from_guest_mean(&self) -> f64 {
        self.mean(self.bytes_from_guest)
    }
    pub fn shared_data_gets_mean(&self) -> f64 {
        self.mean(self.shared_data_gets)
    }
    pub fn shared_data_sets_mean(&self) -> f64 {
        self.mean(self.shared_data_sets)
    }
}

/// A measured row. Each of its requests made exactly `scenario.expect` calls ([`measure`]
/// fails otherwise).
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub scenario: Scenario,
    pub totals: Totals,
}

/// Every row measured, and the features the filter does not have.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub unavailable: Vec<Feature>,
    /// Rows left out for other reasons (the floor filter could not be built).
    pub notes: Vec<String>,
}

impl Report {
    /// The row of a mode, request and upstream behaviour.
    pub fn row(&self, mode: &str, request: RequestKind, upstream: UpstreamKind) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.scenario.mode.name == mode
                && r.scenario.request == request
                && r.scenario.upstream == upstream
        })
    }
}

/// A gateway running `mode`'s config.
fn gateway(module: &WasmModule, profile: Profile, config: String) -> Result<Gateway, HostError> {
    Gateway::builder(profile, module)
        .plugin_config(config)
        .workers(WORKERS)
        .upstream(UPSTREAM)
        .cluster(CLUSTER)
        .seed(7)
        .log_level(LOG_LEVEL)
        .build()
}

/// Whether the filter accepts `feature`'s probe config. A configure-time refusal is
/// `Ok(false)`; any other failure of the host is an error.
pub fn available(module: &WasmModule, feature: Feature) -> Result<bool, String> {
    let (profile, config) = feature.probe();
    match gateway(module, profile, config) {
        Ok(_) => Ok(true),
        Err(HostError::Configure { .. }) => Ok(false),
        Err(e) => Err(format!("probing {}: {e}", feature.name())),
    }
}

/// Runs one row: a fresh gateway, [`WARMUP_PER_WORKER`] unmeasured requests per worker,
/// then `requests` measured ones, alternating workers. Every request must end in the
/// upstream's 200 with its exact body, without a trap, after exactly the expected calls;
/// anything else is an error (the numbers would not mean what the table says).
///
/// A request's cost is what the host booked to its context plus all root-context work
/// while it ran (Envoy waits on the root tick and retries from there), gap included.
pub fn measure(module: &WasmModule, scenario: &Scenario, requests: usize) -> Result<Row, String> {
    let mode = scenario.mode;
    let what = format!(
        "{}, {}, upstream {}",
        mode.name,
        scenario.request.label(),
        scenario.upstream.label()
    );
    let mut gw = gateway(module, mode.profile, mode.config_json())
        .map_err(|e| format!("{what}: the filter refused the config: {e}"))?;
    let expected_body = response_body();
    let warmup = WORKERS * WARMUP_PER_WORKER;
    let mut totals = Totals::default();
    for i in 0..warmup + requests {
        let root_before = gw.root_stats();
        let ex = gw
            .run_on(
                i % WORKERS,
                scenario.request.request(),
                upstream(scenario.upstream),
            )
            .map_err(|e| format!("{what}: request {i}: {e}"))?;
        gw.advance(GAP_MS);
        let root = gw.root_stats().since(&root_before);
        if let Some(trap) = gw.traps().first() {
            return Err(format!(
                "{what}: request {i}: the filter trapped in {}: {}",
                trap.phase, trap.message
            ));
        }
        if ex.response.status != 200 || ex.response.body != expected_body {
            return Err(format!(
                "{what}: request {i}: the client got {} with {} body bytes, expected the upstream's 200 with {} bytes",
                ex.response.status,
                ex.response.body.len(),
                expected_body.len()
            ));
        }
        if ex.response.framing_error {
            return Err(format!("{what}: request {i}: response framing error"));
        }
        let calls = Calls::of(&ex);
        if calls != scenario.expect {
            return Err(format!(
                "{what}: request {i}: made {}, expected {}",
                calls.describe(),
                scenario.expect.describe()
            ));
        }
        let mut stats = gw
            .stats(ex.request)
            .ok_or_else(|| format!("{what}: request {i}: the host has no stats"))?;
        if i >= warmup {
            // The root context's work while the request ran counts to the request.
            stats.add(&root);
            totals.add(stats);
        }
    }
    Ok(Row {
        scenario: *scenario,
        totals,
    })
}

/// Measures every row whose mode the filters support, `requests` requests each.
/// `progress` is told each row's name before it runs.
pub fn run_all(
    filters: &Filters,
    requests: usize,
    mut progress: impl FnMut(&str),
) -> Result<Report, String> {
    let mut report = Report::default();
    let mut checked: Vec<(Feature, bool)> = Vec::new();
    for scenario in scenarios() {
        let module = match filters.get(scenario.mode.filter) {
            Ok(m) => m,
            Err(why) => {
                let note = format!("{}: not measured: {why}", scenario.mode.name);
                if !report.notes.contains(&note) {
                    report.notes.push(note);
                }
                continue;
            }
        };
        if let Some(feature) = scenario.mode.needs {
            let ok = match checked.iter().find(|(f, _)| *f == feature) {
                Some((_, ok)) => *ok,
                None => {
                    let ok = available(module, feature)?;
                    checked.push((feature, ok));
                    if !ok {
                        report.unavailable.push(feature);
                    }
                    ok
                }
            };
            if !ok {
                continue;
            }
        }
        progress(&format!(
            "{}, {}, upstream {}",
            scenario.mode.name,
            scenario.request.label(),
            scenario.upstream.label()
        ));
        report.rows.push(measure(module, &scenario, requests)?);
    }
    Ok(report)
}

/// One computed [`Ratio`] for one request kind.
#[derive(Debug, Clone, Copy)]
pub struct RatioResult {
    pub ratio: Ratio,
    pub request: RequestKind,
    /// Percentages of the denominator's mean.
    pub fuel_percent: f64,
    pub host_calls_percent: f64,
    pub bytes_percent: f64,
}

impl RatioResult {
    /// Whether the goal is met (`None`: the ratio has no goal).
    pub fn met(&self) -> Option<bool> {
        self.ratio.goal_percent.map(|g| self.fuel_percent <= g)
    }
}

fn percent(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        100.0 * a / b
    }
}

/// The [`RATIOS`] whose two modes were both measured, per request kind (happy path).
pub fn ratios(report: &Report) -> Vec<RatioResult> {
    let mut out = Vec::new();
    for ratio in RATIOS {
        for request in RequestKind::ALL {
            let (Some(n), Some(d)) = (
                report.row(ratio.numerator, request, UpstreamKind::Happy),
                report.row(ratio.denominator, request, UpstreamKind::Happy),
            ) else {
                continue;
            };
            let (n, d) = (&n.totals, &d.totals);
            out.push(RatioResult {
                ratio: *ratio,
                request,
                fuel_percent: percent(n.fuel_mean(), d.fuel_mean()),
                host_calls_percent: percent(n.host_calls_mean(), d.host_calls_mean()),
                bytes_percent: percent(
                    n.bytes_to_guest_mean() + n.bytes_from_guest_mean(),
                    d.bytes_to_guest_mean() + d.bytes_from_guest_mean(),
                ),
            });
        }
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A mean: a whole number when it is one, else one decimal (three below 1, so that a
/// shared-data read every few hundred requests does not show as 0).
fn mean_text(m: f64) -> String {
    if m > 0.0 && m < 0.95 {
        return format!("{m:.3}");
    }
    let rounded = m.round();
    if (m - rounded).abs() < 0.05 {
        thousands(rounded as u64)
    } else {
        let whole = m.trunc();
        let tenth = ((m - whole) * 10.0).round() as u64;
        if tenth >= 10 {
            thousands(whole as u64 + 1)
        } else {
            format!("{}.{tenth}", thousands(whole as u64))
        }
    }
}

/// Where the numbers came from, printed above the table.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub command: String,
    pub date: String,
    pub machine: String,
    pub filter: String,
    pub revision: String,
    pub requests: usize,
}

/// The generated Markdown: provenance, the table, the ratio lines, unavailable features.
pub fn render(report: &Report, header: &Header) -> String {
    let mut s = String::new();
    s.push_str(&format!("Command: `{}`  \n", header.command));
    s.push_str(&format!("Date (UTC): {}  \n", header.date));
    s.push_str(&format!("Machine: {}  \n", header.machine));
    s.push_str(&format!("Filter: {}  \n", header.filter));
    s.push_str(&format!("Revision: {}  \n", header.revision));
    s.push_str(&format!(
        "Per row: {} measured requests after {} warm-up requests, over {WORKERS} workers; \
         means per request, and the costliest single request's fuel. Request: GET without \
         body or PUT with a {PUT_BODY_BYTES}-byte body; the upstream answers at once with a \
         {RESPONSE_BODY_BYTES}-byte body.\n\n",
        header.requests,
        WORKERS * WARMUP_PER_WORKER
    ));
    s.push_str("| mode | request | upstream | calls per request | fuel | fuel (max) | callbacks | host calls | shared data get / set | bytes host→guest | bytes guest→host |\n");
    s.push_str("|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for row in &report.rows {
        let t = &row.totals;
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            row.scenario.mode.name,
            row.scenario.request.label(),
            row.scenario.upstream.label(),
            row.scenario.expect.describe(),
            thousands(t.fuel_mean().round() as u64),
            thousands(t.fuel_max),
            mean_text(t.callbacks_mean()),
            mean_text(t.host_calls_mean()),
            mean_text(t.shared_data_gets_mean()),
            mean_text(t.shared_data_sets_mean()),
            mean_text(t.bytes_to_guest_mean()),
            mean_text(t.bytes_from_guest_mean()),
        ));
    }
    s.push('\n');
    for note in &report.notes {
        s.push_str(&format!("{note}\n\n"));
    }
    for feature in &report.unavailable {
        s.push_str(&format!(
            "{} (the filter refuses `mode: {}` at configure time; its rows appear once it does not).\n\n",
            feature.unavailable_line(),
            feature.name()
        ));
    }
    let results = ratios(report);
    for r in &results {
        let goal = match (r.ratio.goal_percent, r.met()) {
            (Some(g), Some(true)) => format!(" (goal ≤ {g} %: met)"),
            (Some(g), _) => format!(" (goal ≤ {g} %: NOT met)"),
            (None, _) => String::new(),
        };
        s.push_str(&format!(
            "- {} / {}, {}: fuel {:.1} %{goal}, host calls {:.1} %, bytes copied {:.1} %\n",
            r.ratio.numerator,
            r.ratio.denominator,
            r.request.label(),
            r.fuel_percent,
            r.host_calls_percent,
            r.bytes_percent,
        ));
    }
    if !results.is_empty() {
        s.push('\n');
    }
    s
}

/// `doc` with the text between [`BEGIN_MARKER`] and [`END_MARKER`] replaced by `section`.
pub fn replace_section(doc: &str, section: &str) -> Result<String, String> {
    let begin = doc
        .find(BEGIN_MARKER)
        .ok_or_else(|| format!("marker not found: {BEGIN_MARKER}"))?;
    let after_begin = begin + BEGIN_MARKER.len();
    let end = doc[after_begin..]
        .find(END_MARKER)
        .map(|i| after_begin + i)
        .ok_or_else(|| format!("marker not found after the begin marker: {END_MARKER}"))?;
    let mut out = String::with_capacity(doc.len() + section.len());
    out.push_str(&doc[..after_begin]);
    out.push('\n');
    out.push_str(section.trim_end());
    out.push('\n');
    out.push_str(&doc[end..]);
    Ok(out)
}

/// The repository root (the workspace root).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map_or_else(|| here.to_path_buf(), Path::to_path_buf)
}

/// Loads the filter: `explicit` if given, else `$KONG_RETRY_WASM`, else a fresh build of
/// the workspace's filter (`build::filter_wasm()`, so the numbers are those of the source
/// tree). Returns the module and a label (path relative to the repository, size).
pub fn load_filter(explicit: Option<PathBuf>) -> Result<(WasmModule, String), String> {
    let path = match explicit.or_else(|| std::env::var_os("KONG_RETRY_WASM").map(PathBuf::from)) {
        Some(p) => p,
        None => build::filter_wasm().map_err(|e| e.to_string())?,
    };
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let module = WasmModule::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let root = repo_root();
    let shown = path.strip_prefix(&root).unwrap_or(&path).display();
    Ok((module, format!("`{shown}` ({} KiB)", size.div_ceil(1024))))
}

/// Builds and loads the floor filter (`bench/fixtures/noop-filter`).
pub fn load_floor() -> Result<WasmModule, String> {
    let dir = repo_root()
        .join("bench")
        .join("fixtures")
        .join("noop-filter");
    let path = build::cargo_wasm(&dir).map_err(|e| e.to_string())?;
    WasmModule::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The kong_retry filter ([`load_filter`]) and the floor ([`load_floor`]; a failure to
/// build it only leaves its rows out).
pub fn load_filters(explicit: Option<PathBuf>) -> Result<(Filters, String), String> {
    let (kong_retry, label) = load_filter(explicit)?;
    Ok((
        Filters {
            kong_retry,
            floor: load_floor(),
        },
        label,
    ))
}

/// `YYYY-MM-DD` of a Unix time in seconds (UTC).
pub fn utc_date(unix_seconds: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (unix_seconds / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_formats() {
        assert_eq!(json_of_len(1024, "order").len(), 1024);
        assert_eq!(response_body().len(), RESPONSE_BODY_BYTES);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(mean_text(12.0), "12");
        assert_eq!(mean_text(12.25), "12.3");
        assert_eq!(mean_text(1234.97), "1,235");
        assert_eq!(mean_text(0.0), "0");
        assert_eq!(mean_text(0.002), "0.002");
        assert_eq!(mean_text(0.5), "0.500");
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
    }

    #[test]
    fn section_is_replaced_between_markers_only() {
        let doc = format!("intro\n{BEGIN_MARKER}\nold table\n{END_MARKER}\noutro\n");
        let new = replace_section(&doc, "new table\n\n").unwrap();
        assert_eq!(
            new,
            format!("intro\n{BEGIN_MARKER}\nnew table\n{END_MARKER}\noutro\n")
        );
        // Idempotent.
        assert_eq!(replace_section(&new, "new table").unwrap(), new);
        assert!(replace_section("no markers", "x").is_err());
        assert!(replace_section(&format!("{END_MARKER}{BEGIN_MARKER}"), "x").is_err());
    }

    #[test]
    fn scenario_names_are_unique_and_ratios_name_modes() {
        let all = scenarios();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(
                    !(a.mode.name == b.mode.name
                        && a.request == b.request
                        && a.upstream == b.upstream),
                    "duplicate row {}",
                    a.mode.name
                );
            }
        }
        for r in RATIOS {
            assert!(MODES.iter().any(|m| m.name == r.numerator));
            assert!(MODES.iter().any(|m| m.name == r.denominator));
        }
    }
}
