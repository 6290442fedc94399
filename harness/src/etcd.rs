//! A real etcd (Debian's `etcd-server` 3.4, installed by `scripts/setup.sh`) on loopback, with
//! its own data directory, for the cluster-wide idempotency store. Started with flags (which
//! turn the v3 JSON gateway on), stopped by pid when dropped; can be restarted on the same
//! ports and data to model an etcd that goes away and comes back.

use crate::client::{self, Request};
use crate::ports::{free_port, loopback};
use crate::process::{run_dir, Process};
use crate::HarnessError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long etcd may take to answer `/health` after it starts.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// One single-member etcd on 127.0.0.1.
pub struct Etcd {
    process: Option<Process>,
    client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
    starts: u32,
    /// SIGSTOPped by [`Etcd::pause`]: resumed before it is stopped, so SIGTERM can act.
    paused: bool,
}

/// The etcd binary: `KONG_RETRY_ETCD`, else `etcd` on the PATH.
pub fn binary() -> Result<PathBuf, HarnessError> {
    if let Ok(p) = std::env::var("KONG_RETRY_ETCD") {
        return Ok(PathBuf::from(p));
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join("etcd");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(HarnessError::new(
        "etcd not found on PATH: run ./scripts/setup.sh (it installs Debian's etcd-server)",
    ))
}

impl Etcd {
    /// Starts etcd on two free loopback ports and waits until it is healthy.
    pub fn start() -> Result<Etcd, HarnessError> {
        let port = |what: &str| {
            free_port().map_err(|e| HarnessError::new(format!("a free port for etcd {what}: {e}")))
        };
        let mut etcd = Etcd {
            process: None,
            client: loopback(port("client")?),
            peer: loopback(port("peer")?),
            dir: run_dir("etcd")?,
            starts: 0,
            paused: false,
        };
        etcd.restart()?;
        Ok(etcd)
    }

    /// The client address (`host:port` for the filter's `idempotency.etcd.endpoint`).
    pub fn addr(&self) -> SocketAddr {
        self.client
    }

    /// Stops etcd (SIGTERM, then SIGKILL): calls fail until [`Etcd::restart`].
    pub fn stop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.process = None;
    }

    /// The running etcd's pid (`None` while stopped).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Freezes etcd with SIGSTOP: its sockets stay open and the kernel still completes
    /// connections into its backlog, but nothing is read or answered — an etcd that is
    /// slow without bound — until [`Etcd::resume`] (or drop, which resumes it first).
    pub fn pause(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.signal(libc::SIGSTOP);
            self.paused = true;
        }
    }

    /// Lets a paused etcd run again (SIGCONT); it answers what queued up meanwhile.
    pub fn resume(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.signal(libc::SIGCONT);
        }
        self.paused = false;
    }

    /// (Re)starts etcd on the same ports and data directory and waits until it is healthy.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        if self.paused {
            self.resume();
        }
        self.process = None;
        let bin = binary()?;
        let data = self.dir.join("data");
        let client_url = format!("http://{}", self.client);
        let peer_url = format!("http://{}", self.peer);
        let mut cmd = Command::new(&bin);
        cmd.arg("--name")
            .arg("kong-retry-test")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("kong-retry-test={peer_url}"))
            .arg("--log-outputs")
            .arg("stderr");
        self.starts += 1;
        let log = self.dir.join(format!("etcd-{}.log", self.starts));
        self.process = Some(Process::spawn("etcd", cmd, &log)?);
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> Result<(), HarnessError> {
        let until = Instant::now() + READY_WITHIN;
        loop {
            let req = Request::get("/health").timeout(Duration::from_millis(500));
            if let Ok(r) = client::send(self.client, &req) {
                if r.status == 200 && r.text().contains("true") {
                    return Ok(());
                }
            }
            if let Some(p) = self.process.as_mut() {
                if let Some(status) = p.exited() {
                    return Err(p.failure(&format!("exited ({status}) before it was healthy")));
                }
            }
            if Instant::now() > until {
                let what = format!("not healthy within {READY_WITHIN:?}");
                return Err(match &self.process {
                    Some(p) => p.failure(&what),
                    None => HarnessError::new(what),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// POSTs a v3 JSON-gateway call (`/v3/kv/range`, ...) and returns status and body.
    pub fn call(&self, path: &str, json: &str) -> Result<(u16, String), HarnessError> {
        let req = Request::new("POST", path)
            .header("content-type", "application/json")
            .body(json.as_bytes().to_vec())
            .timeout(Duration::from_secs(5));
        client::send(self.client, &req)
            .map(|r| (r.status, r.text()))
            .map_err(|e| HarnessError::new(format!("etcd {path}: {e}")))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // A stopped process would hold SIGTERM pending until the SIGKILL two seconds later.
        if self.paused {
            self.resume();
        }
    }
}
