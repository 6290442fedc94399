//! One request: host callbacks become `exchange` events, actions become host calls.

mod keys;

use super::abi;
use super::env::{report_failure, HostEnv};
use super::kong_response;
use super::root::{Host, Notice, Shared};
use crate::adaptive::{self, Handling};
use crate::config::{self, BudgetScope, Mode, Plan, ProtectionScope, Scheme};
use crate::exchange::{
    Action, Attempt, AttemptResponse, BodyRead, Event, Exchange, Execution, FinalResponse, Target,
};
use crate::header_map::{first, Headers};
use crate::metrics::{self, Counter};
use crate::retry::outcome::{Failure, Outcome};
use crate::state::idempotency::etcd_steps::{EtcdClaim, EtcdLock};
use crate::state::protection::Protection;
use keys::{Step, StoreCall};
use proxy_wasm::types::Action as HostAction;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Path of the loopback delay server's endpoint (kong/delay-server.conf).
const DELAY_PATH: &str = "/kong-retry/delay";

/// How much longer than the delay a wait on the delay endpoint may take before its dispatch
/// times out. A timeout equal to the delay fires before the server's 204 and makes Kong log
/// `[error] dispatch failed: tcp socket - timed out reading` for every wait.
const DELAY_GRACE_MS: u64 = 1000;

/// What a dispatch token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Attempt `number`, sent at `sent_ms` with this dispatch timeout.
    Attempt {
        number: u32,
        sent_ms: u64,
        timeout_ms: u64,
    },
    /// A Kong wait on the delay endpoint that should end at `due_ms`.
    Delay { due_ms: u64, ms: u64 },
    /// Kong: a call to the delay endpoint whose answer carries the final response out (see
    /// [`Driver::relay_response`]).
    Relay,
    /// A call to the idempotency store (etcd).
    Store(StoreCall),
}

/// Where an action is executed, which decides how "go on" is said to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Request headers or body: return Continue / Pause.
    Request,
    /// Response headers (response mode): return Continue / Pause.
    ResponseHeaders,
    /// Response body (a native result being stored): return Continue / Pause.
    ResponseBody,
    /// A dispatch answer or a tick: the stream is resumed explicitly.
    Async,
}

/// The executor of one request's exchange.
pub struct Driver {
    id: u32,
    shared: Rc<Shared>,
    host: Host,
    /// Boxed: the calm path has none, and a smaller driver is cheaper to create.
    exchange: Option<Box<Exchange>>,
    tokens: BTreeMap<u32, Purpose>,
    /// Kong: the local response's body must be put back byte-exact in the body phase.
    body_fix_pending: bool,
    /// Which retry budget this request spends from (a route id or the upstream).
    scope: String,
    /// The request's end was counted in the metrics.
    counted: bool,
    /// Adaptive mode: the protection flag this request reports failures to.
    watch: Option<Watch>,
    /// The host can wait between attempts (not Kong without `delay_endpoint`).
    can_wait: bool,
    /// This driver, for the root's registry: registered only when the root must act for
    /// the request (an Envoy wait), so that a request that never waits costs no map entry.
    this: Weak<RefCell<Driver>>,
    registered: bool,
    /// Kong: the callback being handled is that of a failed dispatch (`:dispatch_status` not
    /// `ok`). A local response sent from it reaches the client as a dropped connection.
    in_failed_call: bool,
    /// The response has begun (its headers were seen): "go on" now means the response.
    response_started: bool,
    /// Gateway idempotency on etcd: the claim under way, and the lock it won.
    etcd_claim: Option<Box<EtcdClaim>>,
    etcd_lock: Option<EtcdLock>,
}

/// Adaptive mode: which protection scope a request belongs to, and which way it went.
struct Watch {
    /// `None`: the VM's fixed scope (see `VmProtection::fixed_scope`).
    scope: Option<String>,
    /// It took the native path because the scope was calm: a failure it reveals reaches
    /// the client as it is.
    calm: bool,
}

impl Driver {
    /// A driver for request `id`; it knows itself weakly, for the root's registry.
    pub fn new_shared(id: u32, shared: Rc<Shared>) -> Rc<RefCell<Driver>> {
        Rc::new_cyclic(|this| {
            RefCell::new(Driver {
                id,
                shared,
                host: Host::Unknown,
                exchange: None,
                tokens: BTreeMap::new(),
                body_fix_pending: false,
                scope: String::new(),
                counted: false,
                watch: None,
                can_wait: true,
                this: this.clone(),
                registered: false,
                in_failed_call: false,
                response_started: false,
                etcd_claim: None,
                etcd_lock: None,
            })
        })
    }

    /// Takes on request `id` (a spare driver, reset when its last request ended).
    pub fn serve(&mut self, id: u32) {
        self.id = id;
    }

    /// Forgets the finished request (its memory too), so the driver can serve the next.
    pub fn reset(&mut self) {
        if self.registered {
            self.shared.unregister(self.id);
        }
        self.host = Host::Unknown;
        self.exchange = None;
        self.tokens.clear();
        self.body_fix_pending = false;
        self.scope.clear();
        self.counted = false;
        self.watch = None;
        self.can_wait = true;
        self.registered = false;
        self.in_failed_call = false;
        self.response_started = false;
        self.etcd_claim = None;
        self.etcd_lock = None;
    }

    fn handle(&mut self, event: Event) -> Option<Action> {
        let shared = self.shared.clone();
        let mut env = HostEnv {
            shared: &shared,
            host: self.host,
            scope: &self.scope,
            context_id: self.id,
            can_wait: self.can_wait,
            watch: self.watch.as_ref().map(|w| w.scope.as_deref()),
        };
        let action = self
            .exchange
            .as_deref_mut()
            .map(|x| x.handle(event, &mut env));
        self.count_end();
        action
    }

    /// Counts how the request ended, once, as soon as it is over.
    fn count_end(&mut self) {
        let Some(x) = self.exchange.as_deref() else {
            return;
        };
        if self.counted || !metrics::finished(x) {
            return;
        }
        self.counted = true;
        if let Some(c) = metrics::on_finish(x) {
            self.shared.metrics.borrow_mut().add(c);
        }
    }

    /// The id of the request's route: Kong `kong.route_id`, Envoy `xds.route_name`.
    fn route_id(&self) -> Option<String> {
        const KONG: &[&str] = &["kong", "route_id"];
        const ENVOY: &[&str] = &["xds", "route_name"];
        let paths: &[&[&str]] = match self.host {
            Host::Kong => &[KONG],
            Host::Envoy => &[ENVOY],
            Host::Unknown => &[KONG, ENVOY],
        };
        paths
            .iter()
            .find_map(|p| abi::property(p).and_then(|v| String::from_utf8(v).ok()))
    }

    /// Adaptive mode: the protection scope of this request; `None` when the config fixes it
    /// (see `VmProtection::fixed_scope`). Upstream scope: the configured `upstream`, else the
    /// route's service (Kong `kong.service_id`: a short id, read instead of parsing
    /// `kong.router.service` on the calm path) or cluster (Envoy `xds.cluster_name`). Route
    /// scope: the route id, else the upstream scope.
    fn protection_scope(&self, plan: &Plan) -> Option<String> {
        if plan.adaptive.scope == ProtectionScope::Upstream && plan.upstream.is_some() {
            return None;
        }
        let upstream = || match &plan.upstream {
            Some(u) => Some(u.target.clone()),
            None => {
                let path: &[&str] = match self.host {
                    Host::Envoy => &["xds", "cluster_name"],
                    Host::Kong | Host::Unknown => &["kong", "service_id"],
                };
                abi::property(path).and_then(|v| String::from_utf8(v).ok())
            }
        };
        let scope = match plan.adaptive.scope {
            ProtectionScope::Upstream => upstream(),
            ProtectionScope::Route => self.route_id().or_else(upstream),
        };
        // Nothing names the scope: all requests of this filter share one flag.
        Some(scope.unwrap_or_else(|| "unscoped".to_string()))
    }

    /// Adaptive mode: is this request's scope calm (native path, the filter only watches)
    /// or protected? Counts it either way.
    fn adaptive_handling(&mut self, plan: &Plan) -> Handling {
        let scope = self.protection_scope(plan);
        let protection = match (
            self.shared.store.try_borrow_mut(),
            self.shared.protection.try_borrow_mut(),
        ) {
            (Ok(mut store), Ok(mut protection)) => protection.check(
                &mut store,
                self.host,
                scope.as_deref(),
                abi::now_ms(),
                self.id,
            ),
            _ => Protection::Calm,
        };
        let handling = Handling::of(protection);
        let mut metrics = self.shared.metrics.borrow_mut();
        match handling {
            Handling::Watch => metrics.add_calm(Counter::CalmRequests),
            Handling::Protect => metrics.add(Counter::ProtectedRequests),
        }
        drop(metrics);
        self.watch = Some(Watch {
            scope,
            calm: handling == Handling::Watch,
        });
        handling
    }

    /// Adaptive mode: a natively proxied response (calm, or a request the filter let go)
    /// with a status that reveals trouble protects the scope. Reads only `:status`.
    fn watch_native_response(&mut self) {
        let Some(watch) = self.watch.as_ref() else {
            return;
        };
        let Ok(Some(value)) = abi::get_header(abi::RESPONSE_HEADERS, ":status") else {
            return;
        };
        let Some(status) = adaptive::parse_status(&value) else {
            return;
        };
        let reveals = self
            .shared
            .protection
            .try_borrow()
            .is_ok_and(|p| p.reveals(self.host, status));
        if !reveals {
            return;
        }
        if watch.calm {
            self.shared
                .metrics
                .borrow_mut()
                .add(Counter::FailuresSeenCalm);
        }
        report_failure(
            &self.shared,
            self.host,
            watch.scope.as_deref(),
            self.id,
            Outcome::Status(status),
        );
    }

    /// Resolves execution mode and target for this request; `None` leaves it alone.
    /// `body_follows`: the host said the request headers are not the end of the stream (Kong
    /// always says so; only Envoy's answer is used).
    fn start_exchange(&mut self, plan: Rc<Plan>, body_follows: bool) -> Option<Exchange> {
        self.can_wait = self.host == Host::Envoy || plan.delay_endpoint.is_some();
        let execution = match (plan.mode, self.host) {
            (Mode::Response, Host::Kong) => {
                self.shared.notice_once(
                    Notice::ResponseModeOnKong,
                    "mode \"response\" is not possible on Kong; using dispatch mode",
                );
                Execution::Dispatch
            }
            (Mode::Response, _) | (Mode::Auto | Mode::Adaptive, Host::Envoy) => Execution::Response,
            // Envoy hands the body to a filter only after its headers went on to the router,
            // which then sends them upstream: a dispatched attempt 1 would leave a second,
            // bodiless request at the upstream. Attempt 1 goes natively instead (seen on
            // Envoy 1.40: the upstream got the dispatched PUT and a headers-only one).
            (Mode::Dispatch, Host::Envoy) if body_follows => {
                self.shared.notice_once(
                    Notice::DispatchBodyOnEnvoy,
                    "dispatch mode on Envoy: a request with a body takes its first attempt natively (Envoy forwards the headers before the filter sees the body); retries are dispatched",
                );
                Execution::Response
            }
            _ => Execution::Dispatch,
        };
        let upstream = match &plan.upstream {
            Some(u) => Some(u.clone()),
            None => match self.host {
                Host::Envoy => abi::property(&["xds", "cluster_name"])
                    .and_then(|v| String::from_utf8(v).ok())
                    .map(|target| config::Upstream {
                        target,
                        scheme: Scheme::Http,
                    }),
                _ => abi::property(&["kong", "router", "service"])
                    .and_then(|json| config::upstream_from_kong_service(&json)),
            },
        };
        let Some(upstream) = upstream else {
            self.shared.notice_once(
                Notice::NoUpstream,
                "no `upstream` configured and the host names none (Kong: kong.router.service, Kong 3.6+; Envoy: xds.cluster_name); requests go the native way without retries",
            );
            return None;
        };
        let scope_id = |scope: BudgetScope| match scope {
            BudgetScope::Upstream => upstream.target.clone(),
            BudgetScope::Route => self.route_id().unwrap_or_else(|| upstream.target.clone()),
        };
        let budget_scope = scope_id(plan.budget.scope);
        let key_scope = if !plan.idempotency.enabled {
            String::new()
        } else if plan.idempotency.scope == plan.budget.scope {
            budget_scope.clone()
        } else {
            scope_id(plan.idempotency.scope)
        };
        self.scope = budget_scope;
        Some(
            Exchange::new(
                plan,
                execution,
                Target {
                    upstream: upstream.target,
                    scheme: upstream.scheme,
                },
            )
            .with_key_scope(key_scope),
        )
    }

    /// Kong dispatch mode: what the native proxy would send as path and Host, if the host
    /// tells (`ngx.upstream_uri` applies the route's strip_path and the service's path).
    fn kong_overrides(&self, target: &str) -> (Option<String>, Option<String>) {
        if self.host == Host::Envoy {
            return (None, None);
        }
        let text = |p: &[&str]| abi::property(p).and_then(|v| String::from_utf8(v).ok());
        let path = text(&["ngx", "upstream_uri"]);
        let host = text(&["ngx", "upstream_host"]).or_else(|| Some(authority_of(target)));
        (path, host)
    }

    /// `end_of_stream`: the host says no body follows (Envoy; Kong always says false).
    pub fn on_request_headers(&mut self, end_of_stream: bool) -> HostAction {
        let Some(plan) = self.shared.plan.borrow().clone() else {
            return HostAction::Continue;
        };
        self.shared.metrics.borrow_mut().add_calm(Counter::Requests);
        self.host = self.shared.host();
        // The calm path: no header read, no copy, no exchange.
        if plan.mode == Mode::Adaptive && self.adaptive_handling(&plan) == Handling::Watch {
            return HostAction::Continue;
        }
        self.exchange = self.start_exchange(plan, !end_of_stream).map(Box::new);
        let Some(target) = self
            .exchange
            .as_deref()
            .map(|x| x.target().upstream.clone())
        else {
            return HostAction::Continue;
        };
        let mut headers = match abi::get_headers(abi::REQUEST_HEADERS) {
            Ok(h) => h,
            Err(s) => {
                log::warn!(
                    "kong_retry [{}]: cannot read request headers (status {}); not retrying",
                    self.id,
                    s.0
                );
                self.exchange = None;
                return HostAction::Continue;
            }
        };
        if end_of_stream {
            // No body will come, whatever the framing headers announce (e.g. `transfer-encoding:
            // chunked` with no data): the exchange must not wait for a body callback the host
            // will never make. The copy drops both headers anyway.
            headers.retain(|(n, _)| n != "content-length" && n != "transfer-encoding");
        } else if self.host == Host::Envoy
            && !headers
                .iter()
                .any(|(n, _)| n == "content-length" || n == "transfer-encoding")
        {
            // A body follows with no length: Envoy's codec strips `transfer-encoding:
            // chunked` from what filters see (Envoy 1.40). Without this the exchange took the
            // request for bodiless and retried a chunked PUT with an empty body.
            headers.push(("transfer-encoding".to_string(), b"chunked".to_vec()));
        }
        let (path, authority) = self.kong_overrides(&target);
        let action = self.handle(Event::RequestHeaders {
            headers,
            path,
            authority,
        });
        self.bound_native_attempt();
        self.run(action, Phase::Request)
    }

    /// Envoy, attempt 1 on the native way: bounds it by `per_try_timeout` (else only the
    /// route's timeout ends it, and a hanging attempt outlives the deadline and the key's
    /// lock). Envoy's router takes `x-envoy-upstream-rq-timeout-ms` from the request it
    /// forwards and removes it (router.cc `FilterUtility::finalTimeout`); checked on Envoy
    /// 1.40 by harness/tests/idempotency_two_nodes.rs.
    fn bound_native_attempt(&self) {
        let Some(x) = self.exchange.as_deref() else {
            return;
        };
        if self.host != Host::Envoy || !x.native_attempt_ahead() {
            return;
        }
        let ms = x.first_attempt_timeout_ms().to_string();
        if abi::replace_header(
            abi::REQUEST_HEADERS,
            "x-envoy-upstream-rq-timeout-ms",
            ms.as_bytes(),
        )
        .is_err()
        {
            log::debug!("kong_retry [{}]: cannot bound the native attempt", self.id);
        }
    }

    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> HostAction {
        let Some(x) = self.exchange.as_deref() else {
            return HostAction::Continue;
        };
        let max = x.max_body_bytes();
        let read = if !end_of_stream || body_size > max {
            BodyRead::Partial(body_size)
        } else if body_size == 0 {
            BodyRead::Complete(Vec::new())
        } else {
            match abi::get_buffer(abi::HTTP_REQUEST_BODY, 0, body_size) {
                Ok(Some(b)) if b.len() == body_size => BodyRead::Complete(b),
                _ => BodyRead::Unreadable,
            }
        };
        let action = self.handle(Event::RequestBody(read));
        self.run(action, Phase::Request)
    }

    /// `end_of_stream`: no body follows (Envoy; Kong always says false).
    pub fn on_response_headers(&mut self, end_of_stream: bool) -> HostAction {
        self.response_started = true;
        let Some(x) = self.exchange.as_deref() else {
            self.watch_native_response();
            return HostAction::Continue;
        };
        if let Some(sent) = x.sent_response() {
            if self.host == Host::Kong {
                kong_response::restore_headers(self.id, &sent.headers);
                self.body_fix_pending = !sent.body.is_empty();
            }
            return HostAction::Continue;
        }
        if x.awaits_native_response() {
            let headers = abi::get_headers(abi::RESPONSE_HEADERS).unwrap_or_default();
            let proxy_made = x.holds_key() && self.envoy_made(&headers);
            let action = self.handle(Event::UpstreamResponseHeaders {
                headers,
                proxy_made,
            });
            let go_on = self.run(action, Phase::ResponseHeaders);
            if end_of_stream
                && self
                    .exchange
                    .as_deref()
                    .is_some_and(Exchange::reads_native_body)
            {
                // No body callback follows: the result is the headers alone.
                return self.native_body_read(Some(Vec::new()), Phase::ResponseHeaders);
            }
            return go_on;
        }
        self.watch_native_response();
        self.label_native_response();
        HostAction::Continue
    }

    pub fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> HostAction {
        // Response mode: the native response is held while a retry runs (Envoy delivers its
        // body even though the headers were paused).
        if self.exchange.as_deref().is_some_and(Exchange::retrying) {
            return HostAction::Pause;
        }
        if let Some(max) = self
            .exchange
            .as_deref()
            .filter(|x| x.reads_native_body())
            .map(Exchange::max_response_bytes)
        {
            if body_size > max {
                // Not stored: the key stays locked until lock_timeout (documented).
                return self.native_body_read(None, Phase::ResponseBody);
            }
            if !end_of_stream {
                // Envoy buffers the body until the end of the stream.
                return HostAction::Pause;
            }
            let body = match abi::get_buffer(abi::HTTP_RESPONSE_BODY, 0, body_size) {
                Ok(Some(b)) if b.len() == body_size => Some(b),
                Ok(None) if body_size == 0 => Some(Vec::new()),
                _ => None,
            };
            return self.native_body_read(body, Phase::ResponseBody);
        }
        if !self.body_fix_pending {
            return HostAction::Continue;
        }
        if !end_of_stream {
            return HostAction::Pause;
        }
        self.body_fix_pending = false;
        if let Some(sent) = self.exchange.as_deref().and_then(Exchange::sent_response) {
            kong_response::restore_body(self.id, body_size, &sent.body);
        }
        HostAction::Continue
    }

    /// The native response whose result is to be stored is read (`None`: it could not be).
    fn native_body_read(&mut self, body: Option<Vec<u8>>, phase: Phase) -> HostAction {
        let action = self.handle(Event::NativeResponse { body });
        self.run(action, phase)
    }

    /// Did Envoy make this 502/503/504 itself (after an upstream reset or timeout)? Only
    /// `response.code_details` = `via_upstream` says the upstream sent it (and so did not
    /// apply the request, for 502 and 503); unreadable counts as Envoy's own, the safe
    /// reading. Read only for a held key: it decides nothing else.
    fn envoy_made(&self, headers: &Headers) -> bool {
        let status = first(headers, ":status").and_then(|s| s.trim().parse::<u16>().ok());
        self.host == Host::Envoy
            && matches!(status, Some(502..=504))
            && abi::property(&["response", "code_details"]).is_none_or(|v| v != b"via_upstream")
    }

    /// Tells the client how many attempts a natively proxied response took.
    fn label_native_response(&self) {
        let Some(x) = self.exchange.as_deref() else {
            return;
        };
        let attempts = x.attempts().max(1).to_string();
        if abi::replace_header(
            abi::RESPONSE_HEADERS,
            x.attempts_header(),
            attempts.as_bytes(),
        )
        .is_err()
        {
            log::debug!("kong_retry [{}]: cannot set the attempts header", self.id);
        }
    }

    /// Answer to a dispatch (an attempt, a Kong wait on the delay endpoint, or a relay).
    pub fn on_call_response(&mut self, token: u32, _num_headers: usize, body_size: usize) {
        let Some(purpose) = self.tokens.remove(&token) else {
            log::warn!(
                "kong_retry [{}]: answer for unknown dispatch {token} ignored",
                self.id
            );
            return;
        };
        // Kong's `:dispatch_status` (Envoy has none): read once, for the relay rule and the
        // attempt's outcome alike.
        let dispatch_status = match self.host {
            Host::Envoy => None,
            Host::Kong | Host::Unknown => dispatch_status(),
        };
        self.in_failed_call = dispatch_status
            .as_deref()
            .is_some_and(|s| !s.trim().eq_ignore_ascii_case("ok"));
        let action = match purpose {
            Purpose::Delay { due_ms, ms } => {
                if !self.in_failed_call && abi::now_ms().saturating_add(ms / 10) < due_ms {
                    self.shared.notice_once(
                        Notice::EarlyDelay,
                        "the delay endpoint answered before the delay was over; check delay_endpoint (kong/delay-server.conf)",
                    );
                }
                self.handle(Event::DelayElapsed)
            }
            Purpose::Relay => {
                self.deliver_relayed();
                None
            }
            Purpose::Store(call) => {
                let response = read_call_response(body_size, dispatch_status.as_deref());
                let answer = match response.outcome {
                    Outcome::Status(status) => Some((status, response.body)),
                    Outcome::Failed(_) => None,
                };
                match self.on_store_answer(call, answer) {
                    Some(event) => self.handle(event),
                    // The next call of the sequence is out.
                    None => return,
                }
            }
            Purpose::Attempt {
                number: n,
                sent_ms,
                timeout_ms,
            } => {
                let mut response = read_call_response(body_size, dispatch_status.as_deref());
                // Envoy reports every failed dispatch without a reason; one that ends when
                // its timeout does is the timeout.
                if response.outcome == Outcome::Failed(Failure::Unspecified)
                    && abi::now_ms().saturating_sub(sent_ms) >= timeout_ms
                {
                    response.outcome = Outcome::Failed(Failure::Timeout);
                }
                log::debug!(
                    "kong_retry [{}]: attempt {n} -> {}",
                    self.id,
                    response.outcome.label()
                );
                self.handle(Event::AttemptResult(response))
            }
        };
        self.run(action, Phase::Async);
        self.in_failed_call = false;
    }

    /// An Envoy wait is over (the root acts for this request).
    pub fn on_delay_elapsed(&mut self) {
        let action = self.handle(Event::DelayElapsed);
        self.run(action, Phase::Async);
    }

    /// Executes actions until one leaves the request waiting for the host.
    fn run(&mut self, mut action: Option<Action>, phase: Phase) -> HostAction {
        // Bounded: each loop turn is a refused dispatch or a skipped wait, and every one of
        // those spends an attempt.
        for _ in 0..64 {
            let Some(a) = action.take() else {
                return HostAction::Continue;
            };
            match a {
                Action::PassThrough => return self.pass_through(phase),
                Action::Pause => return HostAction::Pause,
                // Kong reads the body after a Continue (a Pause would wait for nothing);
                // Envoy must not forward the headers yet: its Pause buffers the body.
                // Continue on both hosts. Envoy (proxy-wasm-cpp-host) turns a Pause in request
                // headers into StopAllIterationAndWatermark: the filter's own body callback is
                // then never called, and the request hangs (seen on Envoy 1.40). After a
                // Continue, the body callback's Pause buffers the body until end of stream.
                Action::ReadBody => return HostAction::Continue,
                Action::Dispatch(attempt) => match self.dispatch(&attempt) {
                    Ok(()) => return HostAction::Pause,
                    Err(()) => action = self.handle(Event::DispatchRefused),
                },
                Action::Wait { ms, next_attempt } => {
                    if self.wait(ms, next_attempt) {
                        return HostAction::Pause;
                    }
                    action = self.handle(Event::DelayElapsed);
                }
                Action::Claim(req) => match self.claim(req) {
                    Step::Now(answer) => action = self.handle(Event::Claimed(answer)),
                    Step::Pending => return HostAction::Pause,
                },
                Action::Settle(req) => match self.settle(req) {
                    Step::Now(()) => action = self.handle(Event::Settled),
                    Step::Pending => return HostAction::Pause,
                },
                // The head goes on; the body is held until it is whole and its result
                // stored (on_response_body), so no body byte reaches the client before a
                // duplicate can be replayed. The head cannot be held too: a Pause in
                // response headers is StopAllIterationAndWatermark on Envoy, whose body
                // callbacks then never come (seen on 1.40: every such response hung).
                Action::ReadNativeBody if phase == Phase::ResponseHeaders => {
                    return self.pass_through(phase);
                }
                // Only a response-headers callback can decide to store a native result;
                // anywhere else its body is out of reach: the key stays locked.
                Action::ReadNativeBody => {
                    action = self.handle(Event::NativeResponse { body: None })
                }
                Action::Respond(resp) => {
                    log::debug!(
                        "kong_retry [{}]: answering {} after {} attempt(s)",
                        self.id,
                        resp.status,
                        self.exchange.as_deref().map_or(0, Exchange::attempts)
                    );
                    if self.in_failed_call && phase == Phase::Async {
                        return self.relay_response();
                    }
                    return match self.send_final(&resp) {
                        Ok(()) => HostAction::Pause,
                        Err(()) => self.pass_through(phase),
                    };
                }
            }
        }
        HostAction::Continue
    }

    /// Kong: the final response is ready in the callback of a failed dispatch, where
    /// ngx_wasm_module does not resume the filter chain after the callback (its dispatch
    /// error path, ngx_http_proxy_wasm_dispatch.c), so a local response sent there reached
    /// clients as a dropped connection (`[alert] zero size buf in writer`, seen on nginx
    /// 1.27.4 + ngx_wasm_module 3bed278). With another dispatch pending the host waits for
    /// it instead; its answer comes through the normal path, where the response is sent.
    /// The delay endpoint answers a zero wait at once. Without one, the request goes the
    /// native way once more: never a dropped connection.
    fn relay_response(&mut self) -> HostAction {
        if let Some(endpoint) = self.delay_endpoint() {
            if let Some(token) = dispatch_delay(&endpoint, 0) {
                self.track(token, Purpose::Relay);
                return HostAction::Pause;
            }
        }
        self.shared.notice_once(
            Notice::NoRelay,
            "the last attempt failed without a response and Kong cannot deliver the filter's own answer from that callback; the request goes the native way once more (set `delay_endpoint` to answer 502/504 instead)",
        );
        self.abandon_response()
    }

    /// The relay call is answered: send the final response, or give the request to the
    /// native path if the relay failed too.
    fn deliver_relayed(&mut self) {
        if self.in_failed_call {
            self.abandon_response();
            return;
        }
        let Some(resp) = self
            .exchange
            .as_deref()
            .and_then(Exchange::sent_response_rc)
        else {
            return;
        };
        if self.send_final(&resp).is_err() {
            self.abandon_response();
        }
    }

    /// Sends the final response to the client (`send_http_response`); an error is logged.
    fn send_final(&self, resp: &FinalResponse) -> Result<(), ()> {
        let (headers, body) = self.head_framing(&resp.headers, &resp.body);
        abi::send_local_response(resp.status, &headers, &body).map_err(|s| {
            log::error!(
                "kong_retry [{}]: cannot send the response (status {})",
                self.id,
                s.0
            );
        })
    }

    /// The configured delay endpoint (Kong's waits and relays), if any.
    fn delay_endpoint(&self) -> Option<String> {
        self.shared
            .plan
            .borrow()
            .as_ref()
            .and_then(|p| p.delay_endpoint.clone())
    }

    /// The filter's answer cannot be delivered: the request goes natively (once more).
    fn abandon_response(&mut self) -> HostAction {
        if let Some(x) = self.exchange.as_deref_mut() {
            x.withdraw_response();
        }
        if let Err(s) = abi::continue_stream(abi::STREAM_REQUEST) {
            log::error!(
                "kong_retry [{}]: cannot resume the request (status {})",
                self.id,
                s.0
            );
        }
        HostAction::Continue
    }

    /// The headers and body to hand to `send_http_response`. Only a HEAD answer keeps the
    /// upstream's `content-length` (the exchange drops it otherwise). Envoy 1.40 removes
    /// `content-length` from a local response with an empty body, and for a HEAD request
    /// sets it from the body it is given and sends no body: so on Envoy the HEAD answer is
    /// given a body of that length (up to `max_body_bytes`); elsewhere the header goes.
    fn head_framing<'a>(
        &self,
        headers: &'a crate::header_map::Headers,
        body: &'a [u8],
    ) -> (
        std::borrow::Cow<'a, crate::header_map::Headers>,
        std::borrow::Cow<'a, [u8]>,
    ) {
        use std::borrow::Cow;
        let Some(length) = first(headers, "content-length") else {
            return (Cow::Borrowed(headers), Cow::Borrowed(body));
        };
        let length = length.trim().parse::<usize>().ok();
        let max = self.exchange.as_deref().map_or(0, Exchange::max_body_bytes);
        let without: crate::header_map::Headers = headers
            .iter()
            .filter(|(n, _)| n != "content-length")
            .cloned()
            .collect();
        match length {
            Some(n) if self.host == Host::Envoy && body.is_empty() && n <= max => {
                (Cow::Owned(without), Cow::Owned(vec![0u8; n]))
            }
            _ => (Cow::Owned(without), Cow::Borrowed(body)),
        }
    }

    fn pass_through(&mut self, phase: Phase) -> HostAction {
        match phase {
            Phase::Request => HostAction::Continue,
            Phase::ResponseHeaders => {
                self.label_native_response();
                HostAction::Continue
            }
            Phase::ResponseBody => HostAction::Continue,
            Phase::Async => {
                let stream = if self.response_started {
                    self.label_native_response();
                    abi::STREAM_RESPONSE
                } else {
                    abi::STREAM_REQUEST
                };
                if let Err(s) = abi::continue_stream(stream) {
                    log::error!(
                        "kong_retry [{}]: cannot resume the stream (status {})",
                        self.id,
                        s.0
                    );
                }
                HostAction::Continue
            }
        }
    }

    fn dispatch(&mut self, attempt: &Attempt) -> Result<(), ()> {
        let Some(x) = self.exchange.as_deref() else {
            return Err(());
        };
        let headers = x.dispatch_headers(attempt.number);
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(n, v)| std::str::from_utf8(v).ok().map(|v| (n.as_str(), v)))
            .collect();
        let body = x.dispatch_body();
        let body = (!body.is_empty()).then_some(body);
        let upstream = x.target().upstream.clone();
        let result = proxy_wasm::hostcalls::dispatch_http_call(
            &upstream,
            pairs,
            body,
            Vec::new(),
            Duration::from_millis(attempt.timeout_ms),
        );
        match result {
            Ok(token) => {
                self.track(
                    token,
                    Purpose::Attempt {
                        number: attempt.number,
                        sent_ms: abi::now_ms(),
                        timeout_ms: attempt.timeout_ms,
                    },
                );
                if let Some(reason) = attempt.reason {
                    self.shared.metrics.borrow_mut().add_retry(reason);
                    log::info!(
                        "kong_retry [{}]: retry: attempt {} after {} (waited {} ms)",
                        self.id,
                        attempt.number,
                        reason.label(),
                        attempt.waited_ms
                    );
                }
                Ok(())
            }
            Err(status) => {
                log::warn!(
                    "kong_retry [{}]: dispatch of attempt {} to {upstream} refused ({status:?})",
                    self.id,
                    attempt.number
                );
                Err(())
            }
        }
    }

    fn track(&mut self, token: u32, purpose: Purpose) {
        self.tokens.insert(token, purpose);
        if self.shared.acting_for_request.get() {
            self.shared.note_root_token(token, self.id);
        }
    }

    /// Starts a wait of `ms`; false when this host cannot wait (the retry then goes now).
    fn wait(&mut self, ms: u64, next_attempt: u32) -> bool {
        match self.host {
            Host::Envoy => {
                if !self.registered {
                    self.registered = true;
                    self.shared.register(self.id, self.this.clone());
                }
                if self.shared.schedule(self.id, ms) {
                    return true;
                }
                self.shared.notice_once(
                    Notice::NoTimer,
                    "the host refused a tick period; retries go without backoff",
                );
                false
            }
            Host::Kong | Host::Unknown => {
                let Some(endpoint) = self.delay_endpoint() else {
                    self.shared.notice_once(
                        Notice::NoDelayEndpoint,
                        "no `delay_endpoint` configured: Kong offers no per-request timer, so retries go immediately, without backoff",
                    );
                    return false;
                };
                match dispatch_delay(&endpoint, ms) {
                    Some(token) => {
                        let due_ms = abi::now_ms().saturating_add(ms);
                        self.track(token, Purpose::Delay { due_ms, ms });
                        log::debug!(
                            "kong_retry [{}]: waiting {ms} ms before attempt {next_attempt}",
                            self.id
                        );
                        true
                    }
                    None => {
                        log::warn!(
                            "kong_retry [{}]: delay endpoint {endpoint} refused the wait; retrying now",
                            self.id
                        );
                        false
                    }
                }
            }
        }
    }
}

/// Asks the delay endpoint to answer after `ms`; the token, or `None` if the host refused.
fn dispatch_delay(endpoint: &str, ms: u64) -> Option<u32> {
    let path = format!("{DELAY_PATH}?ms={ms}");
    let headers = vec![
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", endpoint),
        (":scheme", "http"),
    ];
    proxy_wasm::hostcalls::dispatch_http_call(
        endpoint,
        headers,
        None,
        Vec::new(),
        Duration::from_millis(ms.saturating_add(DELAY_GRACE_MS)),
    )
    .ok()
}

/// Kong's `:dispatch_status` of the dispatch being answered (`ok`, `timeout`, `broken
/// connection`, ...). Kong answers it by name only, not among the pairs.
fn dispatch_status() -> Option<String> {
    abi::get_header(abi::CALL_RESPONSE_HEADERS, ":dispatch_status")
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
}

/// `host[:port]` → the Host header value (default ports dropped).
fn authority_of(target: &str) -> String {
    target
        .strip_suffix(":80")
        .or_else(|| target.strip_suffix(":443"))
        .unwrap_or(target)
        .to_string()
}

/// Reads a dispatch answer through raw host calls; anything unreadable is a failed attempt.
/// `dispatch_status`: Kong's `:dispatch_status`, already read.
fn read_call_response(body_size: usize, dispatch_status: Option<&str>) -> AttemptResponse {
    let headers = abi::get_headers(abi::CALL_RESPONSE_HEADERS);
    let (headers, headers_ok) = match headers {
        Ok(h) => (h, true),
        Err(_) => (Vec::new(), false),
    };
    let (body, body_ok) = if body_size == 0 {
        (Vec::new(), true)
    } else {
        match abi::get_buffer(abi::HTTP_CALL_RESPONSE_BODY, 0, body_size) {
            Ok(Some(b)) if b.len() == body_size => (b, true),
            _ => (Vec::new(), false),
        }
    };
    let outcome = Outcome::from_dispatch(
        dispatch_status.or_else(|| first(&headers, ":dispatch_status")),
        first(&headers, ":status"),
        headers_ok && body_ok,
    );
    AttemptResponse {
        outcome,
        headers,
        body,
    }
}
