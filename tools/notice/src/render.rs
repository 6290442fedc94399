//! The notice as Markdown, in English or Chinese.
//!
//! Facts are computed once per route ([`Facts`]), language-free. One writer (`notice`,
//! `section`) decides what the notice says and in which order; a phrase table per language
//! (`Phrases`, implemented by `En` and `Zh`) only words it. The Chinese text is written for
//! Chinese readers, not translated sentence by sentence.

use crate::source::{Coverage, Input, NoRetry, Route};
use crate::timing::{full_retry_after_waits, timing, Host, Timing};
use kong_retry::config::{
    Backoff, BudgetConfig, BudgetScope, BudgetStore, Jitter, Mode, Plan, StoreUnavailable,
};

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
    /// How many waits of the full `retry_after_max` fit before the deadline, when fewer than
    /// the retries (see [`full_retry_after_waits`]).
    pub retry_after_full_waits: Option<u32>,
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
        kong_retry::retry::retry_after::HONOURED_STATUSES
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
        retry_after_full_waits: full_retry_after_waits(plan),
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
    let mut without: Vec<(&Route, &NoRetry)> = Vec::new();
    match input {
        Input::FilterConfig(plan) => sections.push((None, facts(plan, &[], Host::Unknown))),
        Input::Kong(routes) => {
            for r in routes {
                match &r.coverage {
                    Coverage::Retries { plan, .. } => {
                        sections.push((Some(r), facts(plan, &r.methods, Host::Kong)))
                    }
                    Coverage::None(why) => without.push((r, why)),
                }
            }
        }
    }
    let from_filter_config = matches!(input, Input::FilterConfig(_));
    match lang {
        Lang::En => notice::<En>(&sections, &without, window, from_filter_config),
        Lang::Zh => notice::<Zh>(&sections, &without, window, from_filter_config),
    }
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

/// Every sentence of the notice in one language. What the notice says, in which order and
/// under which conditions, is decided once, by [`notice`] and [`section`]; an implementation
/// only phrases what it is handed. Durations and sizes arrive already written for the
/// language; lines come without their trailing newline.
trait Phrases {
    const LANG: Lang;

    // The notice around the sections.
    const TITLE: &'static str;
    fn window(window: &str) -> String;
    fn intro(window_given: bool) -> String;
    fn route_heading(title: &str) -> String;
    const CONFIG_HEADING: &'static str;
    const NO_ROUTE_RETRIES: &'static str;
    const WITHOUT_HEADING: &'static str;
    fn without_retries(title: &str, why: &NoRetry) -> String;
    /// The idempotency headers in use, each already in backquotes.
    fn keys(keys: &[String]) -> String;
    const CLIENT_HEADING: &'static str;
    /// Steps 1–5 of what clients must do.
    fn client_steps(key: &str) -> [String; 5];
    /// Step 6, when some route forwards requests through the filter.
    fn client_timeout(longest: &str) -> String;
    fn footer(from_filter_config: bool) -> &'static str;

    // A section: one route's retry behaviour.
    fn budget_refuses_all(per_try: &str) -> String;
    const ZERO_RETRIES: &'static str;
    fn statuses(statuses: &[u16]) -> String;
    const CONNECT_FAILURE: &'static str;
    fn timeout(per_try: &str) -> String;
    const RESET: &'static str;
    fn retried(failures: &[String]) -> String;
    const NO_WAITS: &'static str;
    fn fixed_wait(interval: &str) -> String;
    /// Full jitter: each wait is random between 0 and its ceiling.
    fn random_waits(ceilings: &[String]) -> String;
    /// Equal jitter: each wait is random between its floor and its ceiling (`(floor,
    /// ceiling)` per retry), so the waits add up to at least `least` and at most `most` —
    /// unless `retry_after` (a honoured `Retry-After` may ask for longer).
    fn ranged_waits(
        ranges: &[(String, String)],
        least: &str,
        most: &str,
        retry_after: bool,
    ) -> String;
    fn how_many(retries: u32, attempts: u32, waits: &str) -> String;
    fn adaptive(window: &str, scheduled: &[String]) -> String;
    /// A `Retry-After` is waited for only while the wait and one more attempt fit into the
    /// deadline; `full_waits`: how many waits of the full `max` fit, when fewer than the
    /// retries.
    fn retry_after_waits(
        statuses: &[String],
        max: &str,
        per_try: &str,
        deadline: &str,
        full_waits: Option<u32>,
    ) -> String;
    fn retry_after_cannot_wait(statuses: &[String]) -> String;
    /// "4 attempts of up to 2 s each", then [`Self::plus_waits`] and [`Self::RETRY_AFTER_INCLUDED`].
    fn attempts_of(attempts: u32, per_try: &str) -> String;
    fn plus_waits(waits: &str) -> String;
    const RETRY_AFTER_INCLUDED: &'static str;
    fn longest_capped(longest: &str, parts: &str, sum: &str, deadline: &str) -> String;
    fn longest(longest: &str, parts: &str, deadline: &str) -> String;
    fn all_time_out(attempts: u32) -> String;
    const RESPONSE_MODE: &'static str;
    const NEVER: &'static str;
    fn without_key(methods: &[String], header: &str) -> String;
    const ANY_BODY: &'static str;
    fn body_over(size: &str) -> String;
    const ANY_STATUS: &'static str;
    const OTHER_STATUS: &'static str;
    fn unkeyed_retried(methods: &[String], header: &str) -> String;
    fn budget(scope: BudgetScope, percent: u32, per_second: u32, window: &str) -> String;
    fn attempts_header(header: &str, adaptive: bool) -> String;
}

fn line(out: &mut String, text: &str) {
    out.push_str(text);
    out.push('\n');
}

/// A heading or paragraph: the text and a blank line.
fn block(out: &mut String, text: &str) {
    line(out, text);
    out.push('\n');
}

/// The whole notice, in `P`'s language.
fn notice<P: Phrases>(
    sections: &[(Option<&Route>, Facts)],
    without: &[(&Route, &NoRetry)],
    window: Option<&str>,
    from_filter_config: bool,
) -> String {
    let mut out = String::new();
    block(&mut out, P::TITLE);
    if let Some(w) = window {
        block(&mut out, &P::window(w));
    }
    block(&mut out, &P::intro(window.is_some()));
    for (route, f) in sections {
        let heading = match route {
            Some(r) => P::route_heading(&route_title(r)),
            None => P::CONFIG_HEADING.into(),
        };
        block(&mut out, &heading);
        section::<P>(&mut out, f);
        out.push('\n');
    }
    if sections.is_empty() {
        block(&mut out, P::NO_ROUTE_RETRIES);
    }
    if !without.is_empty() {
        block(&mut out, P::WITHOUT_HEADING);
        for (r, why) in without {
            line(&mut out, &P::without_retries(&route_title(r), why));
        }
        out.push('\n');
    }
    let keys: Vec<String> = idempotency_headers(sections)
        .iter()
        .map(|h| code(h))
        .collect();
    block(&mut out, P::CLIENT_HEADING);
    for step in P::client_steps(&P::keys(&keys)) {
        line(&mut out, &step);
    }
    if let Some(longest) = longest_overall(sections) {
        line(&mut out, &P::client_timeout(&duration(longest, P::LANG)));
    }
    line(&mut out, &format!("\n{}", P::footer(from_filter_config)));
    out
}

/// One route's section: what is retried, how often, how long it can take, what is not.
fn section<P: Phrases>(out: &mut String, f: &Facts) {
    let d = |ms: u64| duration(ms, P::LANG);
    let t = &f.timing;
    if f.budget_denies_all {
        line(out, &P::budget_refuses_all(&d(t.per_try_timeout_ms)));
    } else if f.retries == 0 {
        line(out, P::ZERO_RETRIES);
    } else {
        // What, how often, when.
        let mut failures = Vec::new();
        if !f.statuses.is_empty() {
            failures.push(P::statuses(&f.statuses));
        }
        if f.connect_failure {
            failures.push(P::CONNECT_FAILURE.into());
        }
        if f.timeout {
            failures.push(P::timeout(&d(t.per_try_timeout_ms)));
        }
        if f.reset {
            failures.push(P::RESET.into());
        }
        line(out, &P::retried(&failures));
        let waits = if !t.waits_possible {
            P::NO_WAITS.into()
        } else {
            match f.backoff {
                Backoff::Fixed { interval_ms } => P::fixed_wait(&d(interval_ms)),
                Backoff::Exponential {
                    jitter: Jitter::Full,
                    ..
                } => {
                    let ceilings: Vec<String> =
                        t.backoff_ceilings_ms.iter().map(|c| d(*c)).collect();
                    P::random_waits(&ceilings)
                }
                Backoff::Exponential {
                    jitter: Jitter::Equal,
                    ..
                } => {
                    let ranges: Vec<(String, String)> = t
                        .backoff_floors_ms
                        .iter()
                        .zip(&t.backoff_ceilings_ms)
                        .map(|(f, c)| (d(*f), d(*c)))
                        .collect();
                    let least = t.backoff_floors_ms.iter().sum::<u64>();
                    let most = t.backoff_ceilings_ms.iter().sum::<u64>();
                    P::ranged_waits(&ranges, &d(least), &d(most), t.retry_after_cap_ms.is_some())
                }
            }
        };
        line(out, &P::how_many(f.retries, t.attempts, &waits));
        if let Some(a) = &f.adaptive {
            line(out, &P::adaptive(&d(a.window_ms), &a.scheduled));
        }
        if !f.retry_after_statuses.is_empty() {
            let s: Vec<String> = f.retry_after_statuses.iter().map(u16::to_string).collect();
            if t.waits_possible {
                line(
                    out,
                    &P::retry_after_waits(
                        &s,
                        &d(f.retry_after_max_ms),
                        &d(t.per_try_timeout_ms),
                        &d(t.deadline_ms),
                        f.retry_after_full_waits,
                    ),
                );
            } else {
                line(out, &P::retry_after_cannot_wait(&s));
            }
        }
        // How long.
        let mut parts = P::attempts_of(t.attempts, &d(t.per_try_timeout_ms));
        if t.waits_ms > 0 {
            parts.push_str(&P::plus_waits(&d(t.waits_ms)));
            if t.retry_after_cap_ms.is_some() {
                parts.push_str(P::RETRY_AFTER_INCLUDED);
            }
        }
        if t.capped_by_deadline {
            line(
                out,
                &P::longest_capped(&d(t.longest_ms), &parts, &d(t.sum_ms), &d(t.deadline_ms)),
            );
        } else {
            line(
                out,
                &P::longest(&d(t.longest_ms), &parts, &d(t.deadline_ms)),
            );
        }
        if t.attempts_if_all_time_out < t.attempts {
            line(out, &P::all_time_out(t.attempts_if_all_time_out));
        }
    }
    if f.response_mode {
        line(out, P::RESPONSE_MODE);
    }
    // Never retried.
    let mut never = Vec::new();
    if !f.keyed_only_methods.is_empty() {
        never.push(P::without_key(&f.keyed_only_methods, &f.idempotency_header));
    }
    never.push(if f.max_body_bytes == 0 {
        P::ANY_BODY.into()
    } else {
        P::body_over(&size(f.max_body_bytes, P::LANG))
    });
    never.push(
        if f.statuses.is_empty() {
            P::ANY_STATUS
        } else {
            P::OTHER_STATUS
        }
        .into(),
    );
    line(out, P::NEVER);
    for n in never {
        line(out, &format!("  - {n}"));
    }
    if !f.unkeyed_unsafe_methods.is_empty() {
        line(
            out,
            &P::unkeyed_retried(&f.unkeyed_unsafe_methods, &f.idempotency_header),
        );
    }
    if f.retries > 0 {
        if f.budget.enabled {
            let b = &f.budget;
            line(
                out,
                &P::budget(
                    b.scope,
                    b.percent,
                    b.min_retries_per_second,
                    &d(b.window_ms),
                ),
            );
        }
        line(
            out,
            &P::attempts_header(&f.attempts_header, f.adaptive.is_some()),
        );
    }
}

/// English.
struct En;

impl Phrases for En {
    const LANG: Lang = Lang::En;

    const TITLE: &'static str = "# Notice: API gateway maintenance and automatic retries";
    fn window(window: &str) -> String {
        format!("**Maintenance window:** {window}")
    }
    fn intro(window_given: bool) -> String {
        format!(
            "{} we replace backend instances and upgrade the API gateway while traffic keeps flowing. \
             A small share of requests may meet an instance that is going away and fail with 502, 503 or 504, \
             a refused or reset connection, or a timeout, usually for a few seconds at a time. \
             The gateway retries many of these failures for you. This notice is generated from the gateway's \
             configuration: it says which failures are retried, how often, how long a request can take, \
             and what your client must do.",
            if window_given { "During this window" } else { "During maintenance windows" }
        )
    }
    fn route_heading(title: &str) -> String {
        format!("## Route {title}")
    }
    const CONFIG_HEADING: &'static str = "## Routes that use this retry configuration";
    const NO_ROUTE_RETRIES: &'static str = "No route has gateway retries enabled.";
    const WITHOUT_HEADING: &'static str = "## Routes without gateway retries";
    fn without_retries(title: &str, why: &NoRetry) -> String {
        let why = match why {
            NoRetry::ChainDisabled(Some(n)) => {
                format!("the retry filter chain `{n}` is switched off")
            }
            NoRetry::ChainDisabled(None) => "the retry filter chain is switched off".into(),
            NoRetry::FilterDisabled(_) => "the retry filter is switched off".into(),
            NoRetry::PluginDisabled => "the retry plugin is switched off".into(),
            NoRetry::NotConfigured => "no retry filter is configured".into(),
        };
        format!(
            "- {title}: {why}. Requests are sent once; any failure reaches your client directly."
        )
    }
    fn keys(keys: &[String]) -> String {
        join_en(keys)
    }
    const CLIENT_HEADING: &'static str = "## What your client must do";
    fn client_steps(key: &str) -> [String; 5] {
        [
            format!(
                "1. **Send {key} with every POST and PATCH that changes data:** one new random value (a UUID) per \
                 logical operation, reused unchanged on every retry of that operation and never for another one. \
                 It lets the gateway retry the request, and lets the API recognise a repeat and return the first \
                 result instead of doing the work twice."
            ),
            "2. **Send the same body bytes on every attempt:** serialise the body once and keep the bytes.".into(),
            "3. **Retry what the gateway cannot:** the gateway's own instances are replaced too, so retry refused \
             or reset connections, timeouts and 502/503/504 yourself, with exponential backoff, random jitter \
             and a cap (for example a random wait of up to 0.1 s, 0.2 s, 0.4 s, … at most 2 s), within an \
             overall deadline. Retry a POST or PATCH only with its key."
                .into(),
            "4. **Honour `Retry-After` on 429 and 503:** wait at least that long; if that is past your deadline, stop.".into(),
            "5. **409 Conflict:** the first request with this key is still in progress: wait and retry with the \
             same key and body. **422:** the key was reused with a different body: a bug, do not retry. \
             **400:** a required key is missing."
                .into(),
        ]
    }
    fn client_timeout(longest: &str) -> String {
        format!(
            "6. **Allow each attempt more than {longest}**, the longest the gateway may spend on a request, so that you \
             do not give up on a request the gateway is still retrying and send a second one."
        )
    }
    fn footer(from_filter_config: bool) -> &'static str {
        if from_filter_config {
            "*Generated by `kong-retry-notice` from a filter configuration, not from a route list.*"
        } else {
            "*Generated by `kong-retry-notice` from the gateway configuration.*"
        }
    }

    fn budget_refuses_all(per_try: &str) -> String {
        format!("- **Retries:** none — the retry budget has no store and refuses every retry, so each request is tried once (at most {per_try}).")
    }
    const ZERO_RETRIES: &'static str = "- **Retries:** none — the filter is on but set to 0 retries, so each request is sent once, the normal way.";
    fn statuses(statuses: &[u16]) -> String {
        let s = status_list(statuses, ", ");
        if statuses.len() == 1 {
            format!("a {s} response")
        } else {
            format!("{s} responses")
        }
    }
    const CONNECT_FAILURE: &'static str = "connections that cannot be made";
    fn timeout(per_try: &str) -> String {
        format!("attempts with no response within {per_try}")
    }
    const RESET: &'static str = "connections reset before the response is complete";
    fn retried(failures: &[String]) -> String {
        format!("- **Retried by the gateway:** {}.", failures.join("; "))
    }
    const NO_WAITS: &'static str = "retrying at once, without waiting between attempts";
    fn fixed_wait(interval: &str) -> String {
        format!("waiting {interval} before each retry")
    }
    fn random_waits(ceilings: &[String]) -> String {
        format!(
            "waiting a random time of up to {} before {}",
            join_en(ceilings),
            if ceilings.len() == 1 {
                "the retry"
            } else {
                "successive retries"
            }
        )
    }
    fn ranged_waits(
        ranges: &[(String, String)],
        least: &str,
        most: &str,
        retry_after: bool,
    ) -> String {
        let each: Vec<String> = ranges.iter().map(|(f, c)| format!("{f} to {c}")).collect();
        let longer = if retry_after {
            ", unless a `Retry-After` asks for longer"
        } else {
            ""
        };
        if ranges.len() == 1 {
            format!(
                "waiting a random time of {} before the retry{longer}",
                each.join("")
            )
        } else {
            format!(
                "waiting a random time of {} before successive retries: in all at least {least} and at most {most}{longer}",
                join_en(&each)
            )
        }
    }
    fn how_many(retries: u32, attempts: u32, waits: &str) -> String {
        format!(
            "- **How many times:** up to {retries} {} after the first attempt ({attempts} attempts in total), {waits}.",
            if retries == 1 { "retry" } else { "retries" },
        )
    }
    fn adaptive(window: &str, scheduled: &[String]) -> String {
        let scheduled = if scheduled.is_empty() {
            String::new()
        } else {
            format!(
                ", and throughout the scheduled maintenance windows ({})",
                scheduled.join("; ")
            )
        };
        format!("- **When:** only while the gateway sees trouble. Normally requests go straight to the backend and are not retried; once the gateway sees one of the failures above, it retries requests for the next {window} (longer while failures continue){scheduled}. The failure that first shows the trouble is passed on to you unretried — when a backend restarts, about one response per gateway worker process — so your client must still retry it (see below).")
    }
    fn retry_after_waits(
        statuses: &[String],
        max: &str,
        per_try: &str,
        deadline: &str,
        full_waits: Option<u32>,
    ) -> String {
        let full = match full_waits {
            None => String::new(),
            Some(0) => format!(" Even one wait of the full {max} does not fit."),
            Some(1) => format!(
                " Only one wait of the full {max} fits: a second response asking for that long is passed on to you."
            ),
            Some(k) => format!(" At most {k} waits of the full {max} fit into one request."),
        };
        format!(
            "- **`Retry-After`:** on a {} response asking for up to {max}, the gateway waits as asked, then retries — but only while the wait and one more attempt of up to {per_try} still fit into the overall deadline of {deadline}, counted from the request's arrival; otherwise, or when `Retry-After` asks for more than {max}, the response is passed on to you unchanged.{full}",
            statuses.join(" or ")
        )
    }
    fn retry_after_cannot_wait(statuses: &[String]) -> String {
        format!(
            "- **`Retry-After`:** the gateway cannot wait here, so a {} response that asks for a wait with `Retry-After` is not retried: it is passed on to you unchanged.",
            statuses.join(" or ")
        )
    }
    fn attempts_of(attempts: u32, per_try: &str) -> String {
        format!("{attempts} attempts of up to {per_try} each")
    }
    fn plus_waits(waits: &str) -> String {
        format!(" plus waits of up to {waits}")
    }
    const RETRY_AFTER_INCLUDED: &'static str = " (`Retry-After` included)";
    fn longest_capped(longest: &str, parts: &str, sum: &str, deadline: &str) -> String {
        format!("- **Longest a request can take at the gateway:** {longest}. {parts} could add up to {sum}, but the gateway's overall deadline of {deadline} ends the request first.")
    }
    fn longest(longest: &str, parts: &str, deadline: &str) -> String {
        format!("- **Longest a request can take at the gateway:** {longest}: {parts} (the overall deadline is {deadline}).")
    }
    fn all_time_out(attempts: u32) -> String {
        format!(
            "  If every attempt times out, only {attempts} {} fit into the deadline.",
            if attempts == 1 { "attempt" } else { "attempts" }
        )
    }
    const RESPONSE_MODE: &'static str = "  (Response mode: the first attempt is bounded by the proxy's own route timeout, not by the per-attempt timeout above.)";
    const NEVER: &'static str = "- **Never retried automatically:**";
    fn without_key(methods: &[String], header: &str) -> String {
        format!(
            "{} requests **without** an `{header}` header (with the header they are retried like the others)",
            join_en(methods)
        )
    }
    const ANY_BODY: &'static str = "requests with any body at all";
    fn body_over(size: &str) -> String {
        format!("requests with a body larger than {size}")
    }
    const ANY_STATUS: &'static str =
        "any response with an HTTP status (only connection-level failures are retried)";
    const OTHER_STATUS: &'static str = "responses with any other status, such as 500 or 4xx";
    fn unkeyed_retried(methods: &[String], header: &str) -> String {
        format!(
            "- **Note:** {} requests are retried here even without `{header}`; send the key anyway.",
            join_en(methods)
        )
    }
    fn budget(scope: BudgetScope, percent: u32, per_second: u32, window: &str) -> String {
        let scope = match scope {
            BudgetScope::Route => "the route's requests",
            BudgetScope::Upstream => "the requests to the same backend",
        };
        format!("- **Retry budget:** retries are limited to {percent} % of {scope} plus {per_second} per second (unused allowance is kept for at most {window}). In a real outage, failures beyond that reach you without a retry.")
    }
    fn attempts_header(header: &str, adaptive: bool) -> String {
        format!(
            "- **Response header:** `{header}` tells you how many attempts the gateway made. 1 means no retry: the first attempt answered, or the request was not eligible for gateway retries and was sent once{}.",
            if adaptive {
                "; the header is absent when the request went straight through because the gateway saw no trouble"
            } else {
                ""
            }
        )
    }
}

/// Chinese, written for Chinese readers rather than translated sentence by sentence.
struct Zh;

impl Phrases for Zh {
    const LANG: Lang = Lang::Zh;

    const TITLE: &'static str = "# 通知：API 网关维护与自动重试";
    fn window(window: &str) -> String {
        format!("**维护窗口：** {window}")
    }
    fn intro(window_given: bool) -> String {
        format!(
            "{}，我们会在不中断流量的情况下替换后端实例并升级 API 网关。\
             少量请求可能恰好落到正在下线的实例上，出现 502、503、504、连接被拒或被重置、超时等错误，\
             通常每次只持续几秒。其中很多失败网关会替你重试。本通知根据网关的实际配置生成，\
             说明哪些失败会被重试、重试几次、一个请求最长要多久，以及客户端需要做什么。",
            if window_given { "维护期间" } else { "在维护窗口内" }
        )
    }
    fn route_heading(title: &str) -> String {
        format!("## 路由 {title}")
    }
    const CONFIG_HEADING: &'static str = "## 使用此重试配置的路由";
    const NO_ROUTE_RETRIES: &'static str = "没有任何路由启用网关重试。";
    const WITHOUT_HEADING: &'static str = "## 没有网关重试的路由";
    fn without_retries(title: &str, why: &NoRetry) -> String {
        let why = match why {
            NoRetry::ChainDisabled(Some(n)) => format!("重试过滤器链 `{n}` 已关闭"),
            NoRetry::ChainDisabled(None) => "重试过滤器链已关闭".into(),
            NoRetry::FilterDisabled(_) => "重试过滤器已关闭".into(),
            NoRetry::PluginDisabled => "重试插件已关闭".into(),
            NoRetry::NotConfigured => "未配置重试过滤器".into(),
        };
        format!("- {title}：{why}。请求只发送一次，任何失败都会直接返回给客户端。")
    }
    fn keys(keys: &[String]) -> String {
        keys.join(" / ")
    }
    const CLIENT_HEADING: &'static str = "## 客户端需要做的";
    fn client_steps(key: &str) -> [String; 5] {
        [
            format!(
                "1. **所有会修改数据的 POST、PATCH 都带上 {key}：** 每个业务操作生成一个新的随机值（UUID），\
                 该操作的每次重试都原样复用，绝不用于其他操作。有了它，网关才能重试这个请求，\
                 API 也能识别出重复请求、直接返回第一次的结果，而不会把事情做两遍。"
            ),
            "2. **每次尝试发送完全相同的请求体字节：** 只序列化一次，保存好字节。".into(),
            "3. **网关兜不住的，由客户端重试：** 网关自己的实例也会被替换，所以连接被拒或被重置、超时、\
             502/503/504 需要客户端自己重试——指数退避、随机抖动、设置上限（例如依次随机等待最多 0.1 秒、\
             0.2 秒、0.4 秒……最多 2 秒），并且有总时限。POST、PATCH 只有带着原来的键才能重试。"
                .into(),
            "4. **遵守 429 和 503 的 `Retry-After`：** 至少等这么久；如果已经超出你的总时限，就停止。".into(),
            "5. **409 Conflict：** 同一个键的第一次请求还在处理中，稍等后用同一个键、同样的请求体重试。\
             **422：** 同一个键被用在了不同的请求体上，是客户端 bug，不要重试。**400：** 缺少必需的键。"
                .into(),
        ]
    }
    fn client_timeout(longest: &str) -> String {
        format!(
            "6. **单次尝试的超时要大于 {longest}**（网关处理一个请求的最长时间），\
             否则网关还在重试，你却已经放弃并发出了第二个请求。"
        )
    }
    fn footer(from_filter_config: bool) -> &'static str {
        if from_filter_config {
            "*由 `kong-retry-notice` 根据过滤器配置文件生成（不含路由信息）。*"
        } else {
            "*由 `kong-retry-notice` 根据网关配置生成。*"
        }
    }

    fn budget_refuses_all(per_try: &str) -> String {
        format!("- **重试：** 无。重试预算没有可用的存储，且配置为拒绝，所有重试都会被拒绝，每个请求只尝试一次（最长 {per_try}）。")
    }
    const ZERO_RETRIES: &'static str =
        "- **重试：** 无。过滤器已启用，但重试次数设为 0，每个请求按普通方式只发一次。";
    fn statuses(statuses: &[u16]) -> String {
        format!("返回 {}", status_list(statuses, "、"))
    }
    const CONNECT_FAILURE: &'static str = "连不上后端";
    fn timeout(per_try: &str) -> String {
        format!("单次尝试 {per_try}内无响应（超时）")
    }
    const RESET: &'static str = "响应未收完连接就被重置";
    fn retried(failures: &[String]) -> String {
        format!("- **网关会重试：** {}。", failures.join("；"))
    }
    const NO_WAITS: &'static str = "两次尝试之间不等待，立即重试";
    fn fixed_wait(interval: &str) -> String {
        format!("每次重试前固定等待 {interval}")
    }
    fn random_waits(ceilings: &[String]) -> String {
        if ceilings.len() == 1 {
            format!("重试前随机等待，最长 {}", ceilings.join(""))
        } else {
            format!("每次重试前随机等待，上限依次为 {}", ceilings.join("、"))
        }
    }
    fn ranged_waits(
        ranges: &[(String, String)],
        least: &str,
        most: &str,
        retry_after: bool,
    ) -> String {
        let each: Vec<String> = ranges.iter().map(|(f, c)| format!("{f}～{c}")).collect();
        let longer = if retry_after {
            "（`Retry-After` 要求等更久时除外）"
        } else {
            ""
        };
        if ranges.len() == 1 {
            format!("重试前随机等待 {}{longer}", each.join(""))
        } else {
            format!(
                "每次重试前随机等待，依次为 {}，各次等待合计至少 {least}、最多 {most}{longer}",
                each.join("、")
            )
        }
    }
    fn how_many(retries: u32, attempts: u32, waits: &str) -> String {
        format!(
            "- **重试次数：** 首次之后最多再重试 {retries} 次（共 {attempts} 次尝试），{waits}。"
        )
    }
    fn adaptive(window: &str, scheduled: &[String]) -> String {
        let scheduled = if scheduled.is_empty() {
            String::new()
        } else {
            format!("；计划维护窗口（{}）内也全程重试", scheduled.join("；"))
        };
        format!("- **何时重试：** 只在网关发现故障时。平时请求直接转发到后端，不做重试；网关一旦看到上面列出的某种失败，就在之后 {window}内重试请求（失败持续时会顺延）{scheduled}。最先暴露故障的那个失败响应不会被重试，会原样返回给你——后端重启时，大约每个网关工作进程一个——所以你的客户端仍然需要重试（见下文）。")
    }
    fn retry_after_waits(
        statuses: &[String],
        max: &str,
        per_try: &str,
        deadline: &str,
        full_waits: Option<u32>,
    ) -> String {
        let full = match full_waits {
            None => String::new(),
            Some(0) => format!("即使只等一次完整的 {max}也来不及。"),
            Some(1) => format!(
                "完整的 {max}只能等一次：重试后如果再次收到要求等这么久的响应，就会原样返回给你。"
            ),
            Some(k) => format!("一个请求最多能等 {k} 次完整的 {max}。"),
        };
        format!(
            "- **`Retry-After`：** 收到带 `Retry-After` 的 {} 响应时，只要要求的等待不超过 {max}，而且等完之后还来得及在总时限 {deadline}内（从请求到达网关算起）再尝试一次（每次最长 {per_try}），网关就等够再重试；否则，或者要求的等待超过 {max}，响应会原样返回给你。{full}",
            statuses.join(" 或 ")
        )
    }
    fn retry_after_cannot_wait(statuses: &[String]) -> String {
        format!(
            "- **`Retry-After`：** 网关在这里无法等待，所以带 `Retry-After` 要求等待的 {} 响应不会被重试，会原样返回给你。",
            statuses.join(" 或 ")
        )
    }
    fn attempts_of(attempts: u32, per_try: &str) -> String {
        format!("{attempts} 次尝试、每次最长 {per_try}")
    }
    fn plus_waits(waits: &str) -> String {
        format!("，加上最长 {waits}的等待")
    }
    const RETRY_AFTER_INCLUDED: &'static str = "（含 `Retry-After`）";
    fn longest_capped(longest: &str, parts: &str, sum: &str, deadline: &str) -> String {
        format!("- **单个请求在网关最长耗时：** {longest}。{parts}，合计可达 {sum}，但网关的总时限 {deadline}会先结束这个请求。")
    }
    fn longest(longest: &str, parts: &str, deadline: &str) -> String {
        format!("- **单个请求在网关最长耗时：** {longest}，即 {parts}（总时限为 {deadline}）。")
    }
    fn all_time_out(attempts: u32) -> String {
        format!("  如果每次尝试都超时，总时限内只来得及尝试 {attempts} 次。")
    }
    const RESPONSE_MODE: &'static str =
        "  （response 模式：第一次尝试受代理自身的路由超时约束，而不是上面的单次超时。）";
    const NEVER: &'static str = "- **不会自动重试：**";
    fn without_key(methods: &[String], header: &str) -> String {
        format!(
            "**不带** `{header}` 请求头的 {} 请求（带上这个头之后，会和其他请求一样被重试）",
            methods.join("、")
        )
    }
    const ANY_BODY: &'static str = "带请求体的任何请求";
    fn body_over(size: &str) -> String {
        format!("请求体超过 {size} 的请求")
    }
    const ANY_STATUS: &'static str = "任何带 HTTP 状态码的响应（只重试连接层面的失败）";
    const OTHER_STATUS: &'static str = "其他状态码的响应，例如 500 和各种 4xx";
    fn unkeyed_retried(methods: &[String], header: &str) -> String {
        format!(
            "- **注意：** 该路由上的 {} 请求即使不带 `{header}` 也会被重试，请务必带上幂等键。",
            methods.join("、")
        )
    }
    fn budget(scope: BudgetScope, percent: u32, per_second: u32, window: &str) -> String {
        let scope = match scope {
            BudgetScope::Route => "该路由请求数",
            BudgetScope::Upstream => "发往同一后端的请求数",
        };
        format!("- **重试预算：** 重试量上限为{scope}的 {percent}%，另加每秒 {per_second} 次（未用完的额度最多保留 {window}）。遇到真正的故障时，超出部分的失败会直接返回给你，不再重试。")
    }
    fn attempts_header(header: &str, adaptive: bool) -> String {
        format!(
            "- **响应头：** `{header}` 表示网关一共尝试了几次。1 表示没有重试：要么第一次就拿到了结果，要么请求不符合网关重试条件、只发送了一次{}。",
            if adaptive {
                "；网关未发现故障、直接转发的请求不带这个头"
            } else {
                ""
            }
        )
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
