//! One VM instance (an nginx worker / Envoy worker thread): the wasmtime store,
//! the proxy-wasm host functions and the few WASI preview1 imports the Rust
//! toolchain pulls in.

use crate::abi::{self, status, BufferType, MapType};
use crate::gateway::{LogEntry, LogLevel, Node, Settings};
use crate::http::{CallKind, RequestId, UpstreamCall};
use crate::module::engine;
use crate::profile::{CasZero, LocalResponseRule, Phase, Profile};
use crate::HostError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::{
    Caller, Extern, ExternType, Func, Instance, Linker, Store, StoreLimits, StoreLimitsBuilder,
    Val, ValType,
};

/// The root context id of every worker (ids are per VM instance).
pub(crate) const ROOT_ID: u32 = 1;

/// Milliseconds added to the fake clock for `get_current_time`, so filters see
/// a plausible wall-clock time (2023-11-14T22:13:20Z at `now_ms() == 0`).
const EPOCH_MS: u64 = 1_700_000_000_000;

const WASI_ESUCCESS: i32 = 0;
const WASI_EBADF: i32 = 8;
const WASI_EINVAL: i32 = 28;
const WASI_ENOSYS: i32 = 52;

/// An HTTP stream (one client request) as the host calls of its context see it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stream {
    pub request: Option<RequestId>,
    pub req_headers: Vec<(String, String)>,
    pub req_body: Vec<u8>,
    pub req_body_spilled: bool,
    pub req_trailers: Vec<(String, String)>,
    pub resp_headers: Vec<(String, String)>,
    pub resp_body: Vec<u8>,
    pub resp_trailers: Vec<(String, String)>,
    pub has_response: bool,
    pub local_response_sent: bool,
}

/// The dispatch response visible during `on_http_call_response`.
#[derive(Debug, Default, Clone)]
pub(crate) struct CallResponse {
    pub headers: Vec<(String, String)>,
    /// Looked up by name but not listed in the pairs (Kong's `:dispatch_status: ok`).
    pub hidden: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub body_readable: bool,
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

/// Host-call accounting for the current callback.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CallStats {
    pub host_calls: u64,
    pub bytes_to_guest: u64,
    pub bytes_from_guest: u64,
    pub shared_data_gets: u64,
    pub shared_data_sets: u64,
}

/// The data of a worker's wasmtime store.
pub(crate) struct WorkerState {
    pub worker: usize,
    pub settings: Arc<Settings>,
    pub node: Arc<Mutex<Node>>,
    limits: StoreLimits,
    pub phase: Phase,
    pub active: u32,
    pub effective: u32,
    pub streams: HashMap<u32, Stream>,
    pub call_response: Option<CallResponse>,
    pub tick_period_ms: Option<u64>,
    pub tick_changed: bool,
    pub effects: Vec<Effect>,
    pub stats: CallStats,
    pub fuel_used: u64,
    next_token: u32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    set_properties: HashMap<Vec<String>, Vec<u8>>,
    rng: u64,
}

/// A trap: where and why.
#[derive(Debug, Clone)]
pub(crate) struct TrapInfo {
    pub phase: Phase,
    pub message: String,
}

/// A host-call trap raised by the profile's rules (not by the module's code).
#[derive(Debug)]
struct HostTrap(String);

impl std::fmt::Display for HostTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host trap (bad usage): {}", self.0)
    }
}

impl std::error::Error for HostTrap {}

fn host_trap(message: &str) -> wasmtime::Error {
    wasmtime::Error::new(HostTrap(message.to_string()))
}

/// A live VM instance.
pub(crate) struct Worker {
    pub store: Store<WorkerState>,
    instance: Instance,
}

impl WorkerState {
    fn node(&self) -> MutexGuard<'_, Node> {
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

    fn profile(&self) -> Profile {
        self.settings.profile
    }

    fn flush_output(&mut self, force: bool) {
        for stderr in [false, true] {
            let buf = if stderr {
                &mut self.stderr
            } else {
                &mut self.stdout
            };
            let mut lines = Vec::new();
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            if force && !buf.is_empty() {
                lines.push(String::from_utf8_lossy(buf).into_owned());
                buf.clear();
            }
            let level = if stderr {
                LogLevel::Error
            } else {
                LogLevel::Info
            };
            for line in lines {
                self.log(level, line);
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic per seed and worker.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

type C<'a> = Caller<'a, WorkerState>;
type R<T> = wasmtime::Result<T>;

fn memory(c: &mut C<'_>) -> Option<wasmtime::Memory> {
    c.get_export("memory").and_then(Extern::into_memory)
}

fn read(c: &mut C<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let len = len as u32 as usize;
    if len == 0 {
        return Some(Vec::new());
    }
    let mem = memory(c)?;
    let start = ptr as u32 as usize;
    let bytes = mem.data(&*c).get(start..start.checked_add(len)?)?.to_vec();
    c.data_mut().stats.bytes_from_guest += bytes.len() as u64;
    Some(bytes)
}

fn write(c: &mut C<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(mem) = memory(c) else { return false };
    let start = ptr as u32 as usize;
    let Some(end) = start.checked_add(bytes.len()) else {
        return false;
    };
    match mem.data_mut(&mut *c).get_mut(start..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

fn write_u32(c: &mut C<'_>, ptr: i32, v: u32) -> bool {
    write(c, ptr, &v.to_le_bytes())
}

/// Copies `data` into guest memory allocated with the module's allocator and
/// stores its address and length at `ptr_ptr`/`len_ptr`. Empty data returns a
/// null pointer (the SDK reads that as "no value").
fn return_bytes(c: &mut C<'_>, data: &[u8], ptr_ptr: i32, len_ptr: i32) -> R<i32> {
    let addr = if data.is_empty() {
        0
    } else {
        let alloc = c
            .get_export("proxy_on_memory_allocate")
            .or_else(|| c.get_export("malloc"))
            .and_then(Extern::into_func)
            .ok_or_else(|| host_trap("no allocator export"))?;
        let alloc = alloc.typed::<i32, i32>(&*c)?;
        let addr = alloc.call(&mut *c, data.len() as i32)?;
        if addr == 0 {
            return Err(host_trap("no memory"));
        }
        if !write(c, addr, data) {
            return Ok(status::INVALID_MEMORY_ACCESS);
        }
        c.data_mut().stats.bytes_to_guest += data.len() as u64;
        addr
    };
    if !write_u32(c, ptr_ptr, addr as u32) || !write_u32(c, len_ptr, data.len() as u32) {
        return Ok(status::INVALID_MEMORY_ACCESS);
    }
    Ok(status::OK)
}

fn counted(c: &mut C<'_>) {
    c.data_mut().stats.host_calls += 1;
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn map_of(state: &mut WorkerState, map: MapType) -> Option<&mut Vec<(String, String)>> {
    if matches!(
        map,
        MapType::CallResponseHeaders | MapType::CallResponseTrailers
    ) {
        let resp = state.call_response.as_mut()?;
        return match map {
            MapType::CallResponseHeaders => Some(&mut resp.headers),
            _ => None,
        };
    }
    let ctx = state.effective;
    let stream = state.streams.get_mut(&ctx)?;
    match map {
        MapType::RequestHeaders => Some(&mut stream.req_headers),
        MapType::RequestTrailers => Some(&mut stream.req_trailers),
        MapType::ResponseHeaders if stream.has_response => Some(&mut stream.resp_headers),
        MapType::ResponseTrailers if stream.has_response => Some(&mut stream.resp_trailers),
        _ => None,
    }
}

fn define_proxy_functions(linker: &mut Linker<WorkerState>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: i32, p: i32, n: i32| -> R<i32> {
            counted(&mut c);
            let Some(msg) = read(&mut c, p, n) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            c.data().log(LogLevel::from_raw(level), text(&msg));
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> R<i32> {
            counted(&mut c);
            let level = c.data().settings.log_level as u32;
            if !write_u32(&mut c, ret, level) {
                return Ok(status::INVALID_MEMORY_ACCESS);
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> R<i32> {
            counted(&mut c);
            let now = c.data().node().now_ms;
            let ns = (EPOCH_MS + now) * 1_000_000;
            if !write(&mut c, ret, &ns.to_le_bytes()) {
                return Ok(status::INVALID_MEMORY_ACCESS);
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: i32| -> R<i32> {
            counted(&mut c);
            let s = c.data_mut();
            let from_root = s.active == ROOT_ID;
            s.profile()
                .tick_period_rule(from_root, s.tick_period_ms.is_some())
                .map_err(host_trap)?;
            let period = u64::from(period as u32);
            s.tick_period_ms = if period == 0 { None } else { Some(period) };
            s.tick_changed = true;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, ctx: i32| -> R<i32> {
            counted(&mut c);
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
        counted(&mut c);
        Ok(status::OK)
    })?;

    // Header maps.
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, rp: i32, rs: i32| -> R<i32> {
            counted(&mut c);
            let Some(map) = MapType::from_raw(map) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let pairs = map_of(c.data_mut(), map).cloned().unwrap_or_default();
            let bytes = abi::serialize_map(&pairs);
            return_bytes(&mut c, &bytes, rp, rs)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C<'_>, map: i32, rs: i32| -> R<i32> {
            counted(&mut c);
            let Some(map) = MapType::from_raw(map) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let pairs = map_of(c.data_mut(), map).cloned().unwrap_or_default();
            let size = abi::serialize_map(&pairs).len() as u32;
            if !write_u32(&mut c, rs, size) {
                return Ok(status::INVALID_MEMORY_ACCESS);
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, kn: i32, rp: i32, rs: i32| -> R<i32> {
            counted(&mut c);
            let Some(map) = MapType::from_raw(map) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(key) = read(&mut c, kp, kn) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let key = text(&key);
            let state = c.data_mut();
            let hidden = if map == MapType::CallResponseHeaders {
                state
                    .call_response
                    .as_ref()
                    .and_then(|r| crate::http::find_header(&r.hidden, &key).map(str::to_string))
            } else {
                None
            };
            let value = map_of(state, map)
                .and_then(|m| crate::http::find_header(m, &key).map(str::to_string))
                .or(hidden);
            match value {
                Some(v) => return_bytes(&mut c, v.as_bytes(), rp, rs),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, map: i32, p: i32, n: i32| -> R<i32> {
            counted(&mut c);
            let Some(map) = MapType::from_raw(map) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(bytes) = read(&mut c, p, n) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let Some(pairs) = abi::deserialize_map(&bytes) else {
                return Ok(status::SERIALIZATION_FAILURE);
            };
            match map_of(c.data_mut(), map) {
                Some(m) => {
                    *m = pairs;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    for (name, op) in [
        ("proxy_add_header_map_value", MapOp::Add),
        ("proxy_replace_header_map_value", MapOp::Replace),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut c: C<'_>, map: i32, kp: i32, kn: i32, vp: i32, vn: i32| -> R<i32> {
                counted(&mut c);
                let Some(map) = MapType::from_raw(map) else {
                    return Ok(status::BAD_ARGUMENT);
                };
                let (Some(k), Some(v)) = (read(&mut c, kp, kn), read(&mut c, vp, vn)) else {
                    return Ok(status::INVALID_MEMORY_ACCESS);
                };
                let (k, v) = (text(&k), text(&v));
                let Some(m) = map_of(c.data_mut(), map) else {
                    return Ok(status::NOT_FOUND);
                };
                if op == MapOp::Replace {
                    if let Some(slot) = m.iter_mut().find(|(ek, _)| ek.eq_ignore_ascii_case(&k)) {
                        slot.1 = v;
                        let mut seen = false;
                        m.retain(|(ek, _)| {
                            if !ek.eq_ignore_ascii_case(&k) {
                                return true;
                            }
                            let keep = !seen;
                            seen = true;
                            keep
                        });
                        return Ok(status::OK);
                    }
                }
                m.push((k, v));
                Ok(status::OK)
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, kn: i32| -> R<i32> {
            counted(&mut c);
            let Some(map) = MapType::from_raw(map) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(k) = read(&mut c, kp, kn) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let k = text(&k);
            match map_of(c.data_mut(), map) {
                Some(m) => {
                    m.retain(|(ek, _)| !ek.eq_ignore_ascii_case(&k));
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;

    // Buffers.
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, bt: i32, start: i32, max: i32, rp: i32, rs: i32| -> R<i32> {
            counted(&mut c);
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
                    stream.req_body.clone()
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
            counted(&mut c);
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

    // Local responses, resume, dispatch.
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
            counted(&mut c);
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
            counted(c);
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
            counted(&mut c);
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
            let pseudo = |n: &str| {
                crate::http::find_header(&headers, n)
                    .unwrap_or("")
                    .to_string()
            };
            let mut regular: Vec<(String, String)> = headers
                .iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .cloned()
                .collect();
            regular.extend(profile.dispatch_extra_headers());
            let authority = match pseudo(":authority") {
                a if a.is_empty() => upstream.clone(),
                a => a,
            };
            let request = state.streams.get(&ctx).and_then(|s| s.request);
            let mut node = state.node();
            node.next_call_id += 1;
            let call = UpstreamCall {
                id: crate::http::CallId(node.next_call_id),
                request,
                worker: state.worker,
                kind: CallKind::Dispatch { token, upstream },
                method: pseudo(":method"),
                path: pseudo(":path"),
                authority,
                headers: regular,
                body,
                timeout_ms: profile.dispatch_timeout_ms(timeout as u32),
                sent_at_ms: node.now_ms,
            };
            drop(node);
            state.effects.push(Effect::Dispatch { ctx, call });
            if !write_u32(&mut c, ret, token) {
                return Ok(status::INVALID_MEMORY_ACCESS);
            }
            Ok(status::OK)
        },
    )?;

    // Shared data.
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: i32, kn: i32, rp: i32, rs: i32, rcas: i32| -> R<i32> {
            counted(&mut c);
            c.data_mut().stats.shared_data_gets += 1;
            let Some(key) = read(&mut c, kp, kn) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let state = c.data();
            if let Some(msg) = state
                .profile()
                .shared_data_trap(state.settings.shared_data_zone, true)
            {
                return Err(host_trap(msg));
            }
            let found = state.node().shared_data.get(&text(&key)).cloned();
            match found {
                None => Ok(status::NOT_FOUND),
                Some((value, cas)) => {
                    let st = return_bytes(&mut c, &value, rp, rs)?;
                    if st == status::OK && !write_u32(&mut c, rcas, cas) {
                        return Ok(status::INVALID_MEMORY_ACCESS);
                    }
                    Ok(st)
                }
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C<'_>, kp: i32, kn: i32, vp: i32, vn: i32, cas: i32| -> R<i32> {
            counted(&mut c);
            c.data_mut().stats.shared_data_sets += 1;
            let (Some(key), Some(value)) = (read(&mut c, kp, kn), read(&mut c, vp, vn)) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let state = c.data();
            let profile = state.profile();
            if let Some(msg) = profile.shared_data_trap(state.settings.shared_data_zone, false) {
                return Err(host_trap(msg));
            }
            let key = text(&key);
            let cas = cas as u32;
            let mut node = state.node();
            let current = node.shared_data.get(&key).map(|(_, c)| *c);
            let write = match (current, cas) {
                (None, 0) => true,
                (Some(_), 0) => profile.cas_zero() == CasZero::Unconditional,
                (Some(cur), cas) => cur == cas,
                // proxy-wasm-cpp-host inserts an absent key whatever the cas;
                // ngx_wasm_shm_kv finds no entry to compare with.
                (None, _) => profile == Profile::Envoy,
            };
            if !write {
                return Ok(status::CAS_MISMATCH);
            }
            // Kong: a null value pointer deletes the key (ngx_proxy_wasm_host.c).
            if vp == 0 && value.is_empty() && profile == Profile::Kong {
                node.shared_data.remove(&key);
                return Ok(status::OK);
            }
            node.next_cas = node.next_cas.wrapping_add(1).max(1);
            let next = node.next_cas;
            node.shared_data.insert(key, (value, next));
            Ok(status::OK)
        },
    )?;

    // Properties.
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, pp: i32, pn: i32, rp: i32, rs: i32| -> R<i32> {
            counted(&mut c);
            let Some(path) = read(&mut c, pp, pn) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let path: Vec<String> = path
                .split(|b| *b == 0)
                .map(text)
                .filter(|s| !s.is_empty())
                .collect();
            let value = lookup_property(c.data(), &path);
            match value {
                Some(v) => return_bytes(&mut c, &v, rp, rs),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, pp: i32, pn: i32, vp: i32, vn: i32| -> R<i32> {
            counted(&mut c);
            let (Some(path), Some(value)) = (read(&mut c, pp, pn), read(&mut c, vp, vn)) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let path: Vec<String> = path
                .split(|b| *b == 0)
                .map(text)
                .filter(|s| !s.is_empty())
                .collect();
            c.data_mut().set_properties.insert(path, value);
            Ok(status::OK)
        },
    )?;

    // Metrics: shared by all workers of the node.
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, np: i32, nn: i32, ret: i32| -> R<i32> {
            counted(&mut c);
            let Some(name) = read(&mut c, np, nn) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            if !(0..=2).contains(&kind) {
                return Ok(status::BAD_ARGUMENT);
            }
            let id = c.data().node().define_metric(&text(&name), kind as u32);
            if !write_u32(&mut c, ret, id) {
                return Ok(status::INVALID_MEMORY_ACCESS);
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: C<'_>, id: i32, offset: i64| -> R<i32> {
            counted(&mut c);
            let mut node = c.data().node();
            let Some(m) = node.metrics.get_mut(id as u32 as usize) else {
                return Ok(status::NOT_FOUND);
            };
            if m.kind == 0 && offset < 0 {
                return Ok(status::BAD_ARGUMENT);
            }
            m.value = m.value.saturating_add_signed(offset);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: C<'_>, id: i32, value: i64| -> R<i32> {
            counted(&mut c);
            let mut node = c.data().node();
            let Some(m) = node.metrics.get_mut(id as u32 as usize) else {
                return Ok(status::NOT_FOUND);
            };
            m.value = value as u64;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> R<i32> {
            counted(&mut c);
            let value = c
                .data()
                .node()
                .metrics
                .get(id as u32 as usize)
                .map(|m| m.value);
            let Some(value) = value else {
                return Ok(status::NOT_FOUND);
            };
            if !write(&mut c, ret, &value.to_le_bytes()) {
                return Ok(status::INVALID_MEMORY_ACCESS);
            }
            Ok(status::OK)
        },
    )?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MapOp {
    Add,
    Replace,
}

fn lookup_property(state: &WorkerState, path: &[String]) -> Option<Vec<u8>> {
    if let Some(v) = state.set_properties.get(path) {
        return Some(v.clone());
    }
    if let Some((_, v)) = state
        .settings
        .properties
        .iter()
        .rev()
        .find(|(p, _)| p == path)
    {
        return v.clone();
    }
    // Request-derived properties of the effective stream.
    let stream = state.streams.get(&state.effective)?;
    let header =
        |n: &str| crate::http::find_header(&stream.req_headers, n).map(|v| v.as_bytes().to_vec());
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match (state.profile(), p.as_slice()) {
        (Profile::Kong, ["ngx", "request_method"]) => header(":method"),
        (Profile::Kong, ["ngx", "request_uri"]) => header(":path"),
        (Profile::Kong, ["ngx", "uri"]) => {
            header(":path").map(|p| p.split(|b| *b == b'?').next().unwrap_or(&[]).to_vec())
        }
        (Profile::Kong, ["ngx", "scheme"]) => header(":scheme"),
        (Profile::Kong, ["ngx", "host"]) => header(":authority"),
        (Profile::Envoy, ["request", "path"]) => header(":path"),
        (Profile::Envoy, ["request", "method"]) => header(":method"),
        (Profile::Envoy, ["request", "host"]) => header(":authority"),
        (Profile::Envoy, ["request", "scheme"]) => header(":scheme"),
        (_, ["request", "headers", name]) => header(name),
        _ => None,
    }
}

/// WASI preview1: the calls Rust's std makes on wasm32-wasip1; anything else
/// the module imports returns ENOSYS so that it still loads.
fn define_wasi(linker: &mut Linker<WorkerState>) -> R<()> {
    const M: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        M,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, ret: i32| -> R<i32> {
            let mut out = Vec::new();
            for i in 0..n.max(0) {
                let Some(iov) = read(&mut c, iovs.wrapping_add(i * 8), 8) else {
                    return Ok(WASI_EINVAL);
                };
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let Some(bytes) = read(&mut c, ptr, len) else {
                    return Ok(WASI_EINVAL);
                };
                out.extend_from_slice(&bytes);
            }
            let written = out.len() as u32;
            {
                let s = c.data_mut();
                match fd {
                    1 => s.stdout.extend_from_slice(&out),
                    2 => s.stderr.extend_from_slice(&out),
                    _ => return Ok(WASI_EBADF),
                }
                s.flush_output(false);
            }
            if !write_u32(&mut c, ret, written) {
                return Ok(WASI_EINVAL);
            }
            Ok(WASI_ESUCCESS)
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(M, name, |mut c: C<'_>, count: i32, size: i32| -> R<i32> {
            if !write_u32(&mut c, count, 0) || !write_u32(&mut c, size, 0) {
                return Ok(WASI_EINVAL);
            }
            Ok(WASI_ESUCCESS)
        })?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(M, name, |_: C<'_>, _a: i32, _b: i32| -> R<i32> {
            Ok(WASI_ESUCCESS)
        })?;
    }
    linker.func_wrap(
        M,
        "clock_time_get",
        |mut c: C<'_>, _id: i32, _prec: i64, ret: i32| -> R<i32> {
            let ns = (EPOCH_MS + c.data().node().now_ms) * 1_000_000;
            if !write(&mut c, ret, &ns.to_le_bytes()) {
                return Ok(WASI_EINVAL);
            }
            Ok(WASI_ESUCCESS)
        },
    )?;
    linker.func_wrap(
        M,
        "random_get",
        |mut c: C<'_>, buf: i32, len: i32| -> R<i32> {
            let len = len as u32 as usize;
            let mut bytes = Vec::with_capacity(len);
            while bytes.len() < len {
                let r = c.data_mut().next_random();
                bytes.extend_from_slice(&r.to_le_bytes());
            }
            bytes.truncate(len);
            if !write(&mut c, buf, &bytes) {
                return Ok(WASI_EINVAL);
            }
            Ok(WASI_ESUCCESS)
        },
    )?;
    linker.func_wrap(M, "proc_exit", |_: C<'_>, code: i32| -> R<()> {
        Err(wasmtime::Error::msg(format!("proc_exit({code})")))
    })?;
    linker.func_wrap(M, "sched_yield", |_: C<'_>| -> R<i32> { Ok(WASI_ESUCCESS) })?;
    linker.func_wrap(M, "fd_close", |_: C<'_>, _fd: i32| -> R<i32> {
        Ok(WASI_EBADF)
    })?;
    linker.func_wrap(
        M,
        "fd_seek",
        |_: C<'_>, _fd: i32, _off: i64, _wh: i32, _ret: i32| -> R<i32> { Ok(WASI_EBADF) },
    )?;
    linker.func_wrap(
        M,
        "fd_prestat_get",
        |_: C<'_>, _fd: i32, _ret: i32| -> R<i32> { Ok(WASI_EBADF) },
    )?;
    linker.func_wrap(
        M,
        "fd_prestat_dir_name",
        |_: C<'_>, _fd: i32, _p: i32, _n: i32| -> R<i32> { Ok(WASI_EBADF) },
    )?;
    linker.func_wrap(
        M,
        "fd_fdstat_get",
        |mut c: C<'_>, fd: i32, ret: i32| -> R<i32> {
            if !(0..=2).contains(&fd) {
                return Ok(WASI_EBADF);
            }
            // fdstat: filetype u8 (2 = character device), flags u16, rights u64 × 2.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            if !write(&mut c, ret, &stat) {
                return Ok(WASI_EINVAL);
            }
            Ok(WASI_ESUCCESS)
        },
    )?;
    Ok(())
}

/// Links every import the host does not implement: WASI ones return ENOSYS,
/// proxy-wasm ones return Unimplemented; other signatures trap when called.
fn define_unknown_imports(
    linker: &mut Linker<WorkerState>,
    module: &wasmtime::Module,
    store: &mut Store<WorkerState>,
) -> R<()> {
    for import in module.imports() {
        if linker.get_by_import(&mut *store, &import).is_some() {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let results: Vec<ValType> = ty.results().collect();
        let code = if import.module() == "wasi_snapshot_preview1" {
            WASI_ENOSYS
        } else {
            status::UNIMPLEMENTED
        };
        let what = format!("{}::{}", import.module(), import.name());
        let returns_i32 = results.len() == 1 && matches!(results[0], ValType::I32);
        let no_results = results.is_empty();
        linker.func_new(
            import.module(),
            import.name(),
            ty.clone(),
            move |mut c, _args, out| {
                c.data_mut().stats.host_calls += 1;
                if returns_i32 {
                    out[0] = Val::I32(code);
                    Ok(())
                } else if no_results {
                    Ok(())
                } else {
                    Err(wasmtime::Error::msg(format!("unimplemented import {what}")))
                }
            },
        )?;
    }
    Ok(())
}

/// A callback's result: the export's return value, if any.
pub(crate) type CallResult = Result<Option<i32>, TrapInfo>;

impl Worker {
    /// Instantiates the module and runs start-up: `_initialize`, root context
    /// creation, `on_vm_start`, `on_configure`.
    pub fn start(
        index: usize,
        settings: Arc<Settings>,
        node: Arc<Mutex<Node>>,
        module: &wasmtime::Module,
        generation: u64,
    ) -> Result<Worker, HostError> {
        let engine = engine()?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(settings.memory_limit_bytes)
            .instances(4)
            .tables(16)
            .memories(2)
            .build();
        let seed = settings.seed ^ ((index as u64) << 32) ^ generation.wrapping_mul(0x9E37);
        let state = WorkerState {
            worker: index,
            settings: settings.clone(),
            node,
            limits,
            phase: Phase::Start,
            active: ROOT_ID,
            effective: ROOT_ID,
            streams: HashMap::new(),
            call_response: None,
            tick_period_ms: None,
            tick_changed: false,
            effects: Vec::new(),
            stats: CallStats::default(),
            fuel_used: 0,
            next_token: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            set_properties: HashMap::new(),
            rng: seed,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        let load = |e: wasmtime::Error| HostError::Load(format!("{e:#}"));
        let mut linker = Linker::new(engine);
        define_proxy_functions(&mut linker).map_err(load)?;
        define_wasi(&mut linker).map_err(load)?;
        define_unknown_imports(&mut linker, module, &mut store).map_err(load)?;
        store.set_fuel(settings.fuel_per_callback).map_err(load)?;
        let instance = linker
            .instantiate(&mut store, module)
            .map_err(|e| HostError::Load(format!("instantiating: {}", describe(&e))))?;
        let mut worker = Worker { store, instance };
        let start_trap = |t: TrapInfo| HostError::StartTrap {
            worker: index,
            message: t.message,
        };
        for init in ["_initialize", "_start"] {
            if worker.has_export(init) {
                worker
                    .call(Phase::Start, ROOT_ID, init, &[])
                    .map_err(start_trap)?;
                break;
            }
        }
        worker
            .call(
                Phase::Start,
                ROOT_ID,
                "proxy_on_context_create",
                &[ROOT_ID as i32, 0],
            )
            .map_err(start_trap)?;
        let vm_len = settings.vm_config.len() as i32;
        let ok = worker
            .call(
                Phase::VmStart,
                ROOT_ID,
                "proxy_on_vm_start",
                &[ROOT_ID as i32, vm_len],
            )
            .map_err(start_trap)?;
        if ok == Some(0) {
            return Err(HostError::VmStart {
                logs: worker.worker_logs(),
            });
        }
        let cfg_len = settings.plugin_config.len() as i32;
        let ok = worker
            .call(
                Phase::Configure,
                ROOT_ID,
                "proxy_on_configure",
                &[ROOT_ID as i32, cfg_len],
            )
            .map_err(start_trap)?;
        if ok == Some(0) {
            return Err(HostError::Configure {
                logs: worker.worker_logs(),
            });
        }
        Ok(worker)
    }

    fn worker_logs(&self) -> Vec<String> {
        let index = self.store.data().worker;
        let node = self.store.data().node();
        node.logs
            .iter()
            .filter(|l| l.worker == index)
            .map(|l| l.message.clone())
            .collect()
    }

    pub fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    /// Runs one export with fresh fuel. A missing export is a no-op (`None`).
    pub fn call(&mut self, phase: Phase, ctx: u32, export: &str, args: &[i32]) -> CallResult {
        let Some(func): Option<Func> = self.instance.get_func(&mut self.store, export) else {
            return Ok(None);
        };
        {
            let s = self.store.data_mut();
            s.phase = phase;
            s.active = ctx;
            s.effective = ctx;
        }
        let fuel = self.store.data().settings.fuel_per_callback;
        let trap = |message: String| TrapInfo { phase, message };
        self.store
            .set_fuel(fuel)
            .map_err(|e| trap(format!("{e}")))?;
        let ty = func.ty(&self.store);
        let params: Vec<Val> = ty
            .params()
            .zip(args.iter().chain(std::iter::repeat(&0)))
            .map(|(t, a)| match t {
                ValType::I64 => Val::I64(i64::from(*a as u32)),
                _ => Val::I32(*a),
            })
            .collect();
        let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
        let outcome = func.call(&mut self.store, &params, &mut results);
        let used = fuel.saturating_sub(self.store.get_fuel().unwrap_or(0));
        self.store.data_mut().fuel_used = used;
        self.store.data_mut().flush_output(true);
        match outcome {
            Ok(()) => Ok(results.first().and_then(|v| match v {
                Val::I32(x) => Some(*x),
                Val::I64(x) => Some(*x as i32),
                _ => None,
            })),
            Err(e) => Err(trap(describe(&e))),
        }
    }
}

/// A one-line description of a wasmtime error (trap code or host-trap message).
fn describe(e: &wasmtime::Error) -> String {
    if let Some(t) = e.downcast_ref::<HostTrap>() {
        return t.to_string();
    }
    if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        return format!("wasm trap: {t}");
    }
    let text = format!("{e:#}");
    text.lines().next().unwrap_or("unknown error").to_string()
}
