//! A gateway node: several VM instances (workers) sharing one shared-data
//! store, clock and metrics; client requests driven through the filter's
//! phases under the profile's rules; upstream calls kept pending for the test.
//! This file holds the node's state and the lookups the other parts share.

mod builder;
mod callback;
mod client_response;
mod clock;
mod flight;
mod inspect;
mod node;
mod phases;
mod run;
mod stats;
mod upstream;

pub use builder::GatewayBuilder;
pub(crate) use builder::Settings;
pub use callback::Trap;
pub(crate) use node::Node;
pub use node::{LogEntry, LogLevel};
pub use run::Exchange;
pub use stats::RequestStats;

use crate::http::{CallId, RequestId, UpstreamCall};
use crate::module::WasmModule;
use crate::worker::{Stream, Worker};
use crate::HostError;
use flight::{Flight, Stage};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use upstream::PendingCall;

/// A worker's place in the node: its instance (None after a trap until the
/// next request starts one), and its context ids and tick schedule.
struct Slot {
    worker: Option<Worker>,
    /// Bumped when the instance is replaced; stale dispatch answers are dropped.
    generation: u64,
    next_tick_at: Option<u64>,
    next_ctx: u32,
    /// Kong: the worker exited at start-up and is never respawned; why.
    exited: Option<String>,
}

/// A gateway node running one filter module under a profile's rules.
pub struct Gateway {
    settings: Arc<Settings>,
    module: WasmModule,
    node: Arc<Mutex<Node>>,
    slots: Vec<Slot>,
    flights: BTreeMap<RequestId, Flight>,
    pending: BTreeMap<CallId, PendingCall>,
    history: Vec<UpstreamCall>,
    traps: Vec<Trap>,
    next_request: u64,
    root_stats: RequestStats,
    instances_started: u64,
}

impl Gateway {
    fn node(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an instance; its start-up cost (`_initialize`, root context,
    /// `on_vm_start`, `on_configure`) is root-context work, not the cost of
    /// the request or tick that comes next.
    fn start_worker(&mut self, index: usize, generation: u64) -> Result<Worker, HostError> {
        self.instances_started += 1;
        let mut worker = Worker::start(
            index,
            self.settings.clone(),
            self.node.clone(),
            &self.module.module,
            generation,
        )?;
        self.root_stats.add(&worker.take_cost());
        Ok(worker)
    }

    fn reschedule_tick(&mut self, w: usize) {
        let now = self.now_ms();
        let Some(slot) = self.slots.get_mut(w) else {
            return;
        };
        let Some(worker) = slot.worker.as_mut() else {
            slot.next_tick_at = None;
            return;
        };
        let state = worker.store.data_mut();
        if state.tick_changed {
            state.tick_changed = false;
            slot.next_tick_at = state.tick_period_ms.map(|p| now + p);
        }
    }

    fn host_log(&self, worker: usize, level: LogLevel, message: String) {
        self.node().logs.push(LogEntry {
            worker,
            context_id: 0,
            level,
            message,
        });
    }

    /// The request of a context of the worker's current instance (context ids
    /// restart with each instance, so the generation disambiguates).
    fn flight_of(&self, w: usize, ctx: u32) -> Option<RequestId> {
        let generation = self.slots.get(w)?.generation;
        self.flights
            .iter()
            .rev()
            .find(|(_, f)| f.worker == w && f.ctx == ctx && f.generation == generation)
            .map(|(id, _)| *id)
    }

    fn live_flight_of(&self, w: usize, ctx: u32) -> Option<RequestId> {
        self.flight_of(w, ctx)
            .filter(|id| self.flights.get(id).is_some_and(|f| f.stage != Stage::Done))
    }

    fn stream_mut(&mut self, w: usize, ctx: u32) -> Option<&mut Stream> {
        self.slots
            .get_mut(w)?
            .worker
            .as_mut()?
            .store
            .data_mut()
            .streams
            .get_mut(&ctx)
    }
}
