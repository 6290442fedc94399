//! A client request in flight: the phase it is at and its response so far.

use super::RequestStats;
use crate::http::{CallId, ClientResponse, Request, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    RequestHeaders,
    AwaitRequestHeaders,
    RequestBody,
    /// Envoy: the end-of-stream body callback after the data callback.
    RequestBodyEnd {
        /// The data callback paused: Envoy buffered the body.
        buffered: bool,
    },
    AwaitRequestBody,
    Proxy,
    AwaitUpstream(CallId),
    ResponseHeaders,
    AwaitResponseHeaders,
    ResponseBody,
    AwaitResponseBody,
    Log,
    Done,
    /// Sent to a worker that no longer exists: never answered.
    Hung,
}

impl Stage {
    pub(super) fn runnable(self) -> bool {
        matches!(
            self,
            Stage::RequestHeaders
                | Stage::RequestBody
                | Stage::RequestBodyEnd { .. }
                | Stage::Proxy
                | Stage::ResponseHeaders
                | Stage::ResponseBody
                | Stage::Log
        )
    }
}

/// A response as produced before the filter's response phases touched it.
#[derive(Debug, Clone)]
pub(super) struct RawResponse {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    pub(super) source: Source,
}

pub(super) struct Flight {
    pub(super) worker: usize,
    pub(super) ctx: u32,
    pub(super) generation: u64,
    pub(super) stage: Stage,
    pub(super) request: Request,
    pub(super) source: Source,
    pub(super) raw: Option<RawResponse>,
    /// The instance trapped while the forward was in flight: relay untouched.
    pub(super) filter_gone: bool,
    /// Kong: the local response came from a failed dispatch's callback; the
    /// connection is dropped when the response is written
    /// ([`crate::profile::Profile::failed_dispatch_local_response_drops`]).
    pub(super) drop_on_write: bool,
    /// The request headers were paused and resumed: the host buffered the whole
    /// body meanwhile, so it comes in one end-of-stream callback.
    pub(super) body_held: bool,
    pub(super) response: Option<ClientResponse>,
    pub(super) stats: RequestStats,
}

impl RawResponse {
    /// A response the gateway itself makes (error page, trap response).
    pub(super) fn from_gateway(
        (status, headers, body): (u16, Vec<(String, String)>, Vec<u8>),
    ) -> Self {
        RawResponse {
            status,
            headers,
            body,
            source: Source::Gateway,
        }
    }
}
