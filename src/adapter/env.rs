//! The exchange's `Env` on the host: clock, jitter, and the VM's retry budget and adaptive
//! protection, which a request reaches through the shared state.

use super::abi;
use super::root::{Host, Shared};
use crate::exchange::Env;
use crate::metrics;
use crate::retry::outcome::Outcome;

/// The exchange's [`Env`] for one request: the host clock, the VM's jitter, budget and
/// protection.
pub struct HostEnv<'a> {
    pub shared: &'a Shared,
    pub host: Host,
    pub scope: &'a str,
    pub context_id: u32,
    pub can_wait: bool,
    /// Adaptive mode: failures are reported to the protection scope `.0` (`None`: fixed).
    pub watch: Option<Option<&'a str>>,
}

/// Reports a retryable outcome to the worker's protection cache (adaptive mode); counts and
/// logs a protection that this starts. `scope`: `None` for the VM's fixed scope.
pub fn report_failure(
    shared: &Shared,
    host: Host,
    scope: Option<&str>,
    ctx: u32,
    outcome: Outcome,
) {
    let (Ok(mut store), Ok(mut protection)) = (
        shared.store.try_borrow_mut(),
        shared.protection.try_borrow_mut(),
    ) else {
        return;
    };
    let transition = protection.mark_failure(&mut store, host, scope, abi::now_ms());
    if let Some(counter) = transition.and_then(metrics::on_protection) {
        log::info!(
            "kong_retry [{ctx}]: adaptive: protection of {} started after {}",
            scope.or(protection.fixed_scope()).unwrap_or_default(),
            outcome.label()
        );
        drop((store, protection));
        shared.metrics.borrow_mut().add(counter);
    }
}

impl Env for HostEnv<'_> {
    fn now_ms(&self) -> u64 {
        abi::now_ms()
    }
    fn random(&mut self) -> u64 {
        self.shared.random()
    }
    fn record_request(&mut self) {
        if let (Ok(mut budget), Ok(mut store)) = (
            self.shared.budget.try_borrow_mut(),
            self.shared.store.try_borrow_mut(),
        ) {
            budget.record_request(
                &mut store,
                self.host,
                self.scope,
                abi::now_ms(),
                self.context_id,
            );
        }
    }
    fn allow_retry(&mut self, attempt: u32) -> bool {
        match (
            self.shared.budget.try_borrow_mut(),
            self.shared.store.try_borrow_mut(),
        ) {
            (Ok(mut budget), Ok(mut store)) => budget.allow_retry(
                &mut store,
                self.host,
                self.scope,
                abi::now_ms(),
                self.context_id,
                attempt,
            ),
            // Cannot happen (one thread, no callback inside a budget call); deny, the side
            // that cannot amplify an outage.
            _ => false,
        }
    }
    fn can_wait(&self) -> bool {
        self.can_wait
    }
    fn failure_seen(&mut self, outcome: Outcome) {
        if let Some(scope) = self.watch {
            report_failure(self.shared, self.host, scope, self.context_id, outcome);
        }
    }
}
