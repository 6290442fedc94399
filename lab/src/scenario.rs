//! The rollout: what happens to the upstreams or the gateway nodes, when, while the load
//! runs. The phases a request falls in are named by the time it was due.

use crate::LabError;
use std::time::{Duration, Instant};

/// One thing done to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Graceful stop of one instance (SIGTERM: stop accepting, drain, exit).
    Drain(usize),
    /// SIGKILL of one instance, connections open.
    Kill(usize),
    /// SIGKILL of every instance.
    KillAll,
    Restart(usize),
    RestartAll,
    /// Gateway node `i` starts draining (`/drain_listeners?graceful`: it keeps accepting for
    /// the drain time, then closes its listener), as a gateway pod's preStop hook does.
    DrainNode(usize),
    /// SIGTERM to gateway node `i` (what the kubelet sends after the preStop hook); it exits.
    StopNode(usize),
    /// SIGKILL of gateway node `i` with connections open (a node lost).
    KillNode(usize),
    /// Gateway node `i` starts again on its address.
    StartNode(usize),
}

/// Gateway node names in labels: A, B, ...
fn node_name(i: usize) -> char {
    char::from(b'A' + (i % 26) as u8)
}

impl Action {
    pub fn label(self) -> String {
        match self {
            Action::Drain(i) => format!("drain u{i}"),
            Action::Kill(i) => format!("kill u{i}"),
            Action::KillAll => "kill all".into(),
            Action::Restart(i) => format!("start u{i}"),
            Action::RestartAll => "start all".into(),
            Action::DrainNode(i) => format!("drain node {}", node_name(i)),
            Action::StopNode(i) => format!("SIGTERM node {}", node_name(i)),
            Action::KillNode(i) => format!("kill node {}", node_name(i)),
            Action::StartNode(i) => format!("start node {}", node_name(i)),
        }
    }

    /// An action that takes an instance or a node away (an incident).
    pub fn is_outage(self) -> bool {
        matches!(
            self,
            Action::Drain(_)
                | Action::Kill(_)
                | Action::KillAll
                | Action::DrainNode(_)
                | Action::KillNode(_)
        )
    }

    /// An action that brings something back (drawn green).
    pub fn is_start(self) -> bool {
        matches!(
            self,
            Action::Restart(_) | Action::RestartAll | Action::StartNode(_)
        )
    }
}

/// A named span of the run.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: &'static str,
    pub from_ms: f64,
    pub to_ms: f64,
}

/// The whole run: load length, actions at times, phases.
#[derive(Debug, Clone)]
pub struct Plan {
    pub duration: Duration,
    pub actions: Vec<(f64, Action)>,
    pub phases: Vec<Phase>,
}

/// Phases from `(name, from ms, to ms)`.
pub fn phases(spans: &[(&'static str, f64, f64)]) -> Vec<Phase> {
    spans
        .iter()
        .map(|&(name, from_ms, to_ms)| Phase {
            name,
            from_ms,
            to_ms,
        })
        .collect()
}

/// Rolling replacement of every instance, one at a time: take it away, wait `gap`, start
/// it again, wait `settle` before the next.
fn rolling(
    at: f64,
    n: usize,
    take: fn(usize) -> Action,
    gap: f64,
    settle: f64,
    out: &mut Vec<(f64, Action)>,
) -> f64 {
    let mut t = at;
    for i in 0..n {
        out.push((t, take(i)));
        out.push((t + gap, Action::Restart(i)));
        t += gap + settle;
    }
    t
}

impl Plan {
    /// The full lab: calm, graceful rolling update, abrupt rolling update, every instance
    /// down for 2 s, calm again.
    pub fn full(n: usize) -> Plan {
        let mut actions = Vec::new();
        let calm = 4000.0;
        let graceful_end = rolling(calm, n, Action::Drain, 1000.0, 1500.0, &mut actions);
        let abrupt_end = rolling(graceful_end, n, Action::Kill, 1000.0, 1500.0, &mut actions);
        actions.push((abrupt_end, Action::KillAll));
        actions.push((abrupt_end + 2000.0, Action::RestartAll));
        let gap_end = abrupt_end + 4000.0;
        Plan {
            duration: Duration::from_millis((gap_end + 2000.0) as u64),
            actions,
            phases: phases(&[
                ("calm", 0.0, calm),
                ("graceful", calm, graceful_end),
                ("abrupt", graceful_end, abrupt_end),
                ("2 s gap", abrupt_end, gap_end),
                ("after", gap_end, f64::MAX),
            ]),
        }
    }

    /// The short lab (`--short`, the demo, the test): one drain, one kill, the 2 s gap.
    pub fn short(seconds: f64) -> Plan {
        let s = seconds * 1000.0 / 15.0;
        let calm = 3.0 * s;
        let actions = vec![
            (calm, Action::Drain(0)),
            (calm + 1.0 * s, Action::Restart(0)),
            (calm + 3.0 * s, Action::Kill(1)),
            (calm + 4.0 * s, Action::Restart(1)),
            (calm + 6.0 * s, Action::KillAll),
            (calm + 6.0 * s + 2000.0, Action::RestartAll),
        ];
        Plan {
            duration: Duration::from_millis((15.0 * s) as u64),
            actions,
            phases: phases(&[
                ("calm", 0.0, calm),
                ("graceful", calm, calm + 3.0 * s),
                ("abrupt", calm + 3.0 * s, calm + 6.0 * s),
                ("2 s gap", calm + 6.0 * s, calm + 6.0 * s + 3000.0),
                ("after", calm + 6.0 * s + 3000.0, f64::MAX),
            ]),
        }
    }

    /// The gateway-node replacement: two nodes in front of the same healthy upstreams; node A
    /// is replaced gracefully (drain for `drain_ms`, SIGTERM, exit, start again after a 1 s
    /// gap), then abruptly (SIGKILL, start again after 1 s).
    pub fn node_replacement(drain_ms: f64) -> Plan {
        let calm = 3000.0;
        let stop = calm + drain_ms + 500.0;
        let graceful_end = stop + 1000.0 + 3500.0;
        // Requests due just before the kill are still in flight when it comes: they belong
        // to the abrupt phase.
        let kill = graceful_end + 200.0;
        let abrupt_end = kill + 1000.0 + 3500.0;
        Plan {
            duration: Duration::from_millis((abrupt_end + 1000.0) as u64),
            actions: vec![
                (calm, Action::DrainNode(0)),
                (stop, Action::StopNode(0)),
                (stop + 1000.0, Action::StartNode(0)),
                (kill, Action::KillNode(0)),
                (kill + 1000.0, Action::StartNode(0)),
            ],
            phases: phases(&[
                ("calm", 0.0, calm),
                ("node graceful", calm, graceful_end),
                ("node abrupt", graceful_end, abrupt_end),
                ("after", abrupt_end, f64::MAX),
            ]),
        }
    }

    /// The phase a request due at `ms` belongs to.
    pub fn phase_of(&self, ms: f64) -> &'static str {
        self.phases
            .iter()
            .find(|p| ms >= p.from_ms && ms < p.to_ms)
            .map_or("after", |p| p.name)
    }

    /// Performs the actions on time (from `start`) with `act`; the times they really
    /// happened, ms.
    pub fn perform(
        &self,
        start: Instant,
        mut act: impl FnMut(Action) -> Result<(), LabError>,
    ) -> Result<Vec<(f64, Action)>, LabError> {
        let mut done = Vec::new();
        for &(at, action) in &self.actions {
            let due = start + Duration::from_secs_f64(at / 1000.0);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let happened = start.elapsed().as_secs_f64() * 1000.0;
            act(action)?;
            done.push((happened, action));
        }
        Ok(done)
    }

    /// The names of the phases in which something is taken away (not calm, not after).
    pub fn incident_phases(&self) -> Vec<&'static str> {
        self.phases
            .iter()
            .map(|p| p.name)
            .filter(|n| !matches!(*n, "calm" | "after"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_replacement_takes_node_a_away_twice_and_brings_it_back() {
        let plan = Plan::node_replacement(1000.0);
        let away: Vec<f64> = plan
            .actions
            .iter()
            .filter(|(_, a)| a.is_outage())
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(away.len(), 2);
        assert_eq!(plan.phase_of(away[0]), "node graceful");
        assert_eq!(plan.phase_of(away[1] - 100.0), "node abrupt");
        assert_eq!(plan.actions.iter().filter(|(_, a)| a.is_start()).count(), 2);
        assert_eq!(plan.incident_phases(), vec!["node graceful", "node abrupt"]);
        let last = plan.actions.last().map_or(0.0, |(t, _)| *t);
        assert!(last < plan.duration.as_secs_f64() * 1000.0 - 2000.0);
    }
}
