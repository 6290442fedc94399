//! Stream-control imports: local responses, resuming a paused stream, the
//! effective context, `proxy_done`.

use super::guest::{counted, host_trap, read, C, R};
use super::state::{Effect, WorkerState};
use super::ROOT_ID;
use crate::abi::{self, status};
use crate::profile::{LocalResponseRule, Profile};
use wasmtime::Linker;

pub(super) fn define(linker: &mut Linker<WorkerState>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, ctx: i32| -> R<i32> {
            counted(&mut c)?;
            let s = c.data_mut();
            let ctx = ctx as u32;
            if !s.profile().effective_context_works() {
                // Kong: accepted and ignored (BRIEF; see Profile::effective_context_works).
                return Ok(status::OK);
            }
            if ctx == ROOT_ID || s.streams.contains_key(&ctx) {
                s.effective = ctx;
                Ok(status::OK)
            } else {
                Ok(status::BAD_ARGUMENT)
            }
        },
    )?;
    linker.func_wrap("env", "proxy_done", |mut c: C<'_>| -> R<i32> {
        counted(&mut c)?;
        Ok(status::OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         code: i32,
         _dp: i32,
         _dn: i32,
         bp: i32,
         bn: i32,
         hp: i32,
         hn: i32,
         _grpc: i32|
         -> R<i32> {
            counted(&mut c)?;
            let (Some(body), Some(hbytes)) = (read(&mut c, bp, bn), read(&mut c, hp, hn)) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let Some(headers) = abi::deserialize_map(&hbytes) else {
                return Ok(status::SERIALIZATION_FAILURE);
            };
            let state = c.data_mut();
            let profile = state.profile();
            let ctx = state.effective;
            let phase = state.phase;
            let Some(stream) = state.streams.get_mut(&ctx) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let rule = profile.local_response_rule(phase);
            if let LocalResponseRule::Trap(msg) = rule {
                return Err(host_trap(msg));
            }
            if stream.local_response_sent && profile == Profile::Kong {
                // ngx_proxy_wasm_host.c: NGX_BUSY → "local response already stashed".
                return Err(host_trap("local response already stashed"));
            }
            stream.local_response_sent = true;
            let status = u16::try_from(code).unwrap_or(500);
            state.effects.push(Effect::LocalResponse {
                ctx,
                status,
                headers,
                body,
                rule,
            });
            Ok(status::OK)
        },
    )?;
    for name in [
        "proxy_continue_stream",
        "proxy_continue_request",
        "proxy_continue_response",
    ] {
        let with_arg = name == "proxy_continue_stream";
        let f = move |c: &mut C<'_>| -> R<i32> {
            counted(c)?;
            let state = c.data_mut();
            let ctx = state.effective;
            if !state.streams.contains_key(&ctx) {
                // A root context has no stream to resume (Kong: set_effective_context
                // is a no-op, so a tick cannot resume a request).
                return Ok(status::BAD_ARGUMENT);
            }
            state.effects.push(Effect::Continue { ctx });
            Ok(status::OK)
        };
        if with_arg {
            linker.func_wrap("env", name, move |mut c: C<'_>, _stream: i32| f(&mut c))?;
        } else {
            linker.func_wrap("env", name, move |mut c: C<'_>| f(&mut c))?;
        }
    }
    Ok(())
}
