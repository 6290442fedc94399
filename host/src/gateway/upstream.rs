//! Upstream calls: the proxy's own forward and the filter's dispatches,
//! pending until the test (or a timeout) answers them.

use super::flight::{RawResponse, Stage};
use super::Gateway;
use crate::http::{CallId, CallKind, Failure, Reply, RequestId, Source, UpstreamCall};
use crate::profile::{Phase, Profile};
use crate::worker::{CallResponse, ROOT_ID};
use crate::HostError;

pub(super) struct PendingCall {
    pub(super) call: UpstreamCall,
    pub(super) ctx: u32,
    pub(super) generation: u64,
}

impl Gateway {
    /// Calls awaiting an answer, oldest first.
    pub fn pending(&self) -> Vec<UpstreamCall> {
        self.pending.values().map(|p| p.call.clone()).collect()
    }

    /// Every upstream call ever made, in order.
    pub fn calls(&self) -> &[UpstreamCall] {
        &self.history
    }

    /// Answers a pending call. The reply's `after_ms` is ignored here.
    pub fn answer(&mut self, id: CallId, reply: Reply) -> Result<(), HostError> {
        let pending = self.pending.remove(&id).ok_or(HostError::UnknownCall(id))?;
        match pending.call.kind {
            CallKind::Proxied => self.answer_proxied(&pending, reply),
            CallKind::Dispatch { token, .. } => self.answer_dispatch(&pending, token, reply),
        }
        self.pump();
        Ok(())
    }

    /// The proxy forwards the (possibly modified) request upstream.
    pub(super) fn forward(&mut self, rid: RequestId) {
        let Some(f) = self.flights.get(&rid) else {
            return;
        };
        let (w, ctx) = (f.worker, f.ctx);
        let profile = self.profile();
        let (headers, body, timeout_ms) = match self.stream_mut(w, ctx) {
            Some(s) => {
                let timeout_ms = profile.forward_timeout_ms(&mut s.req_headers);
                (s.req_headers.clone(), s.req_body.clone(), timeout_ms)
            }
            None => return,
        };
        let timeout_ms = timeout_ms.unwrap_or(self.settings.proxy_timeout_ms);
        let mut node = self.node();
        let call = UpstreamCall {
            id: node.new_call_id(),
            request: Some(rid),
            worker: w,
            timeout_ms,
            sent_at_ms: node.now_ms,
            ..UpstreamCall::from_wire(CallKind::Proxied, &headers, body)
        };
        drop(node);
        let id = call.id;
        self.history.push(call.clone());
        let generation = self.slots[w].generation;
        self.pending.insert(
            id,
            PendingCall {
                call,
                ctx,
                generation,
            },
        );
        if let Some(f) = self.flights.get_mut(&rid) {
            f.stage = Stage::AwaitUpstream(id);
        }
    }

    pub(super) fn answer_proxied(&mut self, pending: &PendingCall, reply: Reply) {
        let Some(rid) = pending.call.request else {
            return;
        };
        let Some(f) = self.flights.get(&rid) else {
            return;
        };
        if f.stage != Stage::AwaitUpstream(pending.call.id) {
            return;
        }
        let (w, ctx) = (f.worker, f.ctx);
        let profile = self.profile();
        let reply_failure = match &reply {
            Reply::Failure { failure, .. } => Some(*failure),
            _ => None,
        };
        let raw = match reply {
            Reply::Response {
                status,
                headers,
                body,
                ..
            }
            | Reply::Truncated {
                status,
                headers,
                body,
                ..
            } => RawResponse {
                status,
                headers,
                body,
                source: Source::Upstream,
            },
            Reply::Failure { failure, .. } => {
                RawResponse::from_gateway(profile.proxy_failure_response(failure))
            }
        };
        let details = profile.response_code_details(reply_failure);
        if let Some(stream) = self.stream_mut(w, ctx) {
            stream.set_response(raw.status, raw.headers.clone(), raw.body.clone());
            stream.code_details = details;
        }
        if let Some(f) = self.flights.get_mut(&rid) {
            f.source = raw.source;
            f.raw = Some(raw);
            f.stage = Stage::ResponseHeaders;
        }
    }

    pub(super) fn answer_dispatch(&mut self, pending: &PendingCall, token: u32, reply: Reply) {
        let w = pending.call.worker;
        let ctx = pending.ctx;
        if self.slots[w].generation != pending.generation || self.slots[w].worker.is_none() {
            return;
        }
        if ctx != ROOT_ID && self.live_flight_of(w, ctx).is_none() {
            return;
        }
        let profile = self.profile();
        let kong = profile == Profile::Kong;
        let ok_status = || vec![(":dispatch_status".to_string(), "ok".to_string())];
        let (resp, body_size) = match reply {
            Reply::Response {
                status,
                headers,
                body,
                ..
            } => {
                let len = body.len();
                let hidden = if kong { ok_status() } else { Vec::new() };
                (CallResponse::answered(status, headers, body, hidden), len)
            }
            // Kong (BRIEF, real host): a dispatch cut off mid-body still reports
            // :status and the announced size (a FIN cut even `:dispatch_status:
            // ok`); reading the body fails.
            Reply::Truncated {
                status,
                headers,
                announced_len,
                body,
                ..
            } if kong => {
                let resp = CallResponse {
                    body_readable: false,
                    ..CallResponse::answered(status, headers, body, ok_status())
                };
                (resp, announced_len)
            }
            // Envoy's async client reports a body cut off as a reset.
            Reply::Truncated { .. } => (
                CallResponse::failed(profile.dispatch_failure_headers(Failure::Reset)),
                0,
            ),
            Reply::Failure { failure, .. } => (
                CallResponse::failed(profile.dispatch_failure_headers(failure)),
                0,
            ),
        };
        let n = resp.headers.len();
        if let Some(worker) = self.slots[w].worker.as_mut() {
            worker.store.data_mut().call_response = Some(resp);
        }
        let _ = self.callback(
            w,
            Phase::CallResponse,
            ctx,
            "proxy_on_http_call_response",
            &[ctx as i32, token as i32, n as i32, body_size as i32, 0],
        );
        if let Some(worker) = self.slots[w].worker.as_mut() {
            worker.store.data_mut().call_response = None;
        }
    }
}
