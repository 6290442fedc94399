//! Host-call plumbing: guest memory access, returning bytes through the
//! module's allocator, host-call accounting, and traps raised by the rules.

use super::state::WorkerState;
use crate::abi::status;
use wasmtime::{Caller, Extern};

/// A host-call trap raised by the profile's rules (not by the module's code),
/// worded as the real host words it.
#[derive(Debug)]
pub(super) struct HostTrap(String);

impl std::fmt::Display for HostTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostTrap {}

/// Kong: an hfunc returning `NGX_WAVM_BAD_USAGE` (src/wasm/vm/ngx_wavm_host.c,
/// `ngx_wavm_hfunc_trampoline`: "host trap (bad usage): <message>").
pub(super) fn host_trap(message: &str) -> wasmtime::Error {
    wasmtime::Error::new(HostTrap(format!("host trap (bad usage): {message}")))
}

/// A trap whose message is the whole text: Kong's `ngx_proxy_wasm_result_trap(..,
/// NGX_WAVM_OK)` (the trampoline adds no prefix), or Envoy's V8 trap.
pub(super) fn plain_trap(message: &str) -> wasmtime::Error {
    wasmtime::Error::new(HostTrap(message.to_string()))
}

pub(super) type C<'a> = Caller<'a, WorkerState>;
pub(super) type R<T> = wasmtime::Result<T>;

pub(super) fn memory(c: &mut C<'_>) -> Option<wasmtime::Memory> {
    c.get_export("memory").and_then(Extern::into_memory)
}

pub(super) fn read(c: &mut C<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
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

pub(super) fn write(c: &mut C<'_>, ptr: i32, bytes: &[u8]) -> bool {
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

pub(super) fn write_u32(c: &mut C<'_>, ptr: i32, v: u32) -> bool {
    write(c, ptr, &v.to_le_bytes())
}

/// Writes a fixed-size value at `ptr` and returns the status the guest sees.
pub(super) fn return_value(c: &mut C<'_>, ptr: i32, bytes: &[u8]) -> R<i32> {
    Ok(if write(c, ptr, bytes) {
        status::OK
    } else {
        status::INVALID_MEMORY_ACCESS
    })
}

/// Copies `data` into guest memory allocated with the module's allocator and
/// stores its address and length at `ptr_ptr`/`len_ptr`. Empty data returns a
/// null pointer (the SDK reads that as "no value").
pub(super) fn return_bytes(c: &mut C<'_>, data: &[u8], ptr_ptr: i32, len_ptr: i32) -> R<i32> {
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

/// Books `proxy_log`, which every profile allows in every phase.
pub(super) fn counted_log(c: &mut C<'_>) -> R<()> {
    c.data_mut().stats.host_calls += 1;
    let s = c.data();
    s.profile()
        .host_call_allowed(s.phase, true)
        .map_err(plain_trap)
}

/// Books a proxy-wasm host call, refusing it where the profile forbids host
/// calls (Envoy during `_initialize`/`_start`, see
/// [`crate::profile::Profile::host_call_allowed`]).
pub(super) fn counted(c: &mut C<'_>) -> R<()> {
    c.data_mut().stats.host_calls += 1;
    let s = c.data();
    s.profile()
        .host_call_allowed(s.phase, false)
        .map_err(plain_trap)
}

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
