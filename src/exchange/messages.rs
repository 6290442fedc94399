//! What the adapter and the exchange say to each other: [`Event`]s in, [`Action`]s out, the
//! [`Env`] the exchange asks, and the reasons it reports for logs and metrics.

pub use super::key_guard::{ClaimAnswer, ClaimRequest, KeyAnswer, SettleRequest};
use crate::config::Scheme;
use crate::header_map::Headers;
use crate::retry::outcome::Outcome;
use std::rc::Rc;

/// What the state machine needs from the outside world.
pub trait Env {
    /// Current time, ms since the Unix epoch (the host's clock).
    fn now_ms(&self) -> u64;
    /// A random number for backoff jitter.
    fn random(&mut self) -> u64;
    /// The retry budget: counts this request, once, when it turns out retryable (it was
    /// copied whole and attempt 1 is about to start). Requests that go natively never count.
    fn record_request(&mut self) {}
    /// The retry budget: may retry `attempt` (2 = first retry) be spent? Asked when the retry
    /// is decided, before any backoff, so a retry waiting in backoff has already paid.
    fn allow_retry(&mut self, _attempt: u32) -> bool {
        true
    }
    /// Can the host wait between attempts? Kong without `delay_endpoint` cannot: it has no
    /// per-request timer. A retry that must wait for a `Retry-After` is then not made.
    fn can_wait(&self) -> bool {
        true
    }
    /// An attempt ended with an outcome in `retry_on` (adaptive mode keeps the route
    /// protected while they come). Called before the retry is decided, whatever is decided.
    fn failure_seen(&mut self, _outcome: Outcome) {}
}

/// How attempts are executed for this request (`auto` already resolved by the adapter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// Every attempt is a `dispatch_http_call`; the client gets a local response.
    Dispatch,
    /// Attempt 1 goes the proxy's native way; retries are dispatched and replace its response.
    Response,
}

/// Where dispatched attempts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `dispatch_http_call`'s upstream argument (Kong `host:port`, Envoy cluster).
    pub upstream: String,
    pub scheme: Scheme,
}

/// The result of reading the request body in `on_http_request_body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRead {
    /// The whole body (end of stream seen).
    Complete(Vec<u8>),
    /// More is coming; this much is buffered so far.
    Partial(usize),
    /// The host announced a body but could not give it (Kong: spilled to a temp file).
    Unreadable,
}

/// One dispatched attempt's answer as read from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResponse {
    pub outcome: Outcome,
    /// Response headers, pseudo headers included, repeats kept (empty on failure).
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A host event for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `on_http_request_headers`. `path` / `authority` override what is dispatched (Kong:
    /// `ngx.upstream_uri` / `ngx.upstream_host`); `None` keeps the downstream values.
    RequestHeaders {
        headers: Headers,
        path: Option<String>,
        authority: Option<String>,
    },
    /// `on_http_request_body`.
    RequestBody(BodyRead),
    /// Response mode: the native attempt's response headers (`on_http_response_headers`),
    /// pseudo headers included; `proxy_made`: the proxy made this answer itself (Envoy's
    /// 503/504 after an upstream reset or timeout), not the upstream.
    UpstreamResponseHeaders { headers: Headers, proxy_made: bool },
    /// `on_http_call_response` for the attempt in flight.
    AttemptResult(AttemptResponse),
    /// `dispatch_http_call` returned an error for the attempt just requested.
    DispatchRefused,
    /// The wait requested by [`Action::Wait`] is over.
    DelayElapsed,
    /// The idempotency store answered [`Action::Claim`].
    Claimed(ClaimAnswer),
    /// The idempotency store did what [`Action::Settle`] asked (or failed to: the key then
    /// stays locked until its deadline, which is the safe side).
    Settled,
    /// Response mode: the body of the native response whose result is to be stored, read
    /// whole (`None` when it could not be: too large, or unreadable).
    NativeResponse { body: Option<Vec<u8>> },
}

/// One attempt to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// Dispatch timeout: the per-try timeout, never past the deadline.
    pub timeout_ms: u64,
    /// Why the previous attempt is being retried (`None` for attempt 1).
    pub reason: Option<Outcome>,
    /// How long the filter waited before this attempt.
    pub waited_ms: u64,
}

/// The response the client gets from the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalResponse {
    pub status: u16,
    /// End-to-end headers, repeats kept in order, attempts header included.
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// What the adapter must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let the request (or, in response mode, the held native response) go on natively.
    PassThrough,
    /// Hold the request: the body is still coming, or an attempt's answer is.
    Pause,
    /// The body is needed before attempt 1: let it come without forwarding anything
    /// (Kong: Continue, the body callback follows; Envoy: Pause, which buffers it).
    ReadBody,
    /// Send this attempt, then hold; its answer comes back as `AttemptResult`.
    Dispatch(Attempt),
    /// Wait this long without holding a worker, then feed `DelayElapsed`.
    Wait { ms: u64, next_attempt: u32 },
    /// Answer the client with this response (`send_http_response`); the exchange keeps the
    /// same one, not a copy, as [`super::Exchange::sent_response`].
    Respond(Rc<FinalResponse>),
    /// Ask the idempotency store for the key, then feed [`Event::Claimed`].
    Claim(ClaimRequest),
    /// Settle the key in the idempotency store, then feed [`Event::Settled`].
    Settle(SettleRequest),
    /// Response mode: let the native response's headers go on, read its body whole and
    /// feed [`Event::NativeResponse`] (the result is stored before the body reaches the
    /// client).
    ReadNativeBody,
}

/// Why the exchange stopped retrying, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Success or a status not in `retry_on`.
    Final,
    /// All `retries + 1` attempts spent.
    Exhausted,
    /// The request must not be sent twice.
    NotReplayable,
    /// The next attempt could not finish before the deadline.
    Deadline,
    /// `Retry-After` asked for more than `retry_after_max`.
    RetryAfterTooLong,
    /// `Retry-After` asked for a wait this host cannot make (Kong without
    /// `delay_endpoint`): retrying at once would ignore the server's explicit request.
    CannotWait,
    /// The retry budget said no.
    Budget,
    /// Gateway idempotency answered for the upstream: a replay or a refusal.
    Key(KeyAnswer),
}

/// Why the filter let a request go natively, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeReason {
    /// Method without idempotency key, or `retries: 0`: sent once, nothing to copy.
    NotRetryable,
    /// Body larger than `max_body_bytes`.
    BodyTooLarge,
    /// Body announced but unreadable (Kong: spilled to a temp file).
    BodyUnreadable,
    /// The first dispatch was refused by the host before anything was sent.
    DispatchRefused,
    /// A header value is not UTF-8: the host's dispatch call takes text, so no exact copy.
    HeaderNotText,
}
