//! What tests read back from a gateway (and the one fake they may seed).

use super::{Gateway, LogEntry, RequestStats, Trap};
use crate::http::{ClientResponse, RequestId};
use crate::profile::Profile;

impl Gateway {
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

    /// Kong: why a worker exited at start-up (it is never respawned), if it did.
    pub fn exited(&self, worker: usize) -> Option<&str> {
        self.slots.get(worker)?.exited.as_deref()
    }

    /// Why a request can never be answered (it was sent to an exited worker).
    pub fn hung(&self, rid: RequestId) -> Option<String> {
        let f = self.flights.get(&rid)?;
        if f.stage != super::flight::Stage::Hung {
            return None;
        }
        let reason = self.exited(f.worker).unwrap_or("worker exited");
        Some(format!("worker {} is gone: {reason}", f.worker))
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
        self.node().put_shared_data(key.to_string(), value.to_vec());
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

    /// Cost of root-context work: each instance's start-up, ticks, root
    /// dispatches.
    pub fn root_stats(&self) -> RequestStats {
        self.root_stats
    }
}
