//! The data of a worker's store: the streams host calls see, and what a
//! callback leaves behind for the gateway (effects, cost).

use crate::gateway::{LogEntry, LogLevel, Node, RequestStats, Settings};
use crate::http::{RequestId, UpstreamCall};
use crate::profile::{LocalResponseRule, Phase, Profile};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::StoreLimits;

/// An HTTP stream (one client request) as the host calls of its context see it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stream {
    pub request: Option<RequestId>,
    pub req_headers: Vec<(String, String)>,
    pub req_body: Vec<u8>,
    pub req_body_spilled: bool,
    /// Envoy: how many bytes of the request body `get_http_request_body` sees now
    /// (the current chunk, or what was buffered); None: the whole body (Kong).
    pub req_body_visible: Option<usize>,
    pub req_trailers: Vec<(String, String)>,
    pub resp_headers: Vec<(String, String)>,
    pub resp_body: Vec<u8>,
    pub resp_trailers: Vec<(String, String)>,
    pub has_response: bool,
    pub local_response_sent: bool,
    /// Envoy's `response.code_details` for the proxied response (see
    /// `Profile::response_code_details`).
    pub code_details: Option<String>,
}

impl Stream {
    /// Gives the stream a response: `:status`, then the regular headers.
    pub(crate) fn set_response(
        &mut self,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) {
        self.resp_headers = vec![(":status".to_string(), status.to_string())];
        self.resp_headers.extend(headers);
        self.resp_body = body;
        self.has_response = true;
    }
}

/// The dispatch response visible during `on_http_call_response`.
#[derive(Debug, Default, Clone)]
pub(crate) struct CallResponse {
    pub headers: Vec<(String, String)>,
    /// Looked up by name but not listed in the pairs (Kong's `:dispatch_status: ok`).
    pub hidden: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub body_readable: bool,
    /// The dispatch failed (timeout, refused, reset): no response at all.
    pub failed: bool,
}

impl CallResponse {
    /// An answered dispatch: `:status`, then the upstream's headers.
    pub(crate) fn answered(
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        hidden: Vec<(String, String)>,
    ) -> Self {
        let mut all = vec![(":status".to_string(), status.to_string())];
        all.extend(headers);
        CallResponse {
            headers: all,
            hidden,
            body,
            body_readable: true,
            failed: false,
        }
    }

    /// A failed dispatch: no headers, no body, only what the profile reports by name.
    pub(crate) fn failed(hidden: Vec<(String, String)>) -> Self {
        CallResponse {
            headers: Vec::new(),
            hidden,
            body: Vec::new(),
            body_readable: true,
            failed: true,
        }
    }
}

/// What a callback asked the host to do, applied by the gateway afterwards.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    LocalResponse {
        ctx: u32,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        rule: LocalResponseRule,
    },
    Continue {
        ctx: u32,
    },
    Dispatch {
        ctx: u32,
        call: UpstreamCall,
    },
}

/// The data of a worker's wasmtime store.
pub(crate) struct WorkerState {
    pub worker: usize,
    pub settings: Arc<Settings>,
    pub node: Arc<Mutex<Node>>,
    pub(super) limits: StoreLimits,
    pub phase: Phase,
    pub active: u32,
    pub effective: u32,
    pub streams: HashMap<u32, Stream>,
    pub call_response: Option<CallResponse>,
    pub tick_period_ms: Option<u64>,
    pub tick_changed: bool,
    pub effects: Vec<Effect>,
    /// Cost of the callbacks run since the gateway last took it
    /// ([`super::Worker::take_cost`]).
    pub stats: RequestStats,
    pub(super) next_token: u32,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) set_properties: HashMap<Vec<String>, Vec<u8>>,
    pub(super) rng: u64,
}

impl WorkerState {
    pub(super) fn node(&self) -> MutexGuard<'_, Node> {
        // A poisoned lock only means another thread panicked mid-update; the
        // fakes stay usable for reporting.
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn log(&self, level: LogLevel, message: String) {
        let entry = LogEntry {
            worker: self.worker,
            context_id: self.active,
            level,
            message,
        };
        self.node().logs.push(entry);
    }

    pub(super) fn profile(&self) -> Profile {
        self.settings.profile
    }
}
