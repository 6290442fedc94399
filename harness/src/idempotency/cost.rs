//! What gateway idempotency costs one keyed POST: the latency a client sees through a real
//! Envoy (store off, `shared`, `etcd`). Its wasm fuel is in [`super::fuel`] (feature
//! `fuel`: the test host's wasmtime).

use super::{filter_config, keyed_post, Nodes, Store};
use crate::upstream::Upstream;
use crate::HarnessError;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Body of every measured POST.
pub const BODY: &[u8] = br#"{"order":"o-7","amount_cents":1250,"currency":"EUR","note":"x"}"#;

/// Client-side latency of sequential keyed POSTs through one Envoy.
#[derive(Debug, Clone)]
pub struct Latency {
    pub store: Store,
    pub requests: usize,
    /// Sorted, one per measured request.
    pub samples: Vec<Duration>,
}

impl Latency {
    /// The `p`-th percentile (nearest rank).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil() as usize;
        self.samples[rank.clamp(1, self.samples.len()) - 1]
    }

    pub fn mean(&self) -> Duration {
        let total: Duration = self.samples.iter().sum();
        total / (self.samples.len().max(1) as u32)
    }
}

/// Sends `warmup` then `requests` keyed POSTs (a new key each, a new connection each, one
/// after the other) through one Envoy whose filter has idempotency on `store` (or off), and
/// records the client's time from first byte sent to last byte read. Every answer must be
/// the upstream's 200.
/// `upstream` starts the upstream (e.g. [`Upstream::start`]).
pub fn latency(
    wasm: &Path,
    store: Store,
    requests: usize,
    warmup: usize,
    upstream: &dyn Fn() -> Result<Upstream, HarnessError>,
) -> Result<Latency, HarnessError> {
    let config = filter_config(store, &json!({}), &json!({}));
    let nodes = Nodes::start_with(1, wasm, &config, upstream()?)?;
    let node = nodes.node(0);
    let mut samples = Vec::with_capacity(requests);
    for i in 0..warmup + requests {
        let key = format!("cost-{}-{i}", store.name());
        let r = node
            .send(&keyed_post("/orders?id=cost", &key, BODY))
            .map_err(|e| HarnessError::new(format!("{}: request {i}: {e}", store.name())))?;
        if r.status != 200 {
            return Err(HarnessError::new(format!(
                "{}: request {i}: {} {} (log {})",
                store.name(),
                r.status,
                r.text(),
                node.log_path().display()
            )));
        }
        if i >= warmup {
            samples.push(r.elapsed);
        }
    }
    samples.sort();
    Ok(Latency {
        store,
        requests,
        samples,
    })
}
