//! Buffer imports: request/response bodies, the dispatch response body, the
//! VM and plugin configuration.

use super::guest::{counted, read, return_bytes, C, R};
use super::state::WorkerState;
use crate::abi::{status, BufferType};
use crate::gateway::LogLevel;
use crate::profile::Phase;
use wasmtime::Linker;

pub(super) fn define(linker: &mut Linker<WorkerState>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, bt: i32, start: i32, max: i32, rp: i32, rs: i32| -> R<i32> {
            counted(&mut c)?;
            let Some(bt) = BufferType::from_raw(bt) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let state = c.data_mut();
            let profile = state.profile();
            let data: Vec<u8> = match bt {
                BufferType::VmConfiguration => state.settings.vm_config.clone(),
                BufferType::PluginConfiguration => state.settings.plugin_config.clone(),
                BufferType::CallResponseBody => match &state.call_response {
                    // Kong (BRIEF, real host): reading a dispatch body that was cut
                    // off fails; release builds return BadArgument.
                    Some(r) if !r.body_readable => return Ok(status::BAD_ARGUMENT),
                    Some(r) => r.body.clone(),
                    None => return Ok(status::NOT_FOUND),
                },
                BufferType::RequestBody => {
                    let phase = state.phase;
                    let Some(stream) = state.streams.get(&state.effective) else {
                        return Ok(status::NOT_FOUND);
                    };
                    if !profile.request_body_readable(phase) {
                        return Ok(status::NOT_FOUND);
                    }
                    if stream.req_body_spilled {
                        state.log(
                            LogLevel::Error,
                            "cannot read request body buffered to file".to_string(),
                        );
                        return Ok(status::NOT_FOUND);
                    }
                    if stream.req_body.is_empty() {
                        return Ok(status::NOT_FOUND);
                    }
                    // Envoy: only the chunk (or the buffered part) of this
                    // callback; nothing yet in request headers (an empty Ok).
                    let visible = stream.req_body_visible.unwrap_or(stream.req_body.len());
                    stream.req_body[..visible.min(stream.req_body.len())].to_vec()
                }
                BufferType::ResponseBody => match state.streams.get(&state.effective) {
                    Some(s) if s.has_response && !s.resp_body.is_empty() => s.resp_body.clone(),
                    _ => return Ok(status::NOT_FOUND),
                },
            };
            let start = start as u32 as usize;
            let max = max as u32 as usize;
            if start > data.len() {
                return Ok(status::BAD_ARGUMENT);
            }
            let end = start.saturating_add(max).min(data.len());
            return_bytes(&mut c, &data[start..end], rp, rs)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, bt: i32, start: i32, size: i32, p: i32, n: i32| -> R<i32> {
            counted(&mut c)?;
            let Some(bt) = BufferType::from_raw(bt) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(data) = read(&mut c, p, n) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let state = c.data_mut();
            let phase = state.phase;
            let Some(stream) = state.streams.get_mut(&state.effective) else {
                return Ok(status::NOT_FOUND);
            };
            // A body can be changed while its phase runs (request body in the
            // request phases, response body in on_response_body).
            let buf = match bt {
                BufferType::RequestBody if phase.is_request() => &mut stream.req_body,
                BufferType::ResponseBody if phase == Phase::ResponseBody => &mut stream.resp_body,
                _ => return Ok(status::BAD_ARGUMENT),
            };
            let start = start as u32 as usize;
            if start > buf.len() {
                return Ok(status::BAD_ARGUMENT);
            }
            let end = start.saturating_add(size as u32 as usize).min(buf.len());
            buf.splice(start..end, data);
            Ok(status::OK)
        },
    )?;
    Ok(())
}
