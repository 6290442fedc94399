//! One row: a fresh pool and gateway, the calm throughput, then the load with the rollout.

use crate::gateways::{Modules, Row, Running};
use crate::load::{self, Load, Nodes};
use crate::pool::{Pool, UpstreamProgram};
use crate::report::RowResult;
use crate::scenario::Plan;
use crate::LabError;
use std::path::Path;

/// How a row is run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub upstreams: usize,
    pub load: Load,
    /// Seconds of `wrk` on the calm gateway (0: not measured).
    pub wrk_seconds: u32,
}

/// Runs `row` under `plan`; files under `dir`.
pub fn row(
    row: Row,
    plan: &Plan,
    settings: &Settings,
    modules: &Modules,
    program: &UpstreamProgram,
    dir: &Path,
) -> Result<RowResult, LabError> {
    let mut pool = Pool::start(program, settings.upstreams, dir)?;
    let gateway = Running::start(row, &pool.addrs(), modules)?;
    let calm_rps = if settings.wrk_seconds > 0 {
        let url = format!("http://{}/calm?id=calm", gateway.addr());
        Some(crate::machine::wrk_rps(&url, settings.wrk_seconds).map_err(crate::err)?)
    } else {
        None
    };
    let retries_before = gateway.retries();
    let mut load = settings.load.clone();
    load.duration = plan.duration;
    let nodes = Nodes(vec![gateway.addr()]);
    let mut events = Ok(Vec::new());
    let outcomes = load::run(&load, &nodes, |start| {
        events = plan.perform(&mut pool, start);
    });
    let events = events?;
    // Let retries that were still in flight land in the journals and counters.
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(RowResult {
        row,
        outcomes,
        deliveries: pool.deliveries(),
        retries: gateway.retries().saturating_sub(retries_before),
        calm_rps,
        events,
        filter_errors: gateway.filter_errors(),
        counters: gateway.counters(),
    })
}
