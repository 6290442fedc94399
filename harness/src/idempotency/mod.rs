//! Gateway idempotency on real processes: gateway nodes (real Envoys with the filter) in
//! front of one scriptable upstream, sharing one real etcd as the cluster-wide store; the
//! requests a client sends them; and the seeded chaos run ([`chaos`]) built on both.

pub mod chaos;
pub mod cost;
#[cfg(feature = "fuel")]
pub mod fuel;
pub mod rng;

use crate::client::{Request, Response};
use crate::envoy::{Bootstrap, Envoy, WasmFilter};
use crate::etcd::Etcd;
use crate::upstream::Upstream;
use crate::HarnessError;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// The header a replayed response carries (`idempotent-replayed: true`).
pub const REPLAYED: &str = "idempotent-replayed";

/// Where the filter keeps its records, as the config names it; `Off` is the same config
/// without the `idempotency` object (the baseline of the cost figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Off,
    Shared,
    Etcd,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Off => "off",
            Store::Shared => "shared",
            Store::Etcd => "etcd",
        }
    }
}

/// The filter's config: dispatch mode to the `backend` cluster, keyed POSTs retried on
/// 502/503/504, connect failures, timeouts and resets, and (unless `store` is `Off`)
/// `idempotency` on that store with the etcd cluster `etcd`. `idempotency` is merged
/// over the idempotency object (a nested `etcd` object over its `etcd`), `top` over
/// the whole config.
pub fn filter_config(store: Store, idempotency: &Value, top: &Value) -> Value {
    let mut c = json!({
        "mode": "dispatch",
        "upstream": "backend",
        "retries": 2,
        "retry_on": "502,503,504,connect-failure,timeout,reset",
        "per_try_timeout": 1500,
        "deadline": 5000,
        "backoff": { "strategy": "fixed", "interval": 10 },
    });
    if store != Store::Off {
        let mut idem = json!({
            "enabled": true,
            "store": store.name(),
            "lock_timeout": 6000,
            "etcd": { "endpoint": "etcd", "timeout": 500 },
        });
        merge(&mut idem, idempotency);
        c["idempotency"] = idem;
    }
    merge(&mut c, top);
    c
}

/// `over`'s fields replace `base`'s; objects are merged one level deeper.
fn merge(base: &mut Value, over: &Value) {
    let (Some(base), Some(over)) = (base.as_object_mut(), over.as_object()) else {
        return;
    };
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(b @ Value::Object(_)), Value::Object(_)) => merge(b, v),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Gateway nodes sharing one upstream and one etcd.
pub struct Nodes {
    pub etcd: Etcd,
    pub upstream: Upstream,
    pub nodes: Vec<Envoy>,
}

impl Nodes {
    /// Starts etcd, the upstream and `count` Envoys (one worker each, started at once),
    /// each with the filter `wasm` under `config` and clusters `backend` and `etcd`.
    pub fn start(count: usize, wasm: &Path, config: &Value) -> Result<Nodes, HarnessError> {
        Self::start_with(count, wasm, config, Upstream::start()?)
    }

    /// [`Nodes::start`] in front of an upstream the caller started (e.g. a program that
    /// serves as the upstream itself on a subcommand).
    pub fn start_with(
        count: usize,
        wasm: &Path,
        config: &Value,
        upstream: Upstream,
    ) -> Result<Nodes, HarnessError> {
        let etcd = Etcd::start()?;
        let nodes = start_envoys(count, wasm, config, &upstream, &etcd)?;
        Ok(Nodes {
            etcd,
            upstream,
            nodes,
        })
    }

    /// Node `i` (0 = A, 1 = B).
    pub fn node(&self, i: usize) -> &Envoy {
        &self.nodes[i % self.nodes.len()]
    }

    /// Every node's wasm error lines, prefixed with the node's name; empty when clean.
    pub fn wasm_errors(&self) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                n.wasm_errors()
                    .into_iter()
                    .map(move |l| format!("node {}: {l}", node_name(i)))
            })
            .collect()
    }

    /// Sum of a metric over every node (0 where a node does not have it).
    pub fn metric(&self, name: &str) -> Result<f64, HarnessError> {
        let mut total = 0.0;
        for n in &self.nodes {
            total += n.metrics()?.value(name);
        }
        Ok(total)
    }

    /// Every `kong_retry_idempotency*` / `kong_retry_idem*` sample name and value summed
    /// over the nodes, for reports.
    pub fn idempotency_metrics(&self) -> Result<Vec<(String, f64)>, HarnessError> {
        let mut totals: std::collections::BTreeMap<String, f64> = Default::default();
        for n in &self.nodes {
            for s in n.metrics()?.samples {
                if s.name.starts_with("kong_retry_idem") {
                    *totals.entry(s.name).or_default() += s.value;
                }
            }
        }
        Ok(totals.into_iter().collect())
    }
}

/// `A`, `B`, ...
pub fn node_name(i: usize) -> char {
    char::from(b'A' + (i % 26) as u8)
}

/// Starts `count` Envoys at once in front of `upstream`, with the `etcd` cluster.
pub fn start_envoys(
    count: usize,
    wasm: &Path,
    config: &Value,
    upstream: &Upstream,
    etcd: &Etcd,
) -> Result<Vec<Envoy>, HarnessError> {
    let b = Bootstrap::new(&[upstream.addr()])
        .cluster("etcd", etcd.addr())
        .filter(WasmFilter::kong_retry(wasm, &config.to_string()));
    let started: Vec<Result<Envoy, HarnessError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..count).map(|_| s.spawn(|| Envoy::start(&b))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(HarnessError::new("starting Envoy panicked")))
            })
            .collect()
    });
    started.into_iter().collect()
}

/// A POST with `idempotency-key: key` and these body bytes.
pub fn keyed_post(path: &str, key: &str, body: &[u8]) -> Request {
    Request::new("POST", path)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .timeout(Duration::from_secs(15))
}

/// Did the gateway replay this response from its store?
pub fn replayed(r: &Response) -> bool {
    r.header(REPLAYED)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `Retry-After` in whole seconds, when it is one.
pub fn retry_after_secs(r: &Response) -> Option<u64> {
    r.header("retry-after").and_then(|v| v.trim().parse().ok())
}

/// A problem+json answer (the gateway's own 400/409/422/503).
pub fn is_problem(r: &Response) -> bool {
    r.header("content-type")
        .is_some_and(|v| v.starts_with("application/problem+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_merges_over_the_idempotency_defaults() {
        let c = filter_config(
            Store::Etcd,
            &json!({"on_store_unavailable": "deny", "etcd": {"timeout": 200}}),
            &json!({"retries": 0}),
        );
        assert_eq!(c["idempotency"]["store"], "etcd");
        assert_eq!(c["idempotency"]["etcd"]["endpoint"], "etcd");
        assert_eq!(c["idempotency"]["etcd"]["timeout"], 200);
        assert_eq!(c["idempotency"]["on_store_unavailable"], "deny");
        assert_eq!(c["retries"], 0);
        assert!(filter_config(Store::Off, &json!({}), &json!({}))
            .get("idempotency")
            .is_none());
    }
}
