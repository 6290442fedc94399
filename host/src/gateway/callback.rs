//! Running one callback: booking its cost, applying the effects it asked
//! for, and ending the instance when it traps.

use super::client_response::finish;
use super::flight::{RawResponse, Stage};
use super::upstream::PendingCall;
use super::{Gateway, LogLevel};
use crate::http::RequestId;
use crate::profile::Phase;
use crate::worker::{Effect, TrapInfo, ROOT_ID};

/// A trap that ended a worker's instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    pub worker: usize,
    /// The callback that trapped, e.g. `on_response_headers`.
    pub phase: &'static str,
    /// The request whose context trapped (None for a root context).
    pub request: Option<RequestId>,
    pub message: String,
}

impl Gateway {
    /// Runs one callback, books its cost, applies its effects, handles a trap.
    pub(super) fn callback(
        &mut self,
        w: usize,
        phase: Phase,
        ctx: u32,
        export: &str,
        args: &[i32],
    ) -> Result<Option<i32>, ()> {
        let Some(worker) = self.slots.get_mut(w).and_then(|s| s.worker.as_mut()) else {
            return Err(());
        };
        let result = worker.call(phase, ctx, export, args);
        let cost = worker.take_cost();
        let effects = std::mem::take(&mut worker.store.data_mut().effects);
        let rid = if ctx == ROOT_ID {
            None
        } else {
            self.flight_of(w, ctx)
        };
        match rid.and_then(|r| self.flights.get_mut(&r)) {
            Some(f) => f.stats.add(&cost),
            None => self.root_stats.add(&cost),
        }
        self.reschedule_tick(w);
        match result {
            Ok(v) => {
                self.apply_effects(w, effects);
                Ok(v)
            }
            Err(trap) => {
                // Dispatches sent before the trap did reach the upstream.
                for e in effects {
                    if let Effect::Dispatch { call, .. } = e {
                        self.history.push(call);
                    }
                }
                self.on_trap(w, trap, rid);
                Err(())
            }
        }
    }

    pub(super) fn apply_effects(&mut self, w: usize, effects: Vec<Effect>) {
        let generation = self.slots[w].generation;
        for effect in effects {
            match effect {
                Effect::Dispatch { ctx, call } => {
                    self.history.push(call.clone());
                    self.pending.insert(
                        call.id,
                        PendingCall {
                            call,
                            ctx,
                            generation,
                        },
                    );
                }
                Effect::Continue { ctx } => {
                    let Some(rid) = self.live_flight_of(w, ctx) else {
                        continue;
                    };
                    let after_headers = self.after_request_headers(rid);
                    let Some(f) = self.flights.get_mut(&rid) else {
                        continue;
                    };
                    if f.stage == Stage::AwaitRequestHeaders {
                        f.body_held = true;
                    }
                    f.stage = match f.stage {
                        Stage::AwaitRequestHeaders => after_headers,
                        Stage::AwaitRequestBody => Stage::Proxy,
                        Stage::AwaitResponseHeaders => Stage::ResponseBody,
                        Stage::AwaitResponseBody => Stage::Log,
                        other => other,
                    };
                }
                Effect::LocalResponse {
                    ctx,
                    status,
                    headers,
                    body,
                    rule,
                } => self.apply_local_response(w, ctx, status, headers, body, rule),
            }
        }
    }

    pub(super) fn on_trap(&mut self, w: usize, trap: TrapInfo, rid: Option<RequestId>) {
        self.traps.push(Trap {
            worker: w,
            phase: trap.phase.name(),
            request: rid,
            message: trap.message.clone(),
        });
        self.host_log(
            w,
            LogLevel::Critical,
            format!("{} trapped: {}", trap.phase.name(), trap.message),
        );
        // The instance is gone: every request it carried loses its filter
        // (BRIEF: on_log is not called; the next request gets a fresh instance).
        let slot = &mut self.slots[w];
        slot.worker = None;
        slot.generation += 1;
        slot.next_tick_at = None;
        self.pending
            .retain(|_, p| !(p.call.worker == w && p.call.is_dispatch()));
        let profile = self.profile();
        let ids: Vec<RequestId> = self
            .flights
            .iter()
            .filter(|(_, f)| f.worker == w && f.stage != Stage::Done)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(f) = self.flights.get_mut(&id) else {
                continue;
            };
            if let Stage::AwaitUpstream(_) = f.stage {
                f.filter_gone = true;
                continue;
            }
            let raw = f
                .raw
                .clone()
                .unwrap_or_else(|| RawResponse::from_gateway(profile.trap_response()));
            f.response = Some(finish(raw, true));
            f.stage = Stage::Done;
        }
    }
}
