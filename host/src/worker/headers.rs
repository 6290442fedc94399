//! Header-map imports: request/response headers and trailers, dispatch
//! response headers (with Kong's hidden `:dispatch_status`).

use super::guest::{counted, read, return_bytes, return_value, text, C, R};
use super::state::WorkerState;
use crate::abi::{self, status, MapType};
use wasmtime::Linker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MapOp {
    Add,
    Replace,
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

pub(super) fn define(linker: &mut Linker<WorkerState>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, rp: i32, rs: i32| -> R<i32> {
            counted(&mut c)?;
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
            counted(&mut c)?;
            let Some(map) = MapType::from_raw(map) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let pairs = map_of(c.data_mut(), map).cloned().unwrap_or_default();
            let size = abi::serialize_map(&pairs).len() as u32;
            return_value(&mut c, rs, &size.to_le_bytes())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, kn: i32, rp: i32, rs: i32| -> R<i32> {
            counted(&mut c)?;
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
            counted(&mut c)?;
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
                counted(&mut c)?;
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
            counted(&mut c)?;
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
    Ok(())
}
