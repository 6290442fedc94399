//! Raw proxy-wasm host calls that return the host's status instead of panicking.
//!
//! The SDK's `hostcalls` wrappers panic on any status they did not expect (a `BadArgument`
//! from reading a cut-off dispatch body on Kong, for one), and decode header values with
//! `String::from_utf8(..).unwrap()`. A panic is a trap, and a trap on Kong ends the request
//! and the VM's state. So every call the filter makes on request data goes through here.
//! Only `dispatch_http_call` stays with the SDK: its dispatcher must register the token.

use crate::header_map::{self, Headers};
use std::ptr::{null, null_mut};

/// A non-OK proxy-wasm status, as the raw number the host returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStatus(pub u32);

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
/// `proxy_set_shared_data`: the cas did not match (another writer was first).
pub const CAS_MISMATCH: u32 = 8;

/// `proxy_get_buffer_bytes` buffer kinds.
pub const HTTP_REQUEST_BODY: u32 = 0;
pub const HTTP_RESPONSE_BODY: u32 = 1;
pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
pub const PLUGIN_CONFIGURATION: u32 = 7;

/// Header map kinds.
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const CALL_RESPONSE_HEADERS: u32 = 6;

/// `proxy_continue_stream` stream kinds.
pub const STREAM_REQUEST: u32 = 0;
pub const STREAM_RESPONSE: u32 = 1;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        kind: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, ret_data: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
        ret_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, ret_id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
}

fn check(status: u32) -> Result<(), HostStatus> {
    if status == OK {
        Ok(())
    } else {
        Err(HostStatus(status))
    }
}

/// Takes ownership of a host-allocated buffer (allocated through the SDK's
/// `proxy_on_memory_allocate`, i.e. this module's global allocator).
fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the host filled `size` bytes of a buffer it obtained from our allocator with
    // exactly that size (the SDK's own getters rely on the same contract).
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// A getter's answer: the bytes it returned, `Ok(None)` for `NotFound` (or no bytes).
fn found(status: u32, data: *mut u8, size: usize) -> Result<Option<Vec<u8>>, HostStatus> {
    match status {
        OK => Ok(owned(data, size)),
        NOT_FOUND => Ok(None),
        s => Err(HostStatus(s)),
    }
}

/// Writes one log line at a proxy-wasm level (0 trace .. 5 critical). Errors are dropped:
/// there is nowhere left to report them.
pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length describe a live &str.
    unsafe {
        proxy_log(level, message.as_ptr(), message.len());
    }
}

/// The host clock in ms since the Unix epoch (0 if the host cannot tell).
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// The host clock in ns since the Unix epoch (0 if the host cannot tell).
pub fn now_ns() -> u64 {
    let mut t = 0u64;
    // SAFETY: `t` is a valid out-pointer.
    match unsafe { proxy_get_current_time_nanoseconds(&mut t) } {
        OK => t,
        _ => 0,
    }
}

/// Sets the root context's tick period (0 stops ticking).
pub fn set_tick_period_ms(ms: u32) -> Result<(), HostStatus> {
    // SAFETY: plain value call.
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// Reads `max` bytes of a buffer from `start`. `Ok(None)`: the buffer is absent or empty.
pub fn get_buffer(kind: u32, start: usize, max: usize) -> Result<Option<Vec<u8>>, HostStatus> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: valid out-pointers.
    let status = unsafe { proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) };
    found(status, data, size)
}

/// Replaces `size` bytes of a buffer from `start` with `data`.
pub fn set_buffer(kind: u32, start: usize, size: usize, data: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: pointer and length describe a live slice.
    check(unsafe { proxy_set_buffer_bytes(kind, start, size, data.as_ptr(), data.len()) })
}

/// All pairs of a header map, lower-case names, byte values, repeats kept.
pub fn get_headers(map: u32) -> Result<Headers, HostStatus> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: valid out-pointers.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    match status {
        OK => match owned(data, size) {
            None => Ok(Vec::new()),
            Some(bytes) => header_map::decode(&bytes).ok_or(HostStatus(u32::MAX)),
        },
        NOT_FOUND => Ok(Vec::new()),
        s => Err(HostStatus(s)),
    }
}

/// One header's value looked up by name (Kong answers `:dispatch_status` only this way).
pub fn get_header(map: u32, name: &str) -> Result<Option<Vec<u8>>, HostStatus> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: valid pointers.
    let status =
        unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size) };
    found(status, data, size)
}

/// Adds one value to a header map.
pub fn add_header(map: u32, name: &str, value: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: pointers and lengths describe live slices.
    check(unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Replaces all values of a header with one.
pub fn replace_header(map: u32, name: &str, value: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: pointers and lengths describe live slices.
    check(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Removes a header (all values).
pub fn remove_header(map: u32, name: &str) -> Result<(), HostStatus> {
    // SAFETY: pointer and length describe a live &str.
    check(unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

/// A host property; `Ok(None)` when the host does not know it.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, HostStatus> {
    let (status, data, size) = raw_property(path);
    found(status, data, size)
}

fn raw_property(path: &[&str]) -> (u32, *mut u8, usize) {
    let serialized = path.join("\0");
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: valid pointers.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    (status, data, size)
}

/// A property's value if the host resolves it to something non-empty.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    get_property(path).ok().flatten().filter(|v| !v.is_empty())
}

/// Does the host know this property at all (an empty value counts)?
pub fn property_answered(path: &[&str]) -> bool {
    let (status, data, size) = raw_property(path);
    // Take ownership so the host's buffer is freed.
    drop(owned(data, size));
    status == OK
}

/// Sends a local response with byte header values.
pub fn send_local_response(
    status: u16,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<(), HostStatus> {
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let map = header_map::encode(&pairs);
    let (body_ptr, body_len) = if body.is_empty() {
        (null(), 0)
    } else {
        (body.as_ptr(), body.len())
    };
    // SAFETY: pointers and lengths describe live buffers.
    check(unsafe {
        proxy_send_local_response(
            u32::from(status),
            null(),
            0,
            body_ptr,
            body_len,
            map.as_ptr(),
            map.len(),
            -1,
        )
    })
}

/// Resumes a paused request or response stream.
pub fn continue_stream(stream: u32) -> Result<(), HostStatus> {
    // SAFETY: plain value call.
    check(unsafe { proxy_continue_stream(stream) })
}

/// Makes `context_id` the context later host calls act on (Envoy; a no-op on Kong).
pub fn set_effective_context(context_id: u32) -> Result<(), HostStatus> {
    // SAFETY: plain value call.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// A shared-data value and its cas; `Ok(None)` when the key does not exist.
///
/// On Kong this traps when no `shm_kv` zone resolves the key: callers must know a zone exists.
pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, HostStatus> {
    let mut data = null_mut();
    let mut size = 0usize;
    let mut cas = 0u32;
    // SAFETY: valid pointers.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        OK => Ok(Some((owned(data, size).unwrap_or_default(), cas))),
        NOT_FOUND => Ok(None),
        s => Err(HostStatus(s)),
    }
}

/// Writes a shared-data value if `cas` still matches (see `crate::state::store` for `cas = 0`).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostStatus> {
    // SAFETY: pointers and lengths describe live slices.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Defines a counter (kind 0) and returns its id; defining a name again returns the same id.
pub fn define_counter(name: &str) -> Result<u32, HostStatus> {
    let mut id = 0u32;
    // SAFETY: pointer and length describe a live &str; `id` is a valid out-pointer.
    check(unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds `by` to a counter.
pub fn increment_metric(id: u32, by: i64) -> Result<(), HostStatus> {
    // SAFETY: plain value call.
    check(unsafe { proxy_increment_metric(id, by) })
}
