//! What the client gets: local responses under each profile's rules, the
//! final response once the response phases ran, and relaying after a trap.

use super::flight::{RawResponse, Stage};
use super::Gateway;
use crate::http::{framing_ok, regular_headers, ClientResponse, RequestId, Source};
use crate::profile::{LocalResponseRule, Phase, Profile};

impl Gateway {
    pub(super) fn apply_local_response(
        &mut self,
        w: usize,
        ctx: u32,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        rule: LocalResponseRule,
    ) {
        let profile = self.profile();
        let Some(rid) = self.live_flight_of(w, ctx) else {
            return;
        };
        let from_failed_call = self.slots[w]
            .worker
            .as_ref()
            .and_then(|x| x.store.data().call_response.as_ref())
            .is_some_and(|c| c.failed);
        let body = profile.local_response_body(&body);
        let mut raw = RawResponse {
            status,
            headers: Vec::new(),
            body: body.clone(),
            source: Source::Local,
        };
        let Some(stream) = self.stream_mut(w, ctx) else {
            return;
        };
        match rule {
            LocalResponseRule::ReplaceStatusAndBody => {
                // Kong in on_response_headers: status and body replaced, headers
                // argument ignored, upstream headers (stale content-length) kept.
                stream.resp_headers.retain(|(k, _)| k != ":status");
                stream
                    .resp_headers
                    .insert(0, (":status".to_string(), status.to_string()));
                stream.resp_body = body;
                raw.headers = regular_headers(&stream.resp_headers);
            }
            _ => {
                let hs = profile.local_response_headers(&headers, body.len());
                raw.headers = hs.clone();
                stream.set_response(status, hs, body);
            }
        }
        stream.has_response = true;
        let Some(f) = self.flights.get_mut(&rid) else {
            return;
        };
        if let Stage::AwaitUpstream(call) = f.stage {
            self.pending.remove(&call);
        }
        f.source = Source::Local;
        f.raw = Some(raw);
        f.drop_on_write = from_failed_call
            && rule == LocalResponseRule::Replace
            && profile.failed_dispatch_local_response_drops();
        f.stage = match (profile, rule) {
            (_, LocalResponseRule::ReplaceStatusAndBody) => Stage::Log,
            // Kong (BRIEF, real host): after a local response the filter's
            // response headers, response body (once, whole) and log run.
            (Profile::Kong, _) => Stage::ResponseHeaders,
            (Profile::Envoy, _) => Stage::Log,
        };
        if profile == Profile::Kong {
            // ngx_proxy_wasm_host.c: "local response produced, cancelling
            // pending dispatch calls".
            self.pending
                .retain(|_, p| !(p.call.worker == w && p.ctx == ctx && p.call.is_dispatch()));
        }
    }

    /// The filter's instance is gone: the client gets the upstream's answer as is.
    pub(super) fn finish_untouched(&mut self, rid: RequestId) {
        let Some(f) = self.flights.get_mut(&rid) else {
            return;
        };
        if let Some(raw) = f.raw.clone() {
            f.response = Some(finish(raw, true));
        }
        f.stage = Stage::Done;
    }

    /// Fixes the client's response, then on_log, on_done, on_delete.
    pub(super) fn complete(&mut self, rid: RequestId) {
        let Some(f) = self.flights.get(&rid) else {
            return;
        };
        let (w, ctx, source) = (f.worker, f.ctx, f.source);
        let Some(stream) = self.stream_mut(w, ctx) else {
            if let Some(f) = self.flights.get_mut(&rid) {
                f.stage = Stage::Done;
            }
            return;
        };
        let status = crate::http::find_header(&stream.resp_headers, ":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
            .unwrap_or(502);
        let raw = RawResponse {
            status,
            headers: regular_headers(&stream.resp_headers),
            body: stream.resp_body.clone(),
            source,
        };
        let mut dropped = false;
        if let Some(f) = self.flights.get_mut(&rid) {
            dropped = f.drop_on_write;
            let head = f.request.method.eq_ignore_ascii_case("HEAD");
            f.response = Some(if dropped {
                ClientResponse::dropped()
            } else {
                finish_answer(raw, false, head)
            });
            f.stage = Stage::Done;
        }
        if dropped {
            self.host_log(
                w,
                crate::LogLevel::Critical,
                "[alert] zero size buf in writer t:1 r:0 f:0 while sending to client".to_string(),
            );
        }
        for (phase, export) in [
            (Phase::Log, "proxy_on_log"),
            (Phase::Done, "proxy_on_done"),
            (Phase::Done, "proxy_on_delete"),
        ] {
            if self.callback(w, phase, ctx, export, &[ctx as i32]).is_err() {
                return;
            }
        }
        if let Some(worker) = self.slots[w].worker.as_mut() {
            worker.store.data_mut().streams.remove(&ctx);
        }
        // A finished stream's dispatches are never delivered.
        self.pending
            .retain(|_, p| !(p.call.worker == w && p.ctx == ctx && p.call.is_dispatch()));
    }
}

pub(super) fn finish(raw: RawResponse, trapped: bool) -> ClientResponse {
    finish_answer(raw, trapped, false)
}

/// `head`: the answer is to a HEAD request, whose Content-Length announces the body a GET
/// would get while none follows (RFC 9110 §9.3.2); a 304 does the same (§15.4.5). Only
/// the framing headers' consistency is checked then, not the length.
fn finish_answer(raw: RawResponse, trapped: bool, head: bool) -> ClientResponse {
    let bodiless = (head || raw.status == 304) && raw.body.is_empty();
    let framing_error = if bodiless {
        !framing_ok(&without_lengths(&raw.headers), 0)
            || raw
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .any(|(_, v)| v.trim().parse::<usize>().is_err())
    } else {
        !framing_ok(&raw.headers, raw.body.len())
    };
    ClientResponse {
        status: raw.status,
        headers: raw.headers,
        body: raw.body,
        source: raw.source,
        trapped,
        framing_error,
    }
}

fn without_lengths(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
        .cloned()
        .collect()
}
