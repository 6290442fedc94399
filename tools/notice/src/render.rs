//! The notice as Markdown, in English or Chinese.
//!
//! Facts are computed once per route ([`Facts`]), language-free; the two writers only phrase
//! them. The Chinese text is written for Chinese readers, not translated sentence by sentence.

use crate::source::{Coverage, Input, NoRetry, Route};
use crate::timing::{timing, Host, Timing};
use kong_retry::config::{
    Backoff, BudgetConfig, BudgetScope, BudgetStore, Mode, Plan, StoreUnavailable,
};
use std::fmt::Write as _;

/// Output language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// `en` or `zh` (also `zh-CN`, `zh_cn`, `cn`).
    pub fn parse(s: &str) -> Option<Lang> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "en" | "en-us" | "en-gb" => Some(Lang::En),
            "zh" | "zh-cn" | "zh-hans" | "cn" => Some(Lang::Zh),
            _ => None,
        }
    }
}

/// The methods the notice considers (CONNECT is never proxied this way).
const STANDARD_METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
];

/// Everything a notice says about one filter configuration, language-free.
#[derive(Debug, Clone)]
pub struct Facts {
    pub timing: Timing,
    /// Retries that can actually happen (0 when the budget refuses every retry).
    pub retries: u32,
    /// `retries: 0`: the filter steps aside and the proxy sends each request once, natively.
    pub native_only: bool,
    /// The budget has no store and fails closed: every retry is refused.
    pub budget_denies_all: bool,
    pub statuses: Vec<u16>,
    pub connect_failure: bool,
    pub timeout: bool,
    pub reset: bool,
    pub backoff: Backoff,
    /// Statuses whose `Retry-After` is honoured (429 and/or 503 when retried), if any.
    pub retry_after_statuses: Vec<u16>,
    pub retry_after_max_ms: u64,
    /// Standard methods (that the route matches) sent once unless they carry the key.
    pub keyed_only_methods: Vec<String>,
    /// POST or PATCH retried even without a key (a risky config worth saying out loud).
    pub unkeyed_unsafe_methods: Vec<String>,
    /// As the client writes it, e.g. `Idempotency-Key`.
    pub idempotency_header: String,
    pub attempts_header: String,
    pub max_body_bytes: usize,
    pub budget: BudgetConfig,
    /// Envoy's response mode: the first attempt is the proxy's own, under its route timeout.
    pub response_mode: bool,
    /// Adaptive mode: retries only while the gateway sees trouble or inside a window.
    pub adaptive: Option<Adaptive>,
}

/// What adaptive mode changes for API consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adaptive {
    /// How long one failure keeps retries on (`adaptive.window`), ms.
    pub window_ms: u64,
    /// The scheduled maintenance windows, as the filter logs them (UTC).
    pub scheduled: Vec<String>,
}

/// `idempotency-key` -> `Idempotency-Key`.
pub fn header_case(lower: &str) -> String {
    lower
        .split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Computes the facts for `plan` on `host`, on a route matching `route_methods` (empty: all).
pub fn facts(plan: &Plan, route_methods: &[String], host: Host) -> Facts {
    let matches = |m: &str| {
        route_methods.is_empty() || route_methods.iter().any(|r| r.eq_ignore_ascii_case(m))
    };
    let keyed_only_methods = STANDARD_METHODS
        .iter()
        .filter(|m| matches(m) && !plan.methods.iter().any(|p| p == *m))
        .map(|m| m.to_string())
        .collect();
    let unkeyed_unsafe_methods = ["POST", "PATCH"]
        .iter()
        .filter(|m| matches(m) && plan.methods.iter().any(|p| p == *m))
        .map(|m| m.to_string())
        .collect();
    // With no store and `on_store_unavailable: deny`, every retry is refused: describe the
    // plan the filter actually runs, one attempt.
    let budget_denies_all = plan.budget.enabled
        && plan.budget_store.store == BudgetStore::None
        && plan.budget.on_store_unavailable == StoreUnavailable::Deny;
    let effective;
    let plan = if budget_denies_all {
        effective = Plan {
            retries: 0,
            ..plan.clone()
        };
        &effective
    } else {
        plan
    };
    let t = timing(plan, host);
    // Exhaustive on purpose: a new mode must be described before the notice compiles again.
    let (response_mode, adaptive) = match plan.mode {
        Mode::Response => (true, None),
        Mode::Auto | Mode::Dispatch => (false, None),
        // Protected requests run as `auto` would: on Kong (or unknown) dispatch mode.
        Mode::Adaptive => (
            false,
            Some(Adaptive {
                window_ms: plan.adaptive.window_ms,
                scheduled: plan
                    .maintenance_windows
                    .windows()
                    .iter()
                    .map(|w| w.to_string())
                    .collect(),
            }),
        ),
    };
    let retry_after_statuses = if t.retry_after_cap_ms.is_some() {
        [429, 503]
            .into_iter()
            .filter(|s| plan.retry_on.status(*s))
            .collect()
    } else {
        Vec::new()
    };
    Facts {
        timing: t,
        retries: plan.retries,
        native_only: plan.retries == 0 && !budget_denies_all,
        budget_denies_all,
        statuses: plan.retry_on.statuses.clone(),
        connect_failure: plan.retry_on.connect_failure,
        timeout: plan.retry_on.timeout,
        reset: plan.retry_on.reset,
        backoff: plan.backoff,
        retry_after_statuses,
        retry_after_max_ms: plan.retry_after_max_ms,
        keyed_only_methods,
        unkeyed_unsafe_methods,
        idempotency_header: header_case(&plan.idempotency_header),
        attempts_header: plan.attempts_header.clone(),
        max_body_bytes: plan.max_body_bytes,
        budget: plan.budget,
        response_mode,
        adaptive,
    }
}

/// A duration for people: `250 ms`, `2 s`, `8.7 s` (zh: `250 毫秒`, `2 秒`, `8.7 秒`).
pub fn duration(ms: u64, lang: Lang) -> String {
    let (msu, su) = match lang {
        Lang::En => (" ms", " s"),
        Lang::Zh => (" 毫秒", " 秒"),
    };
    if ms < 1000 {
        return format!("{ms}{msu}");
    }
    if ms.is_multiple_of(1000) {
        return format!("{}{su}", ms / 1000);
    }
    let frac = format!("{:03}", ms % 1000);
    format!("{}.{}{su}", ms / 1000, frac.trim_end_matches('0'))
}

/// A size for people: `64 KiB`, `1 MiB`, `1000 bytes`.
pub fn size(bytes: usize, lang: Lang) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        match lang {
            Lang::En => format!("{bytes} bytes"),
            Lang::Zh => format!("{bytes} 字节"),
        }
    }
}

/// Status codes with runs of three or more folded: `429, 500–599`.
pub fn status_list(statuses: &[u16], sep: &str) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < statuses.len() {
        let mut j = i;
        while j + 1 < statuses.len() && statuses[j + 1] == statuses[j] + 1 {
            j += 1;
        }
        if j - i >= 2 && !(statuses[i] == 502 && statuses[j] == 504) {
            parts.push(format!("{}–{}", statuses[i], statuses[j]));
        } else {
            parts.extend(statuses[i..=j].iter().map(u16::to_string));
        }
        i = j + 1;
    }
    parts.join(sep)
}

fn join_en(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
    }
}

fn code(s: &str) -> String {
    format!("`{s}`")
}

fn route_title(r: &Route) -> String {
    let mut where_ = Vec::new();
    if !r.paths.is_empty() {
        where_.push(
            r.paths
                .iter()
                .map(|p| code(p))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if !r.hosts.is_empty() {
        where_.push(
            r.hosts
                .iter()
                .map(|h| code(h))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if !r.methods.is_empty() {
        where_.push(r.methods.join("/"));
    }
    if where_.is_empty() {
        code(&r.name)
    } else {
        format!("{} — {}", code(&r.name), where_.join(" · "))
    }
}

/// Renders the notice.
pub fn render(input: &Input, lang: Lang, window: Option<&str>) -> String {
    let mut sections: Vec<(Option<&Route>, Facts)> = Vec::new();
    let mut without: Vec<&Route> = Vec::new();
    match input {
        Input::FilterConfig(plan) => sections.push((None, facts(plan, &[], Host::Unknown))),
        Input::Kong(routes) => {
            for r in routes {
                match &r.coverage {
                    Coverage::Retries { plan, .. } => {
                        sections.push((Some(r), facts(plan, &r.methods, Host::Kong)))
                    }
                    Coverage::None(_) => without.push(r),
                }
            }
        }
    }
    match lang {
        Lang::En => en::render(
            &sections,
            &without,
            window,
            matches!(input, Input::FilterConfig(_)),
        ),
        Lang::Zh => zh::render(
            &sections,
            &without,
            window,
            matches!(input, Input::FilterConfig(_)),
        ),
    }
}

/// A `Retry-After` within `retry_after_max` can still leave no room for another attempt
/// before the deadline; the filter then ends the request instead of waiting.
fn retry_after_may_hit_deadline(f: &Facts) -> bool {
    f.retry_after_max_ms
        .saturating_add(f.timing.per_try_timeout_ms)
        > f.timing.deadline_ms
}

/// The largest `longest_ms` over all sections where the filter forwards requests (what a
/// client's per-attempt timeout must beat); native-only sections run on the proxy's timeouts.
fn longest_overall(sections: &[(Option<&Route>, Facts)]) -> Option<u64> {
    sections
        .iter()
        .filter(|(_, f)| !f.native_only)
        .map(|(_, f)| f.timing.longest_ms)
        .max()
}

fn idempotency_headers(sections: &[(Option<&Route>, Facts)]) -> Vec<String> {
    let mut h: Vec<String> = sections
        .iter()
        .map(|(_, f)| f.idempotency_header.clone())
        .collect();
    h.sort();
    h.dedup();
    if h.is_empty() {
        h.push("Idempotency-Key".into());
    }
    h
}

mod en {
    use super::*;

    fn failures(f: &Facts) -> Vec<String> {
        let mut out = Vec::new();
        if !f.statuses.is_empty() {
            let s = status_list(&f.statuses, ", ");
            out.push(if f.statuses.len() == 1 {
                format!("a {s} response")
            } else {
                format!("{s} responses")
            });
        }
        if f.connect_failure {
            out.push("connections that cannot be made".into());
        }
        if f.timeout {
            out.push(format!(
                "attempts with no response within {}",
                duration(f.timing.per_try_timeout_ms, Lang::En)
            ));
        }
        if f.reset {
            out.push("connections reset before the response is complete".into());
        }
        out
    }

    fn waits(f: &Facts) -> String {
        if !f.timing.waits_possible {
            return "retrying at once, without waiting between attempts".into();
        }
        match f.backoff {
            Backoff::Fixed { interval_ms } => {
                format!(
                    "waiting {} before each retry",
                    duration(interval_ms, Lang::En)
                )
            }
            Backoff::Exponential { .. } => {
                let ceilings: Vec<String> = f
                    .timing
                    .backoff_ceilings_ms
                    .iter()
                    .map(|c| duration(*c, Lang::En))
                    .collect();
                format!(
                    "waiting a random time of up to {} before {}",
                    join_en(&ceilings),
                    if ceilings.len() == 1 {
                        "the retry"
                    } else {
                        "successive retries"
                    }
                )
            }
        }
    }

    /// "4 attempts of up to 2 s each plus waits of up to 15 s (`Retry-After` included)".
    fn sum_parts(t: &Timing) -> String {
        let mut s = format!(
            "{} attempts of up to {} each",
            t.attempts,
            duration(t.per_try_timeout_ms, Lang::En)
        );
        if t.waits_ms > 0 {
            let _ = write!(s, " plus waits of up to {}", duration(t.waits_ms, Lang::En));
            if t.retry_after_cap_ms.is_some() {
                s.push_str(" (`Retry-After` included)");
            }
        }
        s
    }

    fn section(out: &mut String, f: &Facts) {
        let t = &f.timing;
        if f.budget_denies_all {
            let _ = writeln!(
                out,
                "- **Retries:** none — the retry budget has no store and refuses every retry, so each request is tried once (at most {}).",
                duration(t.per_try_timeout_ms, Lang::En)
            );
        } else if f.retries == 0 {
            let _ = writeln!(
                out,
                "- **Retries:** none — the filter is on but set to 0 retries, so each request is sent once, the normal way."
            );
        } else {
            let _ = writeln!(
                out,
                "- **Retried by the gateway:** {}.",
                failures(f).join("; ")
            );
            let _ = writeln!(
                out,
                "- **How many times:** up to {} {} after the first attempt ({} attempts in total), {}.",
                f.retries,
                if f.retries == 1 { "retry" } else { "retries" },
                t.attempts,
                waits(f)
            );
            if let Some(a) = &f.adaptive {
                let scheduled = if a.scheduled.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", and throughout the scheduled maintenance windows ({})",
                        a.scheduled.join("; ")
                    )
                };
                let _ = writeln!(
                    out,
                    "- **When:** only while the gateway sees trouble. Normally requests go straight to the backend and are not retried; once the gateway sees one of the failures above, it retries requests for the next {} (longer while failures continue){scheduled}. The failure that first shows the trouble is passed on to you unretried — when a backend restarts, about one response per gateway worker process — so your client must still retry it (see below).",
                    duration(a.window_ms, Lang::En)
                );
            }
            if !f.retry_after_statuses.is_empty() {
                let s: Vec<String> = f.retry_after_statuses.iter().map(u16::to_string).collect();
                let deadline_note = if retry_after_may_hit_deadline(f) {
                    format!(
                        ", provided the retry can still finish within the overall deadline of {}",
                        duration(f.timing.deadline_ms, Lang::En)
                    )
                } else {
                    String::new()
                };
                if f.timing.waits_possible {
                    let _ = writeln!(
                        out,
                        "- **`Retry-After`:** on a {} response asking for up to {}, the gateway waits as asked, then retries{deadline_note}; a longer `Retry-After` is passed on to you unchanged.",
                        s.join(" or "),
                        duration(f.retry_after_max_ms, Lang::En)
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "- **`Retry-After`:** the gateway cannot wait here, so a {} response that asks for a wait with `Retry-After` is not retried: it is passed on to you unchanged.",
                        s.join(" or ")
                    );
                }
            }
        }
        // Time.
        if f.retries == 0 {
            // Said above.
        } else if t.capped_by_deadline {
            let _ = writeln!(
                out,
                "- **Longest a request can take at the gateway:** {}. {} could add up to {}, but the gateway's overall deadline of {} ends the request first.",
                duration(t.longest_ms, Lang::En),
                sum_parts(t),
                duration(t.sum_ms, Lang::En),
                duration(t.deadline_ms, Lang::En)
            );
        } else {
            let _ = writeln!(
                out,
                "- **Longest a request can take at the gateway:** {}: {} (the overall deadline is {}).",
                duration(t.longest_ms, Lang::En),
                sum_parts(t),
                duration(t.deadline_ms, Lang::En)
            );
        }
        if f.retries > 0 && t.attempts_if_all_time_out < t.attempts {
            let _ = writeln!(
                out,
                "  If every attempt times out, only {} {} fit into the deadline.",
                t.attempts_if_all_time_out,
                if t.attempts_if_all_time_out == 1 {
                    "attempt"
                } else {
                    "attempts"
                }
            );
        }
        if f.response_mode {
            let _ = writeln!(
                out,
                "  (Response mode: the first attempt is bounded by the proxy's own route timeout, not by the per-attempt timeout above.)"
            );
        }
        // Never retried.
        let mut never = Vec::new();
        if !f.keyed_only_methods.is_empty() {
            never.push(format!(
                "{} requests **without** an `{}` header (with the header they are retried like the others)",
                join_en(&f.keyed_only_methods),
                f.idempotency_header
            ));
        }
        never.push(if f.max_body_bytes == 0 {
            "requests with any body at all".to_string()
        } else {
            format!(
                "requests with a body larger than {}",
                size(f.max_body_bytes, Lang::En)
            )
        });
        never.push(if f.statuses.is_empty() {
            "any response with an HTTP status (only connection-level failures are retried)".into()
        } else {
            "responses with any other status, such as 500 or 4xx".into()
        });
        let _ = writeln!(out, "- **Never retried automatically:**");
        for n in never {
            let _ = writeln!(out, "  - {n}");
        }
        if !f.unkeyed_unsafe_methods.is_empty() {
            let _ = writeln!(
                out,
                "- **Note:** {} requests are retried here even without `{}`; send the key anyway.",
                join_en(&f.unkeyed_unsafe_methods),
                f.idempotency_header
            );
        }
        if f.retries > 0 {
            if f.budget.enabled {
                let scope = match f.budget.scope {
                    BudgetScope::Route => "the route's requests",
                    BudgetScope::Upstream => "the requests to the same backend",
                };
                let _ = writeln!(
                    out,
                    "- **Retry budget:** retries are limited to {} % of {} plus {} per second (unused allowance is kept for at most {}). In a real outage, failures beyond that reach you without a retry.",
                    f.budget.percent,
                    scope,
                    f.budget.min_retries_per_second,
                    duration(f.budget.window_ms, Lang::En)
                );
            }
            let _ = writeln!(
                out,
                "- **Response header:** `{}` tells you how many attempts the gateway made (1 = no retry was needed); it is absent when the request was not eligible for gateway retries{}.",
                f.attempts_header,
                if f.adaptive.is_some() {
                    " or went straight through because the gateway saw no trouble"
                } else {
                    ""
                }
            );
        }
    }

    fn no_retry_reason(r: &Route) -> String {
        match &r.coverage {
            Coverage::None(NoRetry::ChainDisabled(Some(n))) => {
                format!("the retry filter chain `{n}` is switched off")
            }
            Coverage::None(NoRetry::ChainDisabled(None)) => {
                "the retry filter chain is switched off".into()
            }
            Coverage::None(NoRetry::FilterDisabled(_)) => "the retry filter is switched off".into(),
            Coverage::None(NoRetry::PluginDisabled) => "the retry plugin is switched off".into(),
            Coverage::None(NoRetry::NotConfigured) | Coverage::Retries { .. } => {
                "no retry filter is configured".into()
            }
        }
    }

    pub(super) fn render(
        sections: &[(Option<&Route>, Facts)],
        without: &[&Route],
        window: Option<&str>,
        from_filter_config: bool,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Notice: API gateway maintenance and automatic retries\n"
        );
        if let Some(w) = window {
            let _ = writeln!(out, "**Maintenance window:** {w}\n");
        }
        let _ = writeln!(
            out,
            "{} we replace backend instances and upgrade the API gateway while traffic keeps flowing. \
             A small share of requests may meet an instance that is going away and fail with 502, 503 or 504, \
             a refused or reset connection, or a timeout, usually for a few seconds at a time. \
             The gateway retries many of these failures for you. This notice is generated from the gateway's \
             configuration: it says which failures are retried, how often, how long a request can take, \
             and what your client must do.\n",
            if window.is_some() { "During this window" } else { "During maintenance windows" }
        );

        for (route, f) in sections {
            match route {
                Some(r) => {
                    let _ = writeln!(out, "## Route {}\n", route_title(r));
                }
                None => {
                    let _ = writeln!(out, "## Routes that use this retry configuration\n");
                }
            }
            section(&mut out, f);
            out.push('\n');
        }
        if sections.is_empty() {
            let _ = writeln!(out, "No route has gateway retries enabled.\n");
        }
        if !without.is_empty() {
            let _ = writeln!(out, "## Routes without gateway retries\n");
            for r in without {
                let _ = writeln!(
                    out,
                    "- {}: {}. Requests are sent once; any failure reaches your client directly.",
                    route_title(r),
                    no_retry_reason(r)
                );
            }
            out.push('\n');
        }

        let keys = idempotency_headers(sections)
            .iter()
            .map(|h| code(h))
            .collect::<Vec<_>>();
        let key = join_en(&keys);
        let _ = writeln!(out, "## What your client must do\n");
        let _ = writeln!(
            out,
            "1. **Send {key} with every POST and PATCH that changes data:** one new random value (a UUID) per \
             logical operation, reused unchanged on every retry of that operation and never for another one. \
             It lets the gateway retry the request, and lets the API recognise a repeat and return the first \
             result instead of doing the work twice."
        );
        let _ = writeln!(
            out,
            "2. **Send the same body bytes on every attempt:** serialise the body once and keep the bytes."
        );
        let _ = writeln!(
            out,
            "3. **Retry what the gateway cannot:** the gateway's own instances are replaced too, so retry refused \
             or reset connections, timeouts and 502/503/504 yourself, with exponential backoff, random jitter \
             and a cap (for example a random wait of up to 0.1 s, 0.2 s, 0.4 s, … at most 2 s), within an \
             overall deadline. Retry a POST or PATCH only with its key."
        );
        let _ = writeln!(
            out,
            "4. **Honour `Retry-After` on 429 and 503:** wait at least that long; if that is past your deadline, stop."
        );
        let _ = writeln!(
            out,
            "5. **409 Conflict:** the first request with this key is still in progress: wait and retry with the \
             same key and body. **422:** the key was reused with a different body: a bug, do not retry. \
             **400:** a required key is missing."
        );
        if let Some(longest) = longest_overall(sections) {
            let _ = writeln!(
                out,
                "6. **Allow each attempt more than {}**, the longest the gateway may spend on a request, so that you \
                 do not give up on a request the gateway is still retrying and send a second one.",
                duration(longest, Lang::En)
            );
        }
        if from_filter_config {
            let _ = writeln!(
                out,
                "\n*Generated by `kong-retry-notice` from a filter configuration, not from a route list.*"
            );
        } else {
            let _ = writeln!(
                out,
                "\n*Generated by `kong-retry-notice` from the gateway configuration.*"
            );
        }
        out
    }
}

mod zh {
    use super::*;

    fn failures(f: &Facts) -> Vec<String> {
        let mut out = Vec::new();
        if !f.statuses.is_empty() {
            out.push(format!("返回 {}", status_list(&f.statuses, "、")));
        }
        if f.connect_failure {
            out.push("连不上后端".into());
        }
        if f.timeout {
            out.push(format!(
                "单次尝试 {}内无响应（超时）",
                duration(f.timing.per_try_timeout_ms, Lang::Zh)
            ));
        }
        if f.reset {
            out.push("响应未收完连接就被重置".into());
        }
        out
    }

    fn waits(f: &Facts) -> String {
        if !f.timing.waits_possible {
            return "两次尝试之间不等待，立即重试".into();
        }
        match f.backoff {
            Backoff::Fixed { interval_ms } => {
                format!("每次重试前固定等待 {}", duration(interval_ms, Lang::Zh))
            }
            Backoff::Exponential { .. } => {
                let ceilings: Vec<String> = f
                    .timing
                    .backoff_ceilings_ms
                    .iter()
                    .map(|c| duration(*c, Lang::Zh))
                    .collect();
                if ceilings.len() == 1 {
                    format!("重试前随机等待，最长 {}", ceilings.join(""))
                } else {
                    format!("每次重试前随机等待，上限依次为 {}", ceilings.join("、"))
                }
            }
        }
    }

    /// "4 次尝试、每次最长 2 秒，加上最长 15 秒的等待（含 `Retry-After`）"。
    fn sum_parts(t: &Timing) -> String {
        let mut s = format!(
            "{} 次尝试、每次最长 {}",
            t.attempts,
            duration(t.per_try_timeout_ms, Lang::Zh)
        );
        if t.waits_ms > 0 {
            let _ = write!(s, "，加上最长 {}的等待", duration(t.waits_ms, Lang::Zh));
            if t.retry_after_cap_ms.is_some() {
                s.push_str("（含 `Retry-After`）");
            }
        }
        s
    }

    fn section(out: &mut String, f: &Facts) {
        let t = &f.timing;
        if f.budget_denies_all {
            let _ = writeln!(
                out,
                "- **重试：** 无。重试预算没有可用的存储，且配置为拒绝，所有重试都会被拒绝，每个请求只尝试一次（最长 {}）。",
                duration(t.per_try_timeout_ms, Lang::Zh)
            );
        } else if f.retries == 0 {
            let _ = writeln!(
                out,
                "- **重试：** 无。过滤器已启用，但重试次数设为 0，每个请求按普通方式只发一次。"
            );
        } else {
            let _ = writeln!(out, "- **网关会重试：** {}。", failures(f).join("；"));
            let _ = writeln!(
                out,
                "- **重试次数：** 首次之后最多再重试 {} 次（共 {} 次尝试），{}。",
                f.retries,
                t.attempts,
                waits(f)
            );
            if let Some(a) = &f.adaptive {
                let scheduled = if a.scheduled.is_empty() {
                    String::new()
                } else {
                    format!("；计划维护窗口（{}）内也全程重试", a.scheduled.join("；"))
                };
                let _ = writeln!(
                    out,
                    "- **何时重试：** 只在网关发现故障时。平时请求直接转发到后端，不做重试；网关一旦看到上面列出的某种失败，就在之后 {}内重试请求（失败持续时会顺延）{scheduled}。最先暴露故障的那个失败响应不会被重试，会原样返回给你——后端重启时，大约每个网关工作进程一个——所以你的客户端仍然需要重试（见下文）。",
                    duration(a.window_ms, Lang::Zh)
                );
            }
            if !f.retry_after_statuses.is_empty() {
                let s: Vec<String> = f.retry_after_statuses.iter().map(u16::to_string).collect();
                let deadline_note = if retry_after_may_hit_deadline(f) {
                    format!(
                        "（前提是重试仍能在总时限 {}内完成）",
                        duration(f.timing.deadline_ms, Lang::Zh)
                    )
                } else {
                    String::new()
                };
                if f.timing.waits_possible {
                    let _ = writeln!(
                        out,
                        "- **`Retry-After`：** 收到带 `Retry-After` 的 {} 响应时，只要要求的等待不超过 {}，网关就等够再重试{deadline_note}；更长的会原样返回给你。",
                        s.join(" 或 "),
                        duration(f.retry_after_max_ms, Lang::Zh)
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "- **`Retry-After`：** 网关在这里无法等待，所以带 `Retry-After` 要求等待的 {} 响应不会被重试，会原样返回给你。",
                        s.join(" 或 ")
                    );
                }
            }
        }
        if f.retries == 0 {
            // 上面已说明。
        } else if t.capped_by_deadline {
            let _ = writeln!(
                out,
                "- **单个请求在网关最长耗时：** {}。{}，合计可达 {}，但网关的总时限 {}会先结束这个请求。",
                duration(t.longest_ms, Lang::Zh),
                sum_parts(t),
                duration(t.sum_ms, Lang::Zh),
                duration(t.deadline_ms, Lang::Zh)
            );
        } else {
            let _ = writeln!(
                out,
                "- **单个请求在网关最长耗时：** {}，即 {}（总时限为 {}）。",
                duration(t.longest_ms, Lang::Zh),
                sum_parts(t),
                duration(t.deadline_ms, Lang::Zh)
            );
        }
        if f.retries > 0 && t.attempts_if_all_time_out < t.attempts {
            let _ = writeln!(
                out,
                "  如果每次尝试都超时，总时限内只来得及尝试 {} 次。",
                t.attempts_if_all_time_out
            );
        }
        if f.response_mode {
            let _ = writeln!(
                out,
                "  （response 模式：第一次尝试受代理自身的路由超时约束，而不是上面的单次超时。）"
            );
        }
        let mut never = Vec::new();
        if !f.keyed_only_methods.is_empty() {
            never.push(format!(
                "**不带** `{}` 请求头的 {} 请求（带上这个头之后，会和其他请求一样被重试）",
                f.idempotency_header,
                f.keyed_only_methods.join("、")
            ));
        }
        never.push(if f.max_body_bytes == 0 {
            "带请求体的任何请求".to_string()
        } else {
            format!("请求体超过 {} 的请求", size(f.max_body_bytes, Lang::Zh))
        });
        never.push(if f.statuses.is_empty() {
            "任何带 HTTP 状态码的响应（只重试连接层面的失败）".into()
        } else {
            "其他状态码的响应，例如 500 和各种 4xx".into()
        });
        let _ = writeln!(out, "- **不会自动重试：**");
        for n in never {
            let _ = writeln!(out, "  - {n}");
        }
        if !f.unkeyed_unsafe_methods.is_empty() {
            let _ = writeln!(
                out,
                "- **注意：** 该路由上的 {} 请求即使不带 `{}` 也会被重试，请务必带上幂等键。",
                f.unkeyed_unsafe_methods.join("、"),
                f.idempotency_header
            );
        }
        if f.retries > 0 {
            if f.budget.enabled {
                let scope = match f.budget.scope {
                    BudgetScope::Route => "该路由请求数",
                    BudgetScope::Upstream => "发往同一后端的请求数",
                };
                let _ = writeln!(
                    out,
                    "- **重试预算：** 重试量上限为{}的 {}%，另加每秒 {} 次（未用完的额度最多保留 {}）。遇到真正的故障时，超出部分的失败会直接返回给你，不再重试。",
                    scope,
                    f.budget.percent,
                    f.budget.min_retries_per_second,
                    duration(f.budget.window_ms, Lang::Zh)
                );
            }
            let _ = writeln!(
                out,
                "- **响应头：** `{}` 表示网关一共尝试了几次（1 表示没有重试）；不符合网关重试条件的请求{}不带这个头。",
                f.attempts_header,
                if f.adaptive.is_some() {
                    "，以及网关未发现故障、直接转发的请求，"
                } else {
                    ""
                }
            );
        }
    }

    fn no_retry_reason(r: &Route) -> String {
        match &r.coverage {
            Coverage::None(NoRetry::ChainDisabled(Some(n))) => format!("重试过滤器链 `{n}` 已关闭"),
            Coverage::None(NoRetry::ChainDisabled(None)) => "重试过滤器链已关闭".into(),
            Coverage::None(NoRetry::FilterDisabled(_)) => "重试过滤器已关闭".into(),
            Coverage::None(NoRetry::PluginDisabled) => "重试插件已关闭".into(),
            Coverage::None(NoRetry::NotConfigured) | Coverage::Retries { .. } => {
                "未配置重试过滤器".into()
            }
        }
    }

    pub(super) fn render(
        sections: &[(Option<&Route>, Facts)],
        without: &[&Route],
        window: Option<&str>,
        from_filter_config: bool,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# 通知：API 网关维护与自动重试\n");
        if let Some(w) = window {
            let _ = writeln!(out, "**维护窗口：** {w}\n");
        }
        let _ = writeln!(
            out,
            "{}，我们会在不中断流量的情况下替换后端实例并升级 API 网关。\
             少量请求可能恰好落到正在下线的实例上，出现 502、503、504、连接被拒或被重置、超时等错误，\
             通常每次只持续几秒。其中很多失败网关会替你重试。本通知根据网关的实际配置生成，\
             说明哪些失败会被重试、重试几次、一个请求最长要多久，以及客户端需要做什么。\n",
            if window.is_some() { "维护期间" } else { "在维护窗口内" }
        );

        for (route, f) in sections {
            match route {
                Some(r) => {
                    let _ = writeln!(out, "## 路由 {}\n", route_title(r));
                }
                None => {
                    let _ = writeln!(out, "## 使用此重试配置的路由\n");
                }
            }
            section(&mut out, f);
            out.push('\n');
        }
        if sections.is_empty() {
            let _ = writeln!(out, "没有任何路由启用网关重试。\n");
        }
        if !without.is_empty() {
            let _ = writeln!(out, "## 没有网关重试的路由\n");
            for r in without {
                let _ = writeln!(
                    out,
                    "- {}：{}。请求只发送一次，任何失败都会直接返回给客户端。",
                    route_title(r),
                    no_retry_reason(r)
                );
            }
            out.push('\n');
        }

        let key = idempotency_headers(sections)
            .iter()
            .map(|h| code(h))
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(out, "## 客户端需要做的\n");
        let _ = writeln!(
            out,
            "1. **所有会修改数据的 POST、PATCH 都带上 {key}：** 每个业务操作生成一个新的随机值（UUID），\
             该操作的每次重试都原样复用，绝不用于其他操作。有了它，网关才能重试这个请求，\
             API 也能识别出重复请求、直接返回第一次的结果，而不会把事情做两遍。"
        );
        let _ = writeln!(
            out,
            "2. **每次尝试发送完全相同的请求体字节：** 只序列化一次，保存好字节。"
        );
        let _ = writeln!(
            out,
            "3. **网关兜不住的，由客户端重试：** 网关自己的实例也会被替换，所以连接被拒或被重置、超时、\
             502/503/504 需要客户端自己重试——指数退避、随机抖动、设置上限（例如依次随机等待最多 0.1 秒、\
             0.2 秒、0.4 秒……最多 2 秒），并且有总时限。POST、PATCH 只有带着原来的键才能重试。"
        );
        let _ = writeln!(
            out,
            "4. **遵守 429 和 503 的 `Retry-After`：** 至少等这么久；如果已经超出你的总时限，就停止。"
        );
        let _ = writeln!(
            out,
            "5. **409 Conflict：** 同一个键的第一次请求还在处理中，稍等后用同一个键、同样的请求体重试。\
             **422：** 同一个键被用在了不同的请求体上，是客户端 bug，不要重试。**400：** 缺少必需的键。"
        );
        if let Some(longest) = longest_overall(sections) {
            let _ = writeln!(
                out,
                "6. **单次尝试的超时要大于 {}**（网关处理一个请求的最长时间），\
                 否则网关还在重试，你却已经放弃并发出了第二个请求。",
                duration(longest, Lang::Zh)
            );
        }
        if from_filter_config {
            let _ = writeln!(
                out,
                "\n*由 `kong-retry-notice` 根据过滤器配置文件生成（不含路由信息）。*"
            );
        } else {
            let _ = writeln!(out, "\n*由 `kong-retry-notice` 根据网关配置生成。*");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration(250, Lang::En), "250 ms");
        assert_eq!(duration(2000, Lang::En), "2 s");
        assert_eq!(duration(8700, Lang::En), "8.7 s");
        assert_eq!(duration(1250, Lang::Zh), "1.25 秒");
        assert_eq!(duration(0, Lang::Zh), "0 毫秒");
        assert_eq!(size(65536, Lang::En), "64 KiB");
        assert_eq!(size(1_048_576, Lang::En), "1 MiB");
        assert_eq!(size(1000, Lang::Zh), "1000 字节");
    }

    #[test]
    fn statuses_fold_long_runs_but_not_gateway_errors() {
        assert_eq!(status_list(&[502, 503, 504], ", "), "502, 503, 504");
        let mut five: Vec<u16> = (500..=599).collect();
        five.insert(0, 429);
        assert_eq!(status_list(&five, ", "), "429, 500–599");
        assert_eq!(status_list(&[429, 503], "、"), "429、503");
    }

    #[test]
    fn header_names_are_shown_in_their_usual_case() {
        assert_eq!(header_case("idempotency-key"), "Idempotency-Key");
        assert_eq!(header_case("x-idem"), "X-Idem");
    }

    #[test]
    fn methods_needing_a_key_follow_config_and_route() {
        let plan = Plan::default();
        assert_eq!(
            facts(&plan, &[], Host::Unknown).keyed_only_methods,
            vec!["POST", "PATCH"]
        );
        assert!(facts(&plan, &["GET".into()], Host::Unknown)
            .keyed_only_methods
            .is_empty());
        let plan = kong_retry::config::parse(br#"{"methods":["GET","POST"]}"#).unwrap();
        let f = facts(&plan, &[], Host::Unknown);
        assert_eq!(f.unkeyed_unsafe_methods, vec!["POST"]);
        assert!(f.keyed_only_methods.contains(&"PATCH".to_string()));
        assert!(f.keyed_only_methods.contains(&"PUT".to_string()));
    }

    #[test]
    fn a_budget_that_refuses_everything_means_no_retries() {
        let plan = kong_retry::config::parse(
            br#"{"retries":3,"budget":{"store":"none","on_store_unavailable":"deny"}}"#,
        )
        .unwrap();
        let f = facts(&plan, &[], Host::Unknown);
        assert!(f.budget_denies_all && !f.native_only);
        assert_eq!(
            (f.retries, f.timing.attempts, f.timing.longest_ms),
            (0, 1, 2_000)
        );
        let input = Input::FilterConfig(Box::new(plan));
        let en = render(&input, Lang::En, None);
        assert!(
            en.contains("refuses every retry, so each request is tried once (at most 2 s)"),
            "{en}"
        );
        assert!(en.contains("more than 2 s"), "{en}");
        // Fail open: the budget simply does not limit.
        let open = kong_retry::config::parse(br#"{"budget":{"store":"none"}}"#).unwrap();
        assert!(!facts(&open, &[], Host::Unknown).budget_denies_all);
    }

    #[test]
    fn zero_retries_go_natively_and_set_no_client_timeout() {
        let plan = kong_retry::config::parse(br#"{"retries":0}"#).unwrap();
        let input = Input::FilterConfig(Box::new(plan));
        let zh = render(&input, Lang::Zh, None);
        assert!(zh.contains("每个请求按普通方式只发一次"), "{zh}");
        assert!(!zh.contains("单次尝试的超时要大于"), "{zh}");
    }

    #[test]
    fn lang_names() {
        assert_eq!(Lang::parse("zh_CN"), Some(Lang::Zh));
        assert_eq!(Lang::parse("EN"), Some(Lang::En));
        assert_eq!(Lang::parse("fr"), None);
    }
}
