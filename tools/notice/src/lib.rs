//! `kong-retry-notice`: the maintenance notice an operator sends to API consumers, generated
//! from the gateway's real configuration (a kong.yml or a kong-retry filter config), in
//! English or Chinese Markdown.
//!
//! Filter configs are parsed by the filter's own parser (`kong_retry::config`), so the notice
//! cannot disagree with the filter; the numbers come from [`timing::timing`], a pure function.

pub mod render;
pub mod source;
pub mod timing;

pub use render::{render, Lang};
pub use source::{load, Input, DEFAULT_FILTER_NAME};

use source::Coverage;

/// Remarks for the operator (not for the notice): configurations that work but surprise.
pub fn warnings(input: &Input) -> Vec<String> {
    let mut out = Vec::new();
    if let Input::Kong(routes) = input {
        for r in routes {
            if let Coverage::Retries {
                plan,
                extra_instances,
                ..
            } = &r.coverage
            {
                if *extra_instances > 0 {
                    out.push(format!(
                        "route `{}` runs the retry filter {} times (service chain, route chain or plugin); \
                         their attempts multiply. The notice describes the first one only.",
                        r.name,
                        extra_instances + 1
                    ));
                }
                if !timing::waits_possible(plan, timing::Host::Kong) {
                    out.push(format!(
                        "route `{}` has no `delay_endpoint`: on Kong its retries go at once, without \
                         backoff, and a response whose `Retry-After` asks for a wait is passed on \
                         unretried (see kong/delay-server.conf).",
                        r.name
                    ));
                }
                if plan.budget.enabled
                    && plan.budget_store.store == kong_retry::config::BudgetStore::None
                {
                    out.push(format!(
                        "route `{}`: `budget.store` is \"none\": the budget is not kept anywhere and \
                         `on_store_unavailable` decides every retry.",
                        r.name
                    ));
                }
                for m in ["POST", "PATCH"] {
                    if plan.methods.iter().any(|x| x == m) {
                        out.push(format!(
                            "route `{}` retries {m} without an idempotency key (`methods` lists it).",
                            r.name
                        ));
                    }
                }
            }
        }
    }
    if let Input::FilterConfig(plan) = input {
        if !timing::waits_possible(plan, timing::Host::Kong) {
            out.push(
                "no `delay_endpoint`: on Kong this config retries at once, without backoff, and \
                 passes a response whose `Retry-After` asks for a wait on unretried; the notice \
                 assumes a host that can wait."
                    .into(),
            );
        }
    }
    out
}
