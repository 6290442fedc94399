//! Gateway nodes: real Envoys with one bootstrap, each on its own fixed loopback port, that
//! a rollout drains, stops, kills and starts again where the clients expect them. What a
//! node counted is kept when it goes away.

use crate::gateways::{add_counter, envoy_counters, envoy_retries};
use crate::scenario::Action;
use crate::{err, LabError};
use kong_retry_harness::envoy::{Bootstrap, Envoy};
use kong_retry_harness::ports::{free_port, loopback};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a graceful drain keeps accepting before the listener closes (`--drain-time-s`).
pub const DRAIN_TIME_S: u32 = 1;

/// The gateway nodes of one row.
pub struct GatewayNodes {
    bootstrap: Bootstrap,
    ports: Vec<u16>,
    running: Vec<Option<Envoy>>,
    /// Retries, counters and filter errors of node processes that are gone.
    gone_retries: u64,
    gone_counters: Vec<(String, u64)>,
    gone_errors: Vec<String>,
}

impl GatewayNodes {
    /// Starts `n` nodes from `bootstrap` (its listener port is set per node).
    pub fn start(bootstrap: &Bootstrap, n: usize) -> Result<GatewayNodes, LabError> {
        let mut b = bootstrap.clone();
        b.drain_time_s = Some(DRAIN_TIME_S);
        let mut nodes = GatewayNodes {
            bootstrap: b,
            ports: Vec::new(),
            running: Vec::new(),
            gone_retries: 0,
            gone_counters: Vec::new(),
            gone_errors: Vec::new(),
        };
        for i in 0..n {
            nodes
                .ports
                .push(free_port().map_err(|e| err(format!("free port: {e}")))?);
            nodes.running.push(None);
            nodes.start_node(i)?;
        }
        Ok(nodes)
    }

    /// The nodes' addresses, in the client's order of preference (stable across restarts).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.ports.iter().map(|&p| loopback(p)).collect()
    }

    fn start_node(&mut self, i: usize) -> Result<(), LabError> {
        let (Some(&port), Some(slot)) = (self.ports.get(i), self.running.get_mut(i)) else {
            return Err(err(format!("no gateway node {i}")));
        };
        if slot.is_some() {
            return Ok(());
        }
        let mut b = self.bootstrap.clone();
        b.listener_port = port;
        // The port was just released by the previous process; binding may race its exit.
        let mut last = None;
        for _ in 0..20 {
            match Envoy::start(&b) {
                Ok(e) => {
                    *slot = Some(e);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(err(format!(
            "gateway node {i} on port {port} did not start: {}",
            last.map(|e| e.0).unwrap_or_default()
        )))
    }

    /// Keeps what node `i` counted, before its process goes.
    fn note_going(&mut self, i: usize) {
        let Some(Some(e)) = self.running.get(i) else {
            return;
        };
        self.gone_retries += envoy_retries(e);
        for (name, v) in envoy_counters(e) {
            add_counter(&mut self.gone_counters, &name, v);
        }
        self.gone_errors.extend(e.wasm_errors());
    }

    /// Stops node `i` with `signal`, having noted its counters.
    fn stop_node(&mut self, i: usize, signal: i32) -> Result<(), LabError> {
        self.note_going(i);
        if let Some(mut e) = self.running.get_mut(i).and_then(Option::take) {
            if !e.stop(signal, Duration::from_secs(10)) {
                e.stop(libc::SIGKILL, Duration::from_secs(5));
                return Err(err(format!(
                    "gateway node {i} (pid {}) did not exit within 10 s of signal {signal}; log {}",
                    e.pid(),
                    e.log_path().display()
                )));
            }
        }
        Ok(())
    }

    /// Does `action` (an action on the gateway nodes).
    pub fn act(&mut self, action: Action) -> Result<(), LabError> {
        match action {
            Action::DrainNode(i) => {
                let Some(Some(e)) = self.running.get(i) else {
                    return Err(err(format!("gateway node {i} is not running")));
                };
                let status = e.admin_post("/drain_listeners?graceful")?;
                if status != 200 {
                    return Err(err(format!(
                        "gateway node {i}: POST /drain_listeners?graceful answered {status}"
                    )));
                }
                Ok(())
            }
            Action::StopNode(i) => self.stop_node(i, libc::SIGTERM),
            Action::KillNode(i) => self.stop_node(i, libc::SIGKILL),
            Action::StartNode(i) => self.start_node(i),
            other => Err(err(format!(
                "{} is not an action on the gateway nodes",
                other.label()
            ))),
        }
    }

    /// Retries sent by every node process of this row so far.
    pub fn retries(&self) -> u64 {
        self.gone_retries
            + self
                .running
                .iter()
                .flatten()
                .map(envoy_retries)
                .sum::<u64>()
    }

    /// Retry counters summed over every node process of this row.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut all = self.gone_counters.clone();
        for e in self.running.iter().flatten() {
            for (name, v) in envoy_counters(e) {
                add_counter(&mut all, &name, v);
            }
        }
        all
    }

    /// Wasm errors logged by every node process of this row.
    pub fn filter_errors(&self) -> Vec<String> {
        let mut all = self.gone_errors.clone();
        for e in self.running.iter().flatten() {
            all.extend(e.wasm_errors());
        }
        all
    }
}
