//! The fake clock: ticks (per worker, per period) and call timeouts, fired
//! in time order.

use super::Gateway;
use crate::http::{CallId, Failure, Reply};
use crate::profile::Phase;
use crate::worker::ROOT_ID;

impl Gateway {
    /// The time of the next tick or call timeout, if any.
    pub fn next_timer_ms(&self) -> Option<u64> {
        let ticks = self
            .slots
            .iter()
            .filter(|s| s.worker.is_some())
            .filter_map(|s| s.next_tick_at);
        let timeouts = self
            .pending
            .values()
            .map(|p| p.call.sent_at_ms.saturating_add(p.call.timeout_ms));
        ticks.chain(timeouts).min()
    }

    /// Advances the fake clock, firing ticks (per worker, per period) and call
    /// timeouts in time order.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now_ms().saturating_add(ms);
        while let Some(t) = self.next_timer_ms() {
            if t > target {
                break;
            }
            self.node().now_ms = t.max(self.now_ms());
            self.fire_timers();
        }
        self.node().now_ms = target;
    }

    pub(super) fn fire_timers(&mut self) {
        let now = self.now_ms();
        for w in 0..self.slots.len() {
            let due = self.slots[w].worker.is_some()
                && self.slots[w].next_tick_at.is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            let period = self.slots[w]
                .worker
                .as_ref()
                .and_then(|x| x.store.data().tick_period_ms);
            self.slots[w].next_tick_at = period.map(|p| now + p);
            // Kong (BRIEF): on_tick fires in every worker, on its root context.
            let _ = self.callback(w, Phase::Tick, ROOT_ID, "proxy_on_tick", &[ROOT_ID as i32]);
            self.pump();
        }
        let expired: Vec<CallId> = self
            .pending
            .values()
            .filter(|p| p.call.sent_at_ms.saturating_add(p.call.timeout_ms) <= now)
            .map(|p| p.call.id)
            .collect();
        for id in expired {
            let _ = self.answer(id, Reply::failure(Failure::Timeout));
        }
    }
}
