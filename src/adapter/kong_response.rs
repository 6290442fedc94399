//! Kong's local responses put back as the filter sent them: Kong keeps only the last value of
//! a repeated header, and sends its own Content-Length for the body plus an appended "\n".

use super::abi;
use crate::header_map::{first, Headers};

/// In the response-headers phase: puts back every value of repeated headers and drops
/// Content-Length, so the body goes chunked and [`restore_body`] can make it byte-exact. A
/// bodiless answer that announces a length (HEAD, 304) gets the upstream's value back.
pub fn restore_headers(ctx: u32, headers: &Headers) {
    match first(headers, "content-length") {
        Some(length) => {
            let _ = abi::replace_header(abi::RESPONSE_HEADERS, "content-length", length.as_bytes());
        }
        None => {
            let _ = abi::remove_header(abi::RESPONSE_HEADERS, "content-length");
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in headers {
        if seen.contains(&name.as_str()) {
            continue;
        }
        seen.push(name);
        let values: Vec<&[u8]> = headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect();
        if values.len() < 2 {
            continue;
        }
        let mut ok = abi::replace_header(abi::RESPONSE_HEADERS, name, values[0]).is_ok();
        for v in &values[1..] {
            ok &= abi::add_header(abi::RESPONSE_HEADERS, name, v).is_ok();
        }
        if !ok {
            log::warn!("kong_retry [{ctx}]: cannot restore repeated header {name}");
        }
    }
}

/// In the response-body phase, once the whole body is there: replaces it with `body`.
pub fn restore_body(ctx: u32, body_size: usize, body: &[u8]) {
    if let Err(s) = abi::set_buffer(abi::HTTP_RESPONSE_BODY, 0, body_size, body) {
        log::warn!(
            "kong_retry [{ctx}]: cannot restore the response body (status {})",
            s.0
        );
    }
}
