//! Property imports: the builder's properties, the filter's own, and the
//! request-derived ones each profile exposes.

use super::guest::{counted, read, return_bytes, text, C, R};
use super::state::WorkerState;
use super::ROOT_ID;
use crate::abi::status;
use crate::gateway::LogLevel;
use crate::profile::{Profile, PropertyRule};
use wasmtime::Linker;

pub(super) fn define(linker: &mut Linker<WorkerState>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, pp: i32, pn: i32, rp: i32, rs: i32| -> R<i32> {
            counted(&mut c)?;
            let Some(path) = read(&mut c, pp, pn) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            if let Some(code) = refused(c.data(), &path, false) {
                return Ok(code);
            }
            let path = property_path(&path);
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
            counted(&mut c)?;
            let (Some(path), Some(value)) = (read(&mut c, pp, pn), read(&mut c, vp, vn)) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            if let Some(code) = refused(c.data(), &path, true) {
                return Ok(code);
            }
            let path = property_path(&path);
            c.data_mut().set_properties.insert(path, value);
            Ok(status::OK)
        },
    )?;
    Ok(())
}

/// The status of a property call the profile refuses (logging as the host
/// does), or None to go on. The path is checked as the host sees it: the raw
/// bytes with NULs as dots.
fn refused(state: &WorkerState, raw: &[u8], setting: bool) -> Option<i32> {
    let dotted: String = text(raw).replace('\0', ".");
    let in_root = state.active == ROOT_ID;
    match state.profile().property_rule(&dotted, in_root, setting) {
        PropertyRule::Lookup => None,
        PropertyRule::ScopedOutsideRequest(message) => {
            state.log(LogLevel::Error, format!("[error] [wasm] {message}"));
            Some(status::INTERNAL_FAILURE)
        }
        PropertyRule::NotYetImplemented => {
            state.log(
                LogLevel::Critical,
                format!("[alert] [wasm] NYI - \"{dotted}\" property"),
            );
            Some(status::NOT_FOUND)
        }
        PropertyRule::NotSupported => {
            state.log(
                LogLevel::Error,
                format!("[error] [wasm] \"{dotted}\" property not supported"),
            );
            Some(status::NOT_FOUND)
        }
    }
}

/// A property path as the ABI sends it: parts separated by NUL bytes.
fn property_path(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .map(text)
        .filter(|s| !s.is_empty())
        .collect()
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
        (Profile::Envoy, ["response", "code_details"]) if stream.has_response => {
            stream.code_details.clone().map(String::into_bytes)
        }
        (_, ["request", "headers", name]) => header(name),
        _ => None,
    }
}
