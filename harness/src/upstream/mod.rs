//! Our upstream server as a real process (`kong-retry-upstream`) on loopback, and the
//! test side of it: start it, script it per request (see [`script`]), read back what it
//! saw over its control endpoint.

pub mod cli;
pub mod script;
pub mod server;

use crate::client::{self, Request};
use crate::process::{run_dir, Process};
use crate::HarnessError;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One call the upstream received, as it recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// 1-based, per script id.
    pub n: u64,
    pub method: String,
    pub path: String,
    /// Arrival of the request head, ms since the upstream started.
    pub arrived_ms: f64,
    /// When its answer was written (hang/reset: when it gave up).
    pub answered_ms: f64,
    pub body_len: usize,
    pub body_sha256: String,
    pub key: Option<String>,
    /// The `x-retry-attempt` header the filter sends on retries.
    pub attempt: Option<String>,
    /// The script step it got: a status, `ok`, `hang` or `reset`.
    pub step: String,
}

/// Totals over all ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Requests received whole.
    pub calls: u64,
    /// Requests whose head came and whose body never did.
    pub incomplete: u64,
    /// Per idempotency key: (calls, effects = answers 2xx).
    pub keys: Vec<(String, u64, u64)>,
}

/// How to start a `kong-retry-upstream`.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Listen on this port (default: a free one).
    pub port: Option<u16>,
    /// Append every request received to this file (`server::Options::journal`).
    pub journal: Option<PathBuf>,
    /// SIGTERM drains instead of exiting at once.
    pub graceful: bool,
    /// Arguments before the server's own: for a program that serves as the upstream on a
    /// subcommand (it then calls [`cli::run`]).
    pub leading_args: Vec<String>,
}

/// A running `kong-retry-upstream`; dropping it stops the process.
pub struct Upstream {
    process: Process,
    addr: SocketAddr,
}

/// Where `kong-retry-upstream` was built: `KONG_RETRY_UPSTREAM_BIN`, else beside the
/// running test binary (`target/<profile>/`, which cargo fills for this crate's tests).
pub fn binary() -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os("KONG_RETRY_UPSTREAM_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe =
        std::env::current_exe().map_err(|e| HarnessError::new(format!("current_exe: {e}")))?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("kong-retry-upstream");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(HarnessError::new(format!(
        "kong-retry-upstream not found near {}; build it with `cargo build -p kong-retry-harness --bins` or set KONG_RETRY_UPSTREAM_BIN",
        exe.display()
    )))
}

impl Upstream {
    /// Starts one upstream on a free loopback port.
    pub fn start() -> Result<Upstream, HarnessError> {
        Self::start_binary(&binary()?)
    }

    /// Starts the given `kong-retry-upstream` binary.
    pub fn start_binary(bin: &Path) -> Result<Upstream, HarnessError> {
        Self::start_with(bin, &StartOptions::default())
    }

    /// Starts the given binary as `options` say (a fixed port lets a rollout restart an
    /// instance where its clients expect it).
    pub fn start_with(bin: &Path, options: &StartOptions) -> Result<Upstream, HarnessError> {
        let dir = run_dir("upstream")?;
        let port_file = dir.join("port");
        let mut cmd = Command::new(bin);
        cmd.args(&options.leading_args);
        cmd.arg("--port-file").arg(&port_file);
        if let Some(port) = options.port {
            cmd.args(["--port", &port.to_string()]);
        }
        if let Some(journal) = &options.journal {
            cmd.arg("--journal").arg(journal);
        }
        if options.graceful {
            cmd.arg("--graceful");
        }
        let mut process = Process::spawn("kong-retry-upstream", cmd, &dir.join("upstream.log"))?;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
            {
                return Ok(Upstream {
                    process,
                    addr: crate::ports::loopback(port),
                });
            }
            if process.exited().is_some() {
                return Err(process.failure("exited before listening"));
            }
            if Instant::now() > until {
                return Err(process.failure("no port after 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Graceful stop (needs [`StartOptions::graceful`]): SIGTERM, then it stops accepting,
    /// answers what is in flight and exits; waits up to `limit`. True when it exited.
    pub fn drain(&mut self, limit: Duration) -> bool {
        self.process.signal(libc::SIGTERM);
        self.process.wait_exit(limit)
    }

    /// Abrupt stop: SIGKILL with its connections open; returns once it is gone.
    pub fn kill(&mut self) {
        self.process.signal(libc::SIGKILL);
        self.process.wait_exit(Duration::from_secs(5));
    }

    /// Its address on 127.0.0.1.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn control(&self, path: &str) -> Result<Value, HarnessError> {
        let resp = client::send(self.addr, &Request::get(path))
            .map_err(|e| HarnessError::new(format!("upstream control {path}: {e}")))?;
        serde_json::from_slice(&resp.body).map_err(|e| {
            HarnessError::new(format!("upstream control {path}: {e}: {}", resp.text()))
        })
    }

    /// The calls of script id `id`, in arrival order.
    pub fn calls(&self, id: &str) -> Result<Vec<Call>, HarnessError> {
        let v = self.control(&format!("/_control/calls?id={id}"))?;
        let items = v.as_array().cloned().unwrap_or_default();
        Ok(items.iter().map(call_from).collect())
    }

    /// Totals over all ids.
    pub fn summary(&self) -> Result<Summary, HarnessError> {
        let v = self.control("/_control/summary")?;
        let keys = v["keys"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, c)| {
                        (
                            k.clone(),
                            c["calls"].as_u64().unwrap_or(0),
                            c["effects"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Summary {
            calls: v["calls"].as_u64().unwrap_or(0),
            incomplete: v["incomplete"].as_u64().unwrap_or(0),
            keys,
        })
    }
}

fn call_from(v: &Value) -> Call {
    let text = |k: &str| v[k].as_str().unwrap_or("").to_string();
    Call {
        n: v["n"].as_u64().unwrap_or(0),
        method: text("method"),
        path: text("path"),
        arrived_ms: v["arrived_ms"].as_f64().unwrap_or(0.0),
        answered_ms: v["answered_ms"].as_f64().unwrap_or(0.0),
        body_len: v["body_len"].as_u64().unwrap_or(0) as usize,
        body_sha256: text("body_sha256"),
        key: v["key"].as_str().map(str::to_string),
        attempt: v["attempt"].as_str().map(str::to_string),
        step: text("step"),
    }
}
