//! The VM's counters: defined once per VM by the root context, incremented by requests.

use super::abi;
use crate::metrics::{retries_by_reason, Counter};
use crate::outcome::Outcome;
use std::collections::BTreeMap;

/// Metric ids of this VM. A host without metrics leaves them undefined; counting is then a
/// no-op, never an error.
#[derive(Default)]
pub struct Metrics {
    defined: bool,
    fixed: [Option<u32>; Counter::ALL.len()],
    /// Per-reason counters, defined the first time a reason occurs (`5xx` alone would be a
    /// hundred series that stay at zero).
    by_reason: BTreeMap<String, Option<u32>>,
}

impl Metrics {
    /// Defines the fixed counters (idempotent).
    pub fn define(&mut self) {
        if self.defined {
            return;
        }
        self.defined = true;
        for c in Counter::ALL {
            self.fixed[c.index()] = define(c.name());
        }
    }

    /// Adds one to `counter`.
    pub fn add(&mut self, counter: Counter) {
        self.define();
        if let Some(id) = self.fixed[counter.index()] {
            let _ = abi::increment_metric(id, 1);
        }
    }

    /// Counts one retry made because the previous attempt ended with `reason`.
    pub fn add_retry(&mut self, reason: Outcome) {
        self.add(Counter::Retries);
        let name = retries_by_reason(reason);
        let id = *self
            .by_reason
            .entry(name)
            .or_insert_with_key(|name| define(name));
        if let Some(id) = id {
            let _ = abi::increment_metric(id, 1);
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
