//! The VM's counters: defined once per VM by the root context, incremented by requests.
//!
//! Adaptive mode's calm path counts in wasm memory ([`Metrics::add_calm`]) instead of calling
//! the host per request: on Kong every host call of a calm request is a cost the native path
//! does not pay. The root's tick (and any other count) hands those counts to the host.

use super::abi;
use crate::metrics::{retries_by_reason, Counter};
use crate::retry::outcome::Outcome;
use std::collections::BTreeMap;

/// One counter's id, as far as the host gave one.
#[derive(Debug, Clone, Copy, Default)]
enum Slot {
    #[default]
    Undefined,
    Defined(u32),
    /// The host refused (no metrics there): never asked again, counting is a no-op.
    Refused,
}

/// Metric ids of this VM. A host without metrics leaves them undefined; counting is then a
/// no-op, never an error.
#[derive(Default)]
pub struct Metrics {
    fixed: [Slot; Counter::ALL.len()],
    /// Per-reason counters, defined the first time a reason occurs (`5xx` alone would be a
    /// hundred series that stay at zero); found by the outcome, so a retry builds no name.
    by_reason: BTreeMap<Outcome, Option<u32>>,
    /// Counts not yet given to the host (adaptive mode's calm path), by counter index.
    pending: [u32; Counter::ALL.len()],
    /// Whether calm-path counts wait for a flush (adaptive mode, where the root ticks).
    deferred: bool,
}

impl Metrics {
    /// Defines the fixed counters (idempotent); adaptive mode's and gateway idempotency's
    /// own ones only when on, so that other configs do not export series that stay at zero.
    pub fn define(&mut self, adaptive: bool, idempotency: bool) {
        self.flush();
        self.deferred = adaptive;
        for c in Counter::ALL {
            if (adaptive || !c.adaptive_only()) && (idempotency || !c.idempotency_only()) {
                self.slot(c);
            }
        }
    }

    /// Adds `n` to `counter` now (and hands over any calm-path counts with it).
    pub fn add_n(&mut self, counter: Counter, n: u32) {
        if n == 0 {
            return;
        }
        self.flush();
        if let Some(id) = self.slot(counter) {
            let _ = abi::increment_metric(id, i64::from(n));
        }
    }

    /// Adds one to `counter` now (and hands over any calm-path counts with it).
    pub fn add(&mut self, counter: Counter) {
        self.add_n(counter, 1);
    }

    /// Adds one to `counter` from a calm request: in wasm memory until the next flush when
    /// counts are deferred (adaptive mode), at once otherwise.
    pub fn add_calm(&mut self, counter: Counter) {
        if !self.deferred {
            self.add(counter);
            return;
        }
        let n = &mut self.pending[counter.index()];
        *n = n.saturating_add(1);
    }

    /// Hands the deferred counts to the host.
    pub fn flush(&mut self) {
        for c in Counter::ALL {
            let n = std::mem::take(&mut self.pending[c.index()]);
            if n == 0 {
                continue;
            }
            if let Some(id) = self.slot(c) {
                let _ = abi::increment_metric(id, i64::from(n));
            }
        }
    }

    /// Counts one retry made because the previous attempt ended with `reason`.
    pub fn add_retry(&mut self, reason: Outcome) {
        self.add(Counter::Retries);
        let id = *self
            .by_reason
            .entry(reason)
            .or_insert_with(|| define(&retries_by_reason(reason)));
        if let Some(id) = id {
            let _ = abi::increment_metric(id, 1);
        }
    }

    /// The counter's id, defining it on first use.
    fn slot(&mut self, counter: Counter) -> Option<u32> {
        let slot = &mut self.fixed[counter.index()];
        if let Slot::Undefined = slot {
            *slot = match define(counter.name()) {
                Some(id) => Slot::Defined(id),
                None => Slot::Refused,
            };
        }
        match *slot {
            Slot::Defined(id) => Some(id),
            Slot::Undefined | Slot::Refused => None,
        }
    }
}

fn define(name: &str) -> Option<u32> {
    match abi::define_counter(name) {
        Ok(id) => Some(id),
        Err(s) => {
            log::debug!("kong_retry: metric {name} not defined (status {})", s.0);
            None
        }
    }
}
