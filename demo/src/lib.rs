//! The README's demonstration: the real `kong_retry.wasm` on the proxy-wasm test host,
//! once under Kong's rules (dispatch mode) and once under Envoy's (response mode), against
//! a scripted upstream that fails twice and then answers. It prints a short trace of every
//! upstream attempt, every backoff wait and what the client got, and it checks the outcome,
//! so the demo doubles as a smoke check of the filter.
//!
//! Everything runs on the host's fake clock: no sockets, no sleeping, same output every run.

use proxy_wasm_test_host::{
    build, CallKind, Failure, Gateway, HostError, Profile, Reply, Request, UpstreamCall, WasmModule,
};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The repository root (the workspace root).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map_or_else(|| here.to_path_buf(), Path::to_path_buf)
}

/// Loads the filter and says which file it is: `$KONG_RETRY_WASM` when set; else
/// `dist/kong_retry.wasm` when `prefer_dist` and it exists (what `./wasm-build.sh`
/// made); else a fresh build of the workspace's filter (`build::filter_wasm()`).
pub fn load_filter(prefer_dist: bool) -> Result<(WasmModule, String), String> {
    let root = repo_root();
    let dist = root.join("dist").join("kong_retry.wasm");
    let path = if let Some(p) = std::env::var_os("KONG_RETRY_WASM") {
        PathBuf::from(p)
    } else if prefer_dist && dist.is_file() {
        dist
    } else {
        if prefer_dist {
            eprintln!(
                "dist/kong_retry.wasm not found (./wasm-build.sh makes it); building the filter"
            );
        }
        build::filter_wasm().map_err(|e| e.to_string())?
    };
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let module = WasmModule::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let shown = path.strip_prefix(&root).unwrap_or(&path).display();
    Ok((module, format!("{shown} ({} KiB)", size.div_ceil(1024))))
}

/// The Kong profile's loopback delay endpoint: the listener of kong/delay-server.conf and
/// the `delay_endpoint` of kong/kong.yml (not 9901, Envoy's admin port in envoy/envoy.yaml),
/// answered by the scripted upstream after the number of ms the filter asks for.
pub const DELAY_ENDPOINT: &str = "127.0.0.1:8555";
/// The Kong profile's upstream (`host:port`).
pub const KONG_UPSTREAM: &str = "orders.internal:8080";
/// The Envoy profile's cluster.
pub const ENVOY_CLUSTER: &str = "orders";
/// The part of the config both profiles share, as printed (joined with commas).
pub const COMMON_CONFIG: [&str; 3] = [
    r#""retries":3,"retry_on":"gateway-error,connect-failure,timeout,reset""#,
    r#""per_try_timeout":1000,"deadline":5000"#,
    r#""backoff":{"strategy":"exponential","base_interval":25,"max_interval":250}"#,
];

/// The profile-specific part of the config.
pub fn profile_config(profile: Profile) -> String {
    match profile {
        Profile::Kong => format!(
            r#""mode":"dispatch","upstream":"{KONG_UPSTREAM}","delay_endpoint":"{DELAY_ENDPOINT}""#
        ),
        Profile::Envoy => format!(r#""mode":"response","upstream":"{ENVOY_CLUSTER}""#),
    }
}

/// The whole filter config used on `profile`.
pub fn config(profile: Profile) -> String {
    format!(
        "{{{},{}}}",
        profile_config(profile),
        COMMON_CONFIG.join(",")
    )
}

/// The demo could not run at all (as opposed to the filter misbehaving).
#[derive(Debug)]
pub enum DemoError {
    Host(HostError),
    Io(io::Error),
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::Host(e) => write!(f, "test host: {e}"),
            DemoError::Io(e) => write!(f, "writing the trace: {e}"),
        }
    }
}

impl std::error::Error for DemoError {}

impl From<HostError> for DemoError {
    fn from(e: HostError) -> Self {
        DemoError::Host(e)
    }
}

impl From<io::Error> for DemoError {
    fn from(e: io::Error) -> Self {
        DemoError::Io(e)
    }
}

/// What the scripted upstream does on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Answers with this status and body after `ms`.
    Answer {
        status: u16,
        body: &'static str,
        ms: u64,
    },
    /// Nothing listens: connection refused after `ms`.
    Refused { ms: u64 },
}

impl Step {
    fn reply(self) -> Reply {
        match self {
            Step::Answer { status, body, ms } => Reply::status(status)
                .header("content-type", "application/json")
                .body(body)
                .after_ms(ms),
            Step::Refused { ms } => Reply::failure(Failure::Refused).after_ms(ms),
        }
    }

    fn delay_ms(self) -> u64 {
        match self {
            Step::Answer { ms, .. } | Step::Refused { ms } => ms,
        }
    }

    fn describe(self) -> String {
        match self {
            Step::Answer { status, .. } => format!("{status} {}", reason(status)),
            Step::Refused { .. } => "connection refused".to_string(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// One upstream attempt as the upstream saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub number: usize,
    /// Host clock (ms since the gateway started) when the attempt was sent.
    pub sent_at_ms: u64,
    /// Host clock when the scripted upstream answered (or refused).
    pub answered_at_ms: u64,
    /// Made by the proxy itself (Envoy's first attempt in response mode), not by the filter.
    pub proxied: bool,
    pub step: Step,
    /// The `x-retry-attempt` header the upstream saw.
    pub x_retry_attempt: Option<String>,
    pub idempotency_key: Option<String>,
    pub body: Vec<u8>,
}

/// A pause between two attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub from_ms: u64,
    pub ms: u64,
}

/// One request through the gateway.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    pub title: String,
    pub request_body: Vec<u8>,
    pub attempts: Vec<Attempt>,
    pub waits: Vec<Wait>,
    /// Calls to the Kong delay endpoint.
    pub delay_calls: usize,
    /// 0 when the client got no response.
    pub status: u16,
    pub attempts_header: Option<String>,
    pub body: String,
    pub finished_at_ms: u64,
    /// Why the client got no response (the host's driver gave up).
    pub error: Option<String>,
}

/// Both requests' results on one profile.
#[derive(Debug, Clone)]
pub struct ProfileRun {
    pub profile: Profile,
    pub get: ScenarioRun,
    pub post_without_key: ScenarioRun,
    pub post_with_key: ScenarioRun,
    pub metrics: Vec<(String, u64)>,
    pub traps: usize,
}

/// The whole demo: both profiles and every expectation that was not met.
#[derive(Debug, Clone)]
pub struct DemoRun {
    pub profiles: Vec<ProfileRun>,
    pub checks: usize,
    pub failures: Vec<String>,
}

impl DemoRun {
    /// Whether the filter behaved as expected everywhere.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

const GET_BODY: &str = r#"{"order":42,"state":"shipped"}"#;
const PAYMENT: &str = r#"{"amount":1250,"currency":"EUR","reference":"inv-2024-117"}"#;
const CREATED: &str = r#"{"id":"pay_000117","status":"created"}"#;
const MAINTENANCE: &str = r#"{"error":"pod draining"}"#;
const KEY: &str = "\"8e0c6f2a-5b1d-4c3e-9f7a-2d4b6c8e0a13\"";

/// Runs the demo on both profiles, printing the trace to `out`.
pub fn run(
    module: &WasmModule,
    module_label: &str,
    out: &mut dyn Write,
) -> Result<DemoRun, DemoError> {
    writeln!(
        out,
        "kong-retry demo: the real filter on the proxy-wasm test host (fake clock, scripted upstream)"
    )?;
    writeln!(out, "module: {module_label}")?;
    for (i, part) in COMMON_CONFIG.iter().enumerate() {
        let lead = if i == 0 { "config: {" } else { "         " };
        writeln!(out, "{lead}{part},")?;
    }
    writeln!(
        out,
        "         + on Kong:  {}",
        profile_config(Profile::Kong)
    )?;
    writeln!(
        out,
        "         + on Envoy: {}}}",
        profile_config(Profile::Envoy)
    )?;

    let mut checks = Checks::default();
    let mut profiles = Vec::new();
    for profile in [Profile::Kong, Profile::Envoy] {
        let run = run_profile(module, profile)?;
        print_profile(out, &run)?;
        check_profile(&run, &mut checks);
        profiles.push(run);
    }
    writeln!(out)?;
    if checks.failures.is_empty() {
        writeln!(
            out,
            "smoke check: ok ({} expectations met on both profiles)",
            checks.total
        )?;
    } else {
        writeln!(
            out,
            "smoke check: FAILED ({} of {} expectations not met)",
            checks.failures.len(),
            checks.total
        )?;
        for f in &checks.failures {
            writeln!(out, "  - {f}")?;
        }
    }
    Ok(DemoRun {
        profiles,
        checks: checks.total,
        failures: checks.failures,
    })
}

fn run_profile(module: &WasmModule, profile: Profile) -> Result<ProfileRun, DemoError> {
    let mut gw = Gateway::builder(profile, module)
        .plugin_config(config(profile))
        .upstream(KONG_UPSTREAM)
        .cluster(ENVOY_CLUSTER)
        .seed(7)
        .build()?;

    let get = scenario(
        &mut gw,
        "GET /orders/42: the pod answers 503, then is gone, then the new pod answers",
        Request::new("GET", "/orders/42")
            .authority("api.example.com")
            .header("accept", "application/json"),
        &[
            Step::Answer {
                status: 503,
                body: MAINTENANCE,
                ms: 3,
            },
            Step::Refused { ms: 1 },
            Step::Answer {
                status: 200,
                body: GET_BODY,
                ms: 5,
            },
        ],
    )?;
    let post = || {
        Request::new("POST", "/payments")
            .authority("api.example.com")
            .header("content-type", "application/json")
            .body(PAYMENT)
    };
    let failing_once = [
        Step::Answer {
            status: 503,
            body: MAINTENANCE,
            ms: 3,
        },
        Step::Answer {
            status: 201,
            body: CREATED,
            ms: 6,
        },
    ];
    let post_without_key = scenario(
        &mut gw,
        "POST /payments without Idempotency-Key: sent once, the 503 goes to the client",
        post(),
        &failing_once,
    )?;
    let post_with_key = scenario(
        &mut gw,
        "POST /payments with Idempotency-Key: retried, same key and body bytes",
        post().header("idempotency-key", KEY),
        &failing_once,
    )?;
    Ok(ProfileRun {
        profile,
        get,
        post_without_key,
        post_with_key,
        metrics: gw.metrics(),
        traps: gw.traps().len(),
    })
}

fn is_delay_call(call: &UpstreamCall) -> bool {
    call.upstream() == Some(DELAY_ENDPOINT) && call.path.starts_with("/kong-retry/delay")
}

fn delay_ms(path: &str) -> u64 {
    path.split_once("ms=")
        .map(|(_, v)| v.split('&').next().unwrap_or(v))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn scenario(
    gw: &mut Gateway,
    title: &str,
    request: Request,
    script: &[Step],
) -> Result<ScenarioRun, DemoError> {
    let request_body = request.body.clone();
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut delay_calls = 0;
    let result = gw.run(request, |call| {
        if is_delay_call(call) {
            delay_calls += 1;
            return Reply::status(200).after_ms(delay_ms(&call.path));
        }
        let number = attempts.len() + 1;
        let step = script
            .get(number - 1)
            .or(script.last())
            .copied()
            .unwrap_or(Step::Refused { ms: 1 });
        attempts.push(Attempt {
            number,
            sent_at_ms: call.sent_at_ms,
            answered_at_ms: call.sent_at_ms + step.delay_ms(),
            proxied: matches!(call.kind, CallKind::Proxied),
            step,
            x_retry_attempt: call.header("x-retry-attempt").map(str::to_string),
            idempotency_key: call.header("idempotency-key").map(str::to_string),
            body: call.body.clone(),
        });
        step.reply()
    });
    let (response, error) = match result {
        Ok(exchange) => (Some(exchange.response), None),
        Err(e @ HostError::Stuck { .. }) => (None, Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let waits = attempts
        .windows(2)
        .filter(|w| w[1].sent_at_ms > w[0].answered_at_ms)
        .map(|w| Wait {
            from_ms: w[0].answered_at_ms,
            ms: w[1].sent_at_ms - w[0].answered_at_ms,
        })
        .collect();
    Ok(ScenarioRun {
        title: title.to_string(),
        request_body,
        attempts,
        waits,
        delay_calls,
        status: response.as_ref().map_or(0, |r| r.status),
        attempts_header: response
            .as_ref()
            .and_then(|r| r.header("x-kong-retry-attempts"))
            .map(str::to_string),
        body: response.as_ref().map(|r| r.body_text()).unwrap_or_default(),
        finished_at_ms: gw.now_ms(),
        error,
    })
}

fn print_profile(out: &mut dyn Write, run: &ProfileRun) -> io::Result<()> {
    writeln!(out)?;
    match run.profile {
        Profile::Kong => writeln!(
            out,
            "== Kong profile, dispatch mode: the filter sends every attempt itself"
        )?,
        Profile::Envoy => writeln!(
            out,
            "== Envoy profile, response mode: attempt 1 goes Envoy's way, the filter retries"
        )?,
    }
    for s in [&run.get, &run.post_without_key, &run.post_with_key] {
        print_scenario(out, run.profile, s)?;
    }
    let shown: Vec<String> = run
        .metrics
        .iter()
        // The headline counters only; the operator guide explains the rest.
        .filter(|(name, _)| SHOWN_METRICS.contains(&name.as_str()))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if shown.is_empty() {
        writeln!(out, "metrics: none defined by the filter")?;
    } else {
        let mut line = String::from("metrics:");
        for m in shown {
            if line.len() + m.len() > 96 {
                writeln!(out, "{line}")?;
                line = String::from("        ");
            }
            line.push(' ');
            line.push_str(&m);
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Counters the demo prints after each profile's trace.
const SHOWN_METRICS: [&str; 4] = [
    "kong_retry_requests_total",
    "kong_retry_retries_total",
    "kong_retry_retry_success_total",
    "kong_retry_exhausted_total",
];

fn print_scenario(out: &mut dyn Write, profile: Profile, s: &ScenarioRun) -> io::Result<()> {
    writeln!(out, "{}", s.title)?;
    let mechanism = match profile {
        Profile::Kong => "delay endpoint",
        Profile::Envoy => "tick timer",
    };
    for a in &s.attempts {
        if let Some(w) = s.waits.iter().find(|w| w.from_ms + w.ms == a.sent_at_ms) {
            writeln!(
                out,
                "  t={:>4} ms  backoff {} ms ({mechanism})",
                w.from_ms, w.ms
            )?;
        }
        let by = match (a.proxied, profile) {
            (false, _) => "",
            (true, Profile::Kong) => " (by Kong)",
            (true, Profile::Envoy) => " (by Envoy)",
        };
        writeln!(
            out,
            "  t={:>4} ms  attempt {}{by:<11} upstream: {:<24} saw x-retry-attempt: {}",
            a.sent_at_ms,
            a.number,
            a.step.describe(),
            a.x_retry_attempt.as_deref().unwrap_or("-")
        )?;
    }
    if let Some(e) = &s.error {
        return writeln!(
            out,
            "  t={:>4} ms  client got NOTHING: {e}",
            s.finished_at_ms
        );
    }
    let mut body = s.body.trim_end().to_string();
    if body.len() > 40 {
        body.truncate(37);
        body.push_str("...");
    }
    writeln!(
        out,
        "  t={:>4} ms  client got {}, x-kong-retry-attempts: {}, body {body}",
        s.finished_at_ms,
        s.status,
        s.attempts_header.as_deref().unwrap_or("-"),
    )
}

#[derive(Default)]
struct Checks {
    total: usize,
    failures: Vec<String>,
}

impl Checks {
    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.total += 1;
        if !ok {
            self.failures.push(what());
        }
    }
}

fn check_profile(run: &ProfileRun, c: &mut Checks) {
    let p = format!("{:?}", run.profile);
    let g = &run.get;
    c.expect(g.status == 200, || {
        format!("{p} GET: client got {} instead of 200", g.status)
    });
    c.expect(g.body == GET_BODY, || {
        format!("{p} GET: client body {:?} is not the upstream's", g.body)
    });
    c.expect(g.attempts.len() == 3, || {
        format!(
            "{p} GET: {} upstream attempts instead of 3",
            g.attempts.len()
        )
    });
    c.expect(g.attempts_header.as_deref() == Some("3"), || {
        format!(
            "{p} GET: x-kong-retry-attempts {:?} instead of 3",
            g.attempts_header
        )
    });
    let seen: Vec<Option<&str>> = g
        .attempts
        .iter()
        .map(|a| a.x_retry_attempt.as_deref())
        .collect();
    c.expect(seen == [None, Some("2"), Some("3")], || {
        format!("{p} GET: upstream saw x-retry-attempt {seen:?} instead of [-, 2, 3]")
    });

    let n = &run.post_without_key;
    c.expect(n.status == 503, || {
        format!(
            "{p} POST without key: client got {} instead of the upstream's 503",
            n.status
        )
    });
    c.expect(n.attempts.len() == 1, || {
        format!(
            "{p} POST without key: sent {} times instead of once",
            n.attempts.len()
        )
    });

    let k = &run.post_with_key;
    c.expect(k.status == 201, || {
        format!("{p} POST with key: client got {} instead of 201", k.status)
    });
    c.expect(k.attempts.len() == 2, || {
        format!(
            "{p} POST with key: {} upstream attempts instead of 2",
            k.attempts.len()
        )
    });
    c.expect(
        k.attempts
            .iter()
            .all(|a| a.body == k.request_body && a.idempotency_key.as_deref() == Some(KEY)),
        || format!("{p} POST with key: an attempt carried other body bytes or no key"),
    );
    c.expect(run.traps == 0, || {
        format!("{p}: the filter trapped {} time(s)", run.traps)
    });
    // Retries sent = 2 (GET) + 1 (keyed POST).
    let retries = run
        .metrics
        .iter()
        .find(|(name, _)| name == "kong_retry_retries_total")
        .map(|(_, v)| *v);
    c.expect(retries == Some(3), || {
        format!("{p}: kong_retry_retries_total = {retries:?}, expected 3")
    });
}
