//! `proxy_http_call`: a dispatch checked against the profile's rules and
//! handed to the gateway as a pending upstream call.

use super::guest::{counted, host_trap, read, return_value, text, C, R};
use super::state::{Effect, WorkerState};
use crate::abi::{self, status};
use crate::gateway::LogLevel;
use crate::http::{CallKind, UpstreamCall};
use crate::profile::Profile;
use wasmtime::Linker;

pub(super) fn define(linker: &mut Linker<WorkerState>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>,
         up: i32,
         un: i32,
         hp: i32,
         hn: i32,
         bp: i32,
         bn: i32,
         tp: i32,
         tn: i32,
         timeout: i32,
         ret: i32|
         -> R<i32> {
            counted(&mut c)?;
            let profile = c.data().profile();
            let phase = c.data().phase;
            profile.dispatch_allowed(phase).map_err(host_trap)?;
            let (Some(upstream), Some(hbytes), Some(body), Some(_trailers)) = (
                read(&mut c, up, un),
                read(&mut c, hp, hn),
                read(&mut c, bp, bn),
                read(&mut c, tp, tn),
            ) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let upstream = text(&upstream);
            let Some(headers) = abi::deserialize_map(&hbytes) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let state = c.data_mut();
            if let Some(missing) = profile.dispatch_missing_header(&headers) {
                state.log(LogLevel::Error, format!("dispatch failed: {missing}"));
                return Ok(status::BAD_ARGUMENT);
            }
            if !profile.upstream_valid(&upstream, &state.settings.clusters) {
                state.log(
                    LogLevel::Error,
                    format!("dispatch failed: invalid upstream \"{upstream}\""),
                );
                return Ok(status::BAD_ARGUMENT);
            }
            // Kong answers the calling context (a root dispatch answers the root,
            // BRIEF); Envoy the effective one.
            let ctx = match profile {
                Profile::Kong => state.active,
                Profile::Envoy => state.effective,
            };
            state.next_token += 1;
            let token = state.next_token;
            let request = state.streams.get(&ctx).and_then(|s| s.request);
            let kind = CallKind::Dispatch {
                token,
                upstream: upstream.clone(),
            };
            let mut node = state.node();
            let mut call = UpstreamCall {
                id: node.new_call_id(),
                request,
                worker: state.worker,
                timeout_ms: profile.dispatch_timeout_ms(timeout as u32),
                sent_at_ms: node.now_ms,
                ..UpstreamCall::from_wire(kind, &headers, body)
            };
            drop(node);
            if call.authority.is_empty() {
                call.authority = upstream;
            }
            call.headers.extend(profile.dispatch_extra_headers());
            state.effects.push(Effect::Dispatch { ctx, call });
            return_value(&mut c, ret, &token.to_le_bytes())
        },
    )?;
    Ok(())
}
