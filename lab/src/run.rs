//! One row: a fresh pool and gateway, the calm throughput, then the load with the rollout.

use crate::gateways::{self, Modules, Row, Running};
use crate::load::{self, Load, Nodes};
use crate::nodes::GatewayNodes;
use crate::pool::{Pool, UpstreamProgram};
use crate::report::RowResult;
use crate::scenario::Plan;
use crate::{err, LabError};
use std::path::Path;
use std::time::Duration;

/// How a row is run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub upstreams: usize,
    pub load: Load,
    /// Seconds of `wrk` on the calm gateway (0: not measured).
    pub wrk_seconds: u32,
}

/// What every row runs with.
pub struct Setup<'a> {
    pub plan: &'a Plan,
    pub settings: &'a Settings,
    pub modules: &'a Modules,
    pub program: &'a UpstreamProgram,
}

/// The gateway-node replacement's client: after a connection failure it keeps away from
/// that node for this long, then tries it again.
pub const CLIENT_BACK_AFTER: Duration = Duration::from_secs(1);

/// Runs `row` under the setup's plan (a rollout of the upstreams); files under `dir`.
pub fn row(row: Row, setup: &Setup, dir: &Path) -> Result<RowResult, LabError> {
    let settings = setup.settings;
    let mut pool = Pool::start(setup.program, settings.upstreams, dir)?;
    let gateway = Running::start(row, &pool.addrs(), setup.modules)?;
    let calm_rps = if settings.wrk_seconds > 0 {
        let url = format!("http://{}/calm?id=calm", gateway.addr());
        Some(crate::machine::wrk_rps(&url, settings.wrk_seconds).map_err(crate::err)?)
    } else {
        None
    };
    let retries_before = gateway.retries();
    let nodes = Nodes::one(gateway.addr());
    let (outcomes, events) = load_with_rollout(setup, &nodes, |a| pool.act(a))?;
    Ok(RowResult {
        row,
        nodes: 1,
        outcomes,
        deliveries: pool.deliveries(),
        retries: gateway.retries().saturating_sub(retries_before),
        calm_rps,
        events,
        filter_errors: gateway.filter_errors(),
        counters: gateway.counters(),
    })
}

/// Runs `row` on two gateway nodes in front of one healthy pool, under the setup's plan (a
/// rollout of the nodes); the client prefers node A and switches on a connection failure.
pub fn node_row(row: Row, setup: &Setup, dir: &Path) -> Result<RowResult, LabError> {
    let pool = Pool::start(setup.program, setup.settings.upstreams, dir)?;
    let bootstrap =
        gateways::envoy_bootstrap(row, &pool.addrs(), setup.modules).ok_or_else(|| {
            err(format!(
                "{}: the node replacement runs Envoy rows only",
                row.label()
            ))
        })?;
    let mut gateway = GatewayNodes::start(&bootstrap, 2)?;
    let nodes = Nodes::new(gateway.addrs(), CLIENT_BACK_AFTER);
    let (outcomes, events) = load_with_rollout(setup, &nodes, |a| gateway.act(a))?;
    Ok(RowResult {
        row,
        nodes: 2,
        outcomes,
        deliveries: pool.deliveries(),
        retries: gateway.retries(),
        calm_rps: None,
        events,
        filter_errors: gateway.filter_errors(),
        counters: gateway.counters(),
    })
}

type Events = Vec<(f64, crate::scenario::Action)>;

/// The open-loop load against `nodes` while `plan`'s actions are done with `act`.
fn load_with_rollout(
    setup: &Setup,
    nodes: &Nodes,
    act: impl FnMut(crate::scenario::Action) -> Result<(), LabError>,
) -> Result<(Vec<load::Outcome>, Events), LabError> {
    let mut load = setup.settings.load.clone();
    load.duration = setup.plan.duration;
    let mut events = Ok(Vec::new());
    let outcomes = load::run(&load, nodes, |start| {
        events = setup.plan.perform(start, act);
    });
    let events = events?;
    // Let retries that were still in flight land in the journals and counters.
    std::thread::sleep(Duration::from_millis(300));
    Ok((outcomes, events))
}
