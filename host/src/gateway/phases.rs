//! Driving a request through the filter's phases under the profile's rules:
//! which callback runs next, and where a Pause waits.

use super::client_response::finish;
use super::flight::{Flight, RawResponse, Stage};
use super::{Gateway, RequestStats};
use crate::http::{Request, RequestId, Source};
use crate::profile::{Phase, Profile};
use crate::worker::{Stream, ROOT_ID};

impl Gateway {
    /// Sends a client request to a worker (index taken modulo the worker
    /// count) and runs its phases until it waits for something.
    pub fn send(&mut self, worker: usize, request: Request) -> RequestId {
        let w = worker % self.slots.len();
        self.next_request += 1;
        let rid = RequestId(self.next_request);
        let mut flight = Flight {
            worker: w,
            ctx: 0,
            generation: 0,
            stage: Stage::RequestHeaders,
            request,
            source: Source::Upstream,
            raw: None,
            filter_gone: false,
            drop_on_write: false,
            body_held: false,
            response: None,
            stats: RequestStats::default(),
        };
        // Kong: a worker that exited at start-up is never respawned; nginx still
        // accepts the connection, and nothing ever answers it.
        if self.slots[w].exited.is_some() {
            flight.stage = Stage::Hung;
            self.flights.insert(rid, flight);
            return rid;
        }
        // Kong (BRIEF): after a trap the next request gets a fresh instance
        // whose root context is configured again.
        if self.slots[w].worker.is_none() {
            let generation = self.slots[w].generation;
            match self.start_worker(w, generation) {
                Ok(worker) => {
                    self.slots[w].worker = Some(worker);
                    self.slots[w].next_ctx = ROOT_ID + 1;
                    self.reschedule_tick(w);
                }
                Err(e) => {
                    self.host_log(
                        w,
                        crate::LogLevel::Error,
                        format!("cannot start instance: {e}"),
                    );
                    let raw = RawResponse::from_gateway(self.profile().trap_response());
                    flight.response = Some(finish(raw, true));
                    flight.stage = Stage::Done;
                    self.flights.insert(rid, flight);
                    return rid;
                }
            }
        }
        let slot = &mut self.slots[w];
        let ctx = slot.next_ctx;
        slot.next_ctx += 1;
        flight.ctx = ctx;
        flight.generation = slot.generation;
        let profile = self.settings.profile;
        let req = &flight.request;
        let mut req_headers = vec![
            (":authority".to_string(), req.authority.clone()),
            (":method".to_string(), req.method.clone()),
            (":path".to_string(), req.path.clone()),
            (":scheme".to_string(), req.scheme.clone()),
        ];
        req_headers.extend(req.wire_headers());
        let stream = Stream {
            request: Some(rid),
            req_headers,
            req_body: req.body.clone(),
            req_body_spilled: profile
                .request_body_spilled(req.body.len(), self.settings.body_buffer_size),
            req_body_visible: profile.request_body_in_two_callbacks().then_some(0),
            ..Stream::default()
        };
        if let Some(worker) = slot.worker.as_mut() {
            worker.store.data_mut().streams.insert(ctx, stream);
        }
        self.flights.insert(rid, flight);
        let created = self.callback(
            w,
            Phase::RequestHeaders,
            ctx,
            "proxy_on_context_create",
            &[ctx as i32, ROOT_ID as i32],
        );
        if created.is_ok() {
            self.pump();
        }
        rid
    }

    pub(super) fn after_request_headers(&self, rid: RequestId) -> Stage {
        let Some(f) = self.flights.get(&rid) else {
            return Stage::Done;
        };
        let headers = f.request.wire_headers();
        if self
            .profile()
            .has_request_body(&headers, f.request.body.len())
        {
            Stage::RequestBody
        } else {
            Stage::Proxy
        }
    }

    /// Runs runnable stages until every request waits or is done.
    pub(super) fn pump(&mut self) {
        for _ in 0..100_000 {
            let next = self
                .flights
                .iter()
                .find(|(_, f)| f.stage.runnable())
                .map(|(id, _)| *id);
            let Some(rid) = next else { return };
            self.step(rid);
        }
    }

    pub(super) fn step(&mut self, rid: RequestId) {
        let profile = self.profile();
        let Some(f) = self.flights.get(&rid) else {
            return;
        };
        let (w, ctx, stage) = (f.worker, f.ctx, f.stage);
        let set = |gw: &mut Gateway, s: Stage| {
            if let Some(f) = gw.flights.get_mut(&rid) {
                f.stage = s;
            }
        };
        match stage {
            Stage::RequestHeaders => {
                let (n, body_len) = match self.stream_mut(w, ctx) {
                    Some(s) => (s.req_headers.len(), s.req_body.len()),
                    None => return set(self, Stage::Done),
                };
                let eos = profile.request_headers_end_of_stream(body_len);
                let Some(paused) = self.phase_callback(
                    rid,
                    Phase::RequestHeaders,
                    "proxy_on_request_headers",
                    &[ctx as i32, n as i32, eos as i32],
                ) else {
                    return;
                };
                let next = self.after_request_headers(rid);
                if paused {
                    set(self, Stage::AwaitRequestHeaders);
                } else {
                    set(self, next);
                }
            }
            Stage::RequestBody => {
                let len = self
                    .stream_mut(w, ctx)
                    .map(|s| s.req_body.len())
                    .unwrap_or(0);
                let held = self.flights.get(&rid).is_some_and(|f| f.body_held);
                // Envoy: a data callback, then the end-of-stream one
                // (Profile::request_body_in_two_callbacks); a body held by a
                // paused header phase comes whole, in one end-of-stream callback.
                // Kong (BRIEF): called once with the whole body, end_of_stream true.
                let two = profile.request_body_in_two_callbacks() && !held;
                if let Some(s) = self.stream_mut(w, ctx) {
                    s.req_body_visible = s.req_body_visible.map(|_| len);
                }
                let Some(paused) = self.phase_callback(
                    rid,
                    Phase::RequestBody,
                    "proxy_on_request_body",
                    &[ctx as i32, len as i32, i32::from(!two)],
                ) else {
                    return;
                };
                match (two, paused) {
                    (true, buffered) => set(self, Stage::RequestBodyEnd { buffered }),
                    (false, true) => set(self, Stage::AwaitRequestBody),
                    (false, false) => set(self, Stage::Proxy),
                }
            }
            Stage::RequestBodyEnd { buffered } => {
                let len = self
                    .stream_mut(w, ctx)
                    .map(|s| s.req_body.len())
                    .unwrap_or(0);
                // After a Continue the data went on: this callback has no bytes.
                let size = if buffered { len } else { 0 };
                if let Some(s) = self.stream_mut(w, ctx) {
                    s.req_body_visible = Some(size);
                }
                let Some(paused) = self.phase_callback(
                    rid,
                    Phase::RequestBody,
                    "proxy_on_request_body",
                    &[ctx as i32, size as i32, 1],
                ) else {
                    return;
                };
                if paused {
                    set(self, Stage::AwaitRequestBody);
                } else {
                    set(self, Stage::Proxy);
                }
            }
            Stage::Proxy => self.forward(rid),
            Stage::ResponseHeaders => {
                if self.flights.get(&rid).is_some_and(|f| f.filter_gone) {
                    return self.finish_untouched(rid);
                }
                let (n, empty) = match self.stream_mut(w, ctx) {
                    Some(s) => (s.resp_headers.len(), s.resp_body.is_empty()),
                    None => return set(self, Stage::Done),
                };
                let Some(paused) = self.phase_callback(
                    rid,
                    Phase::ResponseHeaders,
                    "proxy_on_response_headers",
                    &[ctx as i32, n as i32, empty as i32],
                ) else {
                    return;
                };
                if paused {
                    // Both hosts hold the body while the headers are paused
                    // (Profile::headers_pause_holds_body).
                    set(self, Stage::AwaitResponseHeaders);
                } else {
                    set(self, Stage::ResponseBody);
                }
            }
            Stage::ResponseBody => {
                let len = self
                    .stream_mut(w, ctx)
                    .map(|s| s.resp_body.len())
                    .unwrap_or(0);
                // Kong (BRIEF): the body callback runs once with the whole body,
                // also for an empty one; Envoy calls it only when there is data.
                if len == 0 && profile == Profile::Envoy {
                    return set(self, Stage::Log);
                }
                let Some(paused) = self.phase_callback(
                    rid,
                    Phase::ResponseBody,
                    "proxy_on_response_body",
                    &[ctx as i32, len as i32, 1],
                ) else {
                    return;
                };
                if paused {
                    set(self, Stage::AwaitResponseBody);
                } else {
                    set(self, Stage::Log);
                }
            }
            Stage::Log => self.complete(rid),
            _ => {}
        }
    }

    /// Runs one phase callback of a request: `None` when it trapped or its
    /// effects already moved the request on (a local response, a resume), else
    /// whether it paused in a phase where the profile makes a Pause wait.
    fn phase_callback(
        &mut self,
        rid: RequestId,
        phase: Phase,
        export: &str,
        args: &[i32],
    ) -> Option<bool> {
        let (w, ctx, stage) = self.flights.get(&rid).map(|f| (f.worker, f.ctx, f.stage))?;
        let action = self.callback(w, phase, ctx, export, args).ok()?;
        if self.flights.get(&rid).map(|f| f.stage) != Some(stage) {
            return None;
        }
        Some(action == Some(1) && self.profile().pause_waits(phase))
    }
}
