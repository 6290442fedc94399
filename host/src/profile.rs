//! The rules that differ between Kong (ngx_wasm_module) and Envoy. Each rule
//! cites where it comes from; host/README.md lists the sources.

use crate::gateway::LogLevel;
use crate::http::Failure;
use crate::HostError;

/// Which host's rules a gateway follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Kong Gateway 3.4–3.9 with ngx_wasm_module (WasmX).
    Kong,
    /// Envoy with its proxy-wasm extension.
    Envoy,
}

/// The callback a worker is running (ngx_wasm_module calls these "steps").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `_initialize` / `_start`: the module's own start-up, before any context.
    Init,
    /// The root context's `proxy_on_context_create`.
    Start,
    VmStart,
    Configure,
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    CallResponse,
    Tick,
    Log,
    Done,
}

impl Phase {
    /// The ABI callback name, for trap records and logs.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Init => "_initialize",
            Phase::Start => "on_context_create",
            Phase::VmStart => "on_vm_start",
            Phase::Configure => "on_configure",
            Phase::RequestHeaders => "on_request_headers",
            Phase::RequestBody => "on_request_body",
            Phase::ResponseHeaders => "on_response_headers",
            Phase::ResponseBody => "on_response_body",
            Phase::CallResponse => "on_http_call_response",
            Phase::Tick => "on_tick",
            Phase::Log => "on_log",
            Phase::Done => "on_done",
        }
    }

    pub fn is_request(self) -> bool {
        matches!(self, Phase::RequestHeaders | Phase::RequestBody)
    }
}

/// What `send_local_response` does in a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalResponseRule {
    /// The local response becomes the client's response.
    Replace,
    /// Status and body replaced, headers argument ignored, upstream headers kept.
    ReplaceStatusAndBody,
    /// The call traps with this message.
    Trap(&'static str),
}

/// How the host treats a property path (see [`Profile::property_rule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyRule {
    /// Look it up (defaults, the builder's, the filter's own, the request's).
    Lookup,
    /// Logged as an error with this text; the call returns InternalFailure.
    ScopedOutsideRequest(&'static str),
    /// Logged at alert level as not yet implemented; NotFound.
    NotYetImplemented,
    /// Logged as an error "property not supported"; NotFound.
    NotSupported,
}

/// What `set_shared_data` does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedWrite {
    Put,
    Delete,
    /// The cas does not match: `CasMismatch`.
    Refuse,
}

impl Profile {
    /// Whether a proxy-wasm host call may run in `phase` (`log`: it is `proxy_log`).
    /// Envoy: proxy-wasm-cpp-host src/wasm.cc `WasmBase::startVm` restricts the
    /// callbacks during `_initialize`/`_start` to `env.proxy_log` and a list of WASI
    /// functions; any other call traps in src/v8/v8.cc with "restricted_callback"
    /// and the VM fails to start (seen on Envoy 1.40.0 with the filter at 6ffdbba:
    /// `Function: _initialize failed: Uncaught Error: restricted_callback`).
    /// Kong: no such restriction in ngx_wasm_module (`_start`/`_initialize` run
    /// inside `ngx_wavm_instance_create`, src/wasm/vm/ngx_wavm.c).
    pub fn host_call_allowed(self, phase: Phase, log: bool) -> Result<(), &'static str> {
        match (self, phase) {
            (Profile::Envoy, Phase::Init) if !log => Err("restricted_callback"),
            _ => Ok(()),
        }
    }

    /// Kong: ngx_wasm_module src/common/proxy_wasm/ngx_proxy_wasm_host.c,
    /// `ngx_proxy_wasm_hfuncs_dispatch_http_call` allows only the steps
    /// REQ_HEADERS, REQ_BODY, TICK and DISPATCH_RESPONSE; anything else traps
    /// (t/03-proxy_wasm/hfuncs/contexts/130-proxy_dispatch_http.t).
    /// Envoy: source/extensions/common/wasm/context.cc `Context::httpCall` has no
    /// phase check.
    pub fn dispatch_allowed(self, phase: Phase) -> Result<(), &'static str> {
        match self {
            Profile::Kong => match phase {
                Phase::RequestHeaders | Phase::RequestBody | Phase::Tick | Phase::CallResponse => {
                    Ok(())
                }
                _ => Err(
                    "can only send HTTP dispatch during \"on_request_headers\", \
                     \"on_request_body\", \"on_tick\", \"on_dispatch_response\", \
                     \"on_foreign_function\"",
                ),
            },
            Profile::Envoy => match phase {
                // A dispatch needs a running instance; during start-up there is none yet.
                Phase::Init | Phase::Start => Err("dispatch during module start"),
                _ => Ok(()),
            },
        }
    }

    /// Kong (BRIEF "Action::Pause works only in request headers, request body,
    /// response body and on_http_call_response"; ngx_wasm_module docs/PROXY_WASM.md):
    /// a Pause in response headers does not wait for anything. A Pause in the
    /// response body means "buffer the body"; the host delivers the whole body
    /// once with end_of_stream, so there is nothing left to wait for.
    /// Envoy (source/common/http/filter_manager.cc): StopIteration in any
    /// phase waits for continueDecoding/continueEncoding.
    pub fn pause_waits(self, phase: Phase) -> bool {
        match self {
            Profile::Kong => matches!(phase, Phase::RequestHeaders | Phase::RequestBody),
            Profile::Envoy => matches!(
                phase,
                Phase::RequestHeaders
                    | Phase::RequestBody
                    | Phase::ResponseHeaders
                    | Phase::ResponseBody
            ),
        }
    }

    /// Whether a Pause in the headers of a direction also keeps that direction's
    /// body from the filter until it resumes.
    /// Kong (ngx_wasm_module src/http/proxy_wasm/ngx_http_proxy_wasm.c, `resume`):
    /// a Pause in request headers makes the access phase return `NGX_AGAIN`; the
    /// body is read in the content phase, after it, so `on_request_body` comes
    /// only once the filter resumes. (A Pause in Kong's response headers does not
    /// wait at all, see [`Profile::pause_waits`].)
    /// Envoy, seen on Envoy 1.40.0 with the probe fixture: a Pause in
    /// `on_http_request_headers` of a POST with a 3-byte body never brought
    /// `on_http_request_body` (the client timed out); resumed from a dispatch
    /// callback, the body came in one callback (size 6, end_of_stream true). A
    /// Pause in `on_http_response_headers` likewise never brought
    /// `on_http_response_body`.
    pub fn headers_pause_holds_body(self) -> bool {
        true
    }

    /// Envoy delivers a request body as data callbacks and then an end-of-stream
    /// callback (seen on Envoy 1.40.0 with the probe fixture): "abc" gave
    /// `on_http_request_body(3, false)` then `(0, true)`; 6000 chunked bytes gave
    /// 1000, 2000, 3000 (false) then 0 (true); 1 MiB gave 1048479, 97, then 0. A
    /// callback that returns Pause makes Envoy buffer: the next callbacks report
    /// the bytes buffered so far (1000, 3000, 6000, then 6000 with
    /// end_of_stream) and `get_http_request_body` returns all of them; after a
    /// Continue a callback sees only its own chunk (the end-of-stream callback:
    /// none). In `on_http_request_headers` the body reads as empty (status Ok).
    /// The host models one data callback with the whole body, then the
    /// end-of-stream callback. Kong: one callback, whole body, end_of_stream true
    /// (BRIEF, real host).
    pub fn request_body_in_two_callbacks(self) -> bool {
        self == Profile::Envoy
    }

    /// Kong, seen on the real host (BRIEF): `on_http_request_headers` always gets
    /// `end_of_stream = false`, even for a GET. Envoy: true when the request has
    /// no body (filter_manager.cc decodeHeaders end_stream).
    pub fn request_headers_end_of_stream(self, body_len: usize) -> bool {
        match self {
            Profile::Kong => false,
            Profile::Envoy => body_len == 0,
        }
    }

    /// Kong (BRIEF, real host): `on_http_request_body` is never called when there
    /// is no body; nginx decides from `content-length`/`transfer-encoding`.
    /// Envoy: decodeData is called only when body bytes arrive.
    pub fn has_request_body(self, headers: &[(String, String)], body_len: usize) -> bool {
        match self {
            Profile::Kong => {
                let chunked = headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
                let length = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                chunked || length > 0
            }
            Profile::Envoy => body_len > 0,
        }
    }

    /// Kong: ngx_proxy_wasm_host.c `ngx_proxy_wasm_get_buffer_helper` returns no
    /// request body when nginx spilled it to a temp file (`client_body_buffer_size`,
    /// Kong default 8k), logging "cannot read request body buffered to file".
    /// Envoy buffers the body in memory (per_connection_buffer_limit is not modelled).
    pub fn request_body_spilled(self, body_len: usize, body_buffer_size: usize) -> bool {
        match self {
            Profile::Kong => body_len > body_buffer_size,
            Profile::Envoy => false,
        }
    }

    /// Kong (BRIEF): `get_http_request_body` works only in request phases and
    /// `on_log` (copy it in `on_http_request_body`); elsewhere the host has no
    /// body to give. The strict reading is modelled: not in the dispatch callback.
    pub fn request_body_readable(self, phase: Phase) -> bool {
        match self {
            Profile::Kong => matches!(
                phase,
                Phase::RequestHeaders | Phase::RequestBody | Phase::Log
            ),
            Profile::Envoy => true,
        }
    }

    /// Kong: ngx_proxy_wasm_host.c `ngx_proxy_wasm_hfuncs_send_local_response`:
    /// after the response head was produced it only overrides status and body
    /// (`resp_chunk_override`), keeping the upstream headers; once the response
    /// is being sent (body filter) it traps "response already sent".
    /// Envoy: context.cc `sendLocalResponse` replaces the response while its
    /// headers have not been sent downstream (a Pause in response headers holds them).
    pub fn local_response_rule(self, phase: Phase) -> LocalResponseRule {
        match self {
            Profile::Kong => match phase {
                Phase::RequestHeaders | Phase::RequestBody | Phase::CallResponse => {
                    LocalResponseRule::Replace
                }
                Phase::ResponseHeaders => LocalResponseRule::ReplaceStatusAndBody,
                _ => LocalResponseRule::Trap("response already sent"),
            },
            Profile::Envoy => match phase {
                Phase::Log | Phase::Done => LocalResponseRule::Trap("response already sent"),
                _ => LocalResponseRule::Replace,
            },
        }
    }

    /// Kong: src/http/ngx_http_wasm_local_response.c and the `lf` chunk in
    /// ngx_proxy_wasm_host.c: every non-empty local response body gets "\n"
    /// appended. Envoy sends the body as given.
    pub fn local_response_body(self, body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        if self == Profile::Kong && !body.is_empty() {
            out.push(b'\n');
        }
        out
    }

    /// Local-response headers. Kong (BRIEF, real host): replace semantics — of
    /// repeated names only the last survives; `content-length` is set to the
    /// body length ("\n" included). Envoy (source/common/http/utility.cc
    /// sendLocalReply): headers are added, `content-length` set, and
    /// `content-type: text/plain` for a non-empty body.
    pub fn local_response_headers(
        self,
        given: &[(String, String)],
        body_len: usize,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        match self {
            Profile::Kong => {
                for (k, v) in given {
                    out.retain(|(ek, _)| !ek.eq_ignore_ascii_case(k));
                    out.push((k.to_ascii_lowercase(), v.clone()));
                }
            }
            Profile::Envoy => {
                out.extend(
                    given
                        .iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
                );
                if body_len > 0 && !out.iter().any(|(k, _)| k == "content-type") {
                    out.push(("content-type".to_string(), "text/plain".to_string()));
                }
            }
        }
        out.retain(|(k, _)| k != "content-length");
        out.push(("content-length".to_string(), body_len.to_string()));
        out
    }

    /// Whether a local response sent from the `on_http_call_response` of a
    /// dispatch that failed (timeout, refused, reset: no response) reaches the
    /// client as a dropped connection.
    /// Kong: seen on the real host (nginx 1.27.4 + ngx_wasm_module 3bed278 +
    /// Wasmtime 26, issue #11): every attempt timing out (per-try timeout 300 ms,
    /// 2–3 hanging attempts), and a reset followed by three refused connections,
    /// gave the client `RemoteDisconnected` and the error log `[alert] zero size
    /// buf in writer t:1 r:0 f:0`; a local response from the callback of a
    /// dispatch that got a response (any status) reached the client. Mechanism
    /// (from the source, not proven): on a failed call
    /// src/http/proxy_wasm/ngx_http_proxy_wasm_dispatch.c
    /// `ngx_http_proxy_wasm_dispatch_resume_handler` runs the callback from
    /// `ngx_http_proxy_wasm_dispatch_err(call, 1)` and returns NGX_ERROR, so the
    /// step is never resumed (`if (rc != NGX_ERROR) ngx_proxy_wasm_resume(..)`),
    /// while the stashed body (src/http/ngx_http_wasm_local_response.c, a chain
    /// link reused from `rctx->free_bufs`) is flushed later; "t:1 r:0 f:0" with
    /// zero size is the state `ngx_wasm_chain_get_free_buf` leaves a reused buffer
    /// in. Envoy: no such defect seen.
    pub fn failed_dispatch_local_response_drops(self) -> bool {
        self == Profile::Kong
    }

    /// Kong: the dispatch upstream is `host[:port]` (ngx_http_proxy_wasm_dispatch.c
    /// parses it as an address; no scheme, no path). Envoy: a cluster name the
    /// host knows (context.cc `httpCall` → BadArgument for an unknown cluster).
    pub fn upstream_valid(self, upstream: &str, clusters: &[String]) -> bool {
        match self {
            Profile::Kong => {
                !upstream.is_empty()
                    && !upstream.contains("://")
                    && !upstream.contains('/')
                    && !upstream.chars().any(|c| c.is_whitespace())
                    && match upstream.rsplit_once(':') {
                        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                            !host.is_empty() && port.parse::<u16>().is_ok()
                        }
                        _ => true,
                    }
            }
            Profile::Envoy => clusters.iter().any(|c| c == upstream),
        }
    }

    /// Kong: ngx_http_proxy_wasm_dispatch.c needs `:method` and `:path`
    /// ("no :method", "no :path"). Envoy: context.cc `httpCall` needs
    /// `:method`, `:path` and `:authority`.
    pub fn dispatch_missing_header(self, headers: &[(String, String)]) -> Option<&'static str> {
        let has = |n: &str| headers.iter().any(|(k, _)| k == n);
        if !has(":method") {
            return Some("no :method");
        }
        if !has(":path") {
            return Some("no :path");
        }
        if self == Profile::Envoy && !has(":authority") {
            return Some("no :authority");
        }
        None
    }

    /// Kong (BRIEF): on failure the callback gets 0 headers and a
    /// `:dispatch_status` pseudo-header (`timeout`, `broken connection`, ...).
    /// Envoy: context.cc `onFailure` calls back with no headers and no body.
    pub fn dispatch_failure_headers(self, failure: Failure) -> Vec<(String, String)> {
        match self {
            Profile::Kong => {
                let status = match failure {
                    Failure::Timeout => "timeout",
                    Failure::Refused | Failure::Reset => "broken connection",
                };
                vec![(":dispatch_status".to_string(), status.to_string())]
            }
            Profile::Envoy => Vec::new(),
        }
    }

    /// Envoy's `response.code_details` for a proxied response: `via_upstream` when the
    /// upstream sent it, else the reason Envoy answered itself (source/common/router/router.cc:
    /// `ResponseCodeDetails::ViaUpstream`, `UpstreamResetBeforeResponseStarted{<reason>}`,
    /// `UpstreamResponseTimeout`; the filter's reading of it is checked on Envoy 1.40 by
    /// harness/tests/envoy_proxy_answers.rs). Kong has no such property.
    pub fn response_code_details(self, failure: Option<Failure>) -> Option<String> {
        if self != Profile::Envoy {
            return None;
        }
        Some(
            match failure {
                None => "via_upstream",
                Some(Failure::Timeout) => "upstream_response_timeout",
                Some(Failure::Refused) => {
                    "upstream_reset_before_response_started{remote_connection_failure}"
                }
                Some(Failure::Reset) => {
                    "upstream_reset_before_response_started{connection_termination}"
                }
            }
            .to_string(),
        )
    }

    /// The response nginx/Kong or Envoy generates when the proxied request fails.
    /// Kong: kong/tools/http.lua default messages (502 "An invalid response was
    /// received from the upstream server", 504 "The upstream server is timing out").
    /// Envoy: router.cc local replies 503 "upstream connect error or
    /// disconnect/reset before headers" and 504 "upstream request timeout".
    pub fn proxy_failure_response(self, failure: Failure) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let (status, body, ctype): (u16, &str, &str) = match (self, failure) {
            (Profile::Kong, Failure::Timeout) => (
                504,
                "{\n  \"message\":\"The upstream server is timing out\"\n}",
                "application/json; charset=utf-8",
            ),
            (Profile::Kong, _) => (
                502,
                "{\n  \"message\":\"An invalid response was received from the upstream server\"\n}",
                "application/json; charset=utf-8",
            ),
            (Profile::Envoy, Failure::Timeout) => (504, "upstream request timeout", "text/plain"),
            (Profile::Envoy, Failure::Refused) => (
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                "text/plain",
            ),
            (Profile::Envoy, Failure::Reset) => (
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                "text/plain",
            ),
        };
        let headers = vec![
            ("content-type".to_string(), ctype.to_string()),
            ("content-length".to_string(), body.len().to_string()),
        ];
        (status, headers, body.as_bytes().to_vec())
    }

    /// The response after a trap before the upstream answered. Kong (BRIEF):
    /// 500. Envoy: context.cc `failStream` sends a local 503.
    pub fn trap_response(self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let (status, body): (u16, &str) = match self {
            Profile::Kong => (500, "{\n  \"message\":\"An unexpected error occurred\"\n}"),
            Profile::Envoy => (503, ""),
        };
        let headers = vec![("content-length".to_string(), body.len().to_string())];
        (status, headers, body.as_bytes().to_vec())
    }

    /// `set_shared_data(key, value, cas)` on a key whose cas is `current`
    /// (None when absent); `null_value` is an empty value given as a null
    /// pointer. A nonzero cas must match the current one.
    /// Kong (BRIEF; ngx_wasm_shm_kv): `cas = 0` succeeds only when the key is
    /// absent; a nonzero cas on an absent key finds no entry to compare with;
    /// a null value deletes the key (ngx_proxy_wasm_host.c).
    /// Envoy (proxy-wasm-cpp-host shared_data.cc): `cas = 0` writes; an absent
    /// key is inserted whatever the cas.
    pub fn shared_data_write(
        self,
        current: Option<u32>,
        cas: u32,
        null_value: bool,
    ) -> SharedWrite {
        let allowed = match (current, cas) {
            (None, 0) => true,
            (Some(_), 0) => self == Profile::Envoy,
            (Some(cur), cas) => cur == cas,
            (None, _) => self == Profile::Envoy,
        };
        match (allowed, self) {
            (false, _) => SharedWrite::Refuse,
            (true, Profile::Kong) if null_value => SharedWrite::Delete,
            (true, _) => SharedWrite::Put,
        }
    }

    /// Kong (BRIEF): `set_effective_context` is a no-op — a root context cannot
    /// act on a request. Envoy: it switches the context host calls act on.
    pub fn effective_context_works(self) -> bool {
        self == Profile::Envoy
    }

    /// Kong: ngx_proxy_wasm_host.c `ngx_proxy_wasm_hfuncs_set_tick_period` traps
    /// "can only set tick_period in root context" (a call from an HTTP context,
    /// `rexec->root_id != NGX_PROXY_WASM_ROOT_CTX_ID`) and, when a nonzero period
    /// is already set, "tick_period already set" (`period && rexec->tick_period`:
    /// setting 0 is always accepted). Both via `ngx_proxy_wasm_result_trap(..,
    /// NGX_WAVM_OK)`: the trap message is the text alone, no "host trap" prefix.
    /// Envoy: the period applies to the root context and may be changed.
    pub fn tick_period_rule(
        self,
        from_root: bool,
        already_set: bool,
        period: u32,
    ) -> Result<(), &'static str> {
        match self {
            Profile::Kong if !from_root => Err("can only set tick_period in root context"),
            Profile::Kong if already_set && period != 0 => Err("tick_period already set"),
            _ => Ok(()),
        }
    }

    /// How the host answers a property read (or write) of `dotted` (the path with
    /// its NUL separators as dots) from a root context (`in_root`: on_vm_start,
    /// on_configure, on_tick, a root context's on_http_call_response).
    /// Kong: src/common/proxy_wasm/ngx_proxy_wasm_properties.c
    /// `ngx_proxy_wasm_properties_get`: outside a request (no request context or
    /// a fake one) any path containing '.' logs `[error] cannot get scoped
    /// properties outside of a request` and is NGX_ERROR without a message, which
    /// `ngx_proxy_wasm_hfuncs_get_property` (ngx_proxy_wasm_host.c) returns as
    /// InternalFailure (10); `..._set` likewise "cannot set scoped properties".
    /// Its table answers `plugin_name` and `plugin_root_id`, logs `plugin_vm_id` as
    /// `NYI - "plugin_vm_id" property` (NGX_LOG_WASM_NYI = NGX_LOG_ALERT, src/wasm/ngx_wasm.h)
    /// and `node`, `cluster_name`, `cluster_metadata`, `listener_direction`,
    /// `listener_metadata`, `route_name`, `route_metadata`, `upstream_host_metadata`
    /// as `"<name>" property not supported` (error); both NotFound (NGX_DECLINED)
    /// (t/03-proxy_wasm/hfuncs/117-proxy_properties_get.t).
    /// Envoy: no such rule (context.cc `getProperty`).
    pub fn property_rule(self, dotted: &str, in_root: bool, setting: bool) -> PropertyRule {
        if self != Profile::Kong {
            return PropertyRule::Lookup;
        }
        if in_root && dotted.contains('.') {
            return PropertyRule::ScopedOutsideRequest(if setting {
                "cannot set scoped properties outside of a request"
            } else {
                "cannot get scoped properties outside of a request"
            });
        }
        match dotted {
            "plugin_vm_id" if !setting => PropertyRule::NotYetImplemented,
            "node"
            | "cluster_name"
            | "cluster_metadata"
            | "listener_direction"
            | "listener_metadata"
            | "route_name"
            | "route_metadata"
            | "upstream_host_metadata"
                if !setting =>
            {
                PropertyRule::NotSupported
            }
            _ => PropertyRule::Lookup,
        }
    }

    /// Kong (BRIEF): without any `shm_kv` zone, shared-data calls trap
    /// (ngx_proxy_wasm_host.c "could not resolve namespace"). Envoy always has
    /// its process-wide store.
    pub fn shared_data_trap(self, zone: bool, getting: bool) -> Option<&'static str> {
        match (self, zone) {
            (Profile::Kong, false) if getting => {
                Some("failed getting value from shm (could not resolve namespace)")
            }
            (Profile::Kong, false) => {
                Some("failed setting value to shm (could not resolve namespace)")
            }
            _ => None,
        }
    }

    /// Kong (BRIEF): dispatches use `Connection: close` (ngx_http_proxy_wasm_dispatch.c
    /// writes the header itself).
    pub fn dispatch_extra_headers(self) -> Vec<(String, String)> {
        match self {
            Profile::Kong => vec![("connection".to_string(), "close".to_string())],
            Profile::Envoy => Vec::new(),
        }
    }

    /// Envoy: the router takes `x-envoy-upstream-rq-timeout-ms` from the request it
    /// forwards as that request's timeout, and removes it (source/common/router/router.cc
    /// `FilterUtility::finalTimeout`; the filter's use of it is checked on Envoy 1.40 by
    /// harness/tests/idempotency_two_nodes.rs). Kong has no such header.
    pub fn forward_timeout_ms(self, headers: &mut Vec<(String, String)>) -> Option<u64> {
        if self != Profile::Envoy {
            return None;
        }
        const NAME: &str = "x-envoy-upstream-rq-timeout-ms";
        let value = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(NAME))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok());
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(NAME));
        value.filter(|ms| *ms > 0)
    }

    /// The default timeout of the proxy's own forward: Kong's service
    /// `read_timeout` 60 s; Envoy's route timeout 15 s.
    pub fn default_proxy_timeout_ms(self) -> u64 {
        match self {
            Profile::Kong => 60_000,
            Profile::Envoy => 15_000,
        }
    }

    /// Kong: a dispatch with timeout 0 uses `proxy_wasm_socket_read_timeout` (60 s).
    /// Envoy: timeout 0 means none; the host uses a large bound.
    pub fn dispatch_timeout_ms(self, given: u32) -> u64 {
        match (self, given) {
            (Profile::Kong, 0) => 60_000,
            (Profile::Envoy, 0) => 3_600_000,
            (_, t) => u64::from(t),
        }
    }

    /// Whether a start-up failure leaves the gateway running without that
    /// worker. Kong: `ngx_http_wasm_init_process` (src/http/ngx_http_wasm_module.c)
    /// returns NGX_ERROR when a plan fails to load (link) or a filter fails to
    /// start (`ngx_proxy_wasm_start`, src/common/proxy_wasm/ngx_proxy_wasm.c), the
    /// worker exits with fatal code 2 and the master does not respawn it; nginx
    /// keeps its listening sockets, so clients connect and hang (seen on the real
    /// host, issue #11). Envoy: a plugin that fails to load fails the
    /// configuration, and Envoy with a static bootstrap does not start (issue #10).
    pub fn start_failure_kills_worker(self) -> bool {
        self == Profile::Kong
    }
}

/// The error-log lines Kong writes when a worker's start-up fails, ending with
/// the master's "cannot be respawned". Sources: src/wasm/vm/ngx_wavm.c
/// (`ngx_wavm_module_link`: "failed importing ... missing host function",
/// "failed linking ..."; `ngx_wavm_instance_create`: "failed instantiating ...
/// module"), src/common/proxy_wasm/ngx_proxy_wasm.c `ngx_proxy_wasm_start`
/// ("failed initializing \"<filter>\" filter" with the ecode text of
/// ngx_proxy_wasm_util.c `ngx_proxy_wasm_errlist`), and the issue #11 log.
pub(crate) fn kong_worker_exit_log(
    worker: usize,
    error: &HostError,
    filter: &str,
) -> Vec<(LogLevel, String)> {
    let mut lines = Vec::new();
    let initializing = |ecode: &str| {
        (
            LogLevel::Critical,
            format!("[emerg] [proxy-wasm] failed initializing \"{filter}\" filter ({ecode})"),
        )
    };
    match error {
        // Linking fails before any filter starts: no "failed initializing" line.
        HostError::Load(m) if m.starts_with("failed importing") => {
            lines.push((LogLevel::Error, format!("[error] [wasm] {m}")));
        }
        HostError::Load(m) => {
            lines.push((LogLevel::Error, format!("[error] [wasm] {m}")));
            lines.push(initializing("unknown error"));
        }
        HostError::StartTrap { phase, message, .. } => {
            lines.push((
                LogLevel::Error,
                format!("[error] [wasm] {phase}: {message}"),
            ));
            let ecode = match *phase {
                "_initialize" => "unknown error",
                "on_context_create" => "on_context_create internal failure",
                "on_vm_start" => "on_vm_start failure",
                _ => "on_configure failure",
            };
            lines.push(initializing(ecode));
        }
        HostError::VmStart { .. } => lines.push(initializing("on_vm_start failure")),
        HostError::Configure { .. } => lines.push(initializing("on_configure failure")),
        other => lines.push((LogLevel::Error, format!("[error] {other}"))),
    }
    lines.push((
        LogLevel::Critical,
        format!("[alert] worker process {worker} exited with fatal code 2 and cannot be respawned"),
    ));
    lines
}
