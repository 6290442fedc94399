//! The proxy-wasm header-map wire format, read and written with byte values.
//!
//! The SDK's own decoder unwraps `String::from_utf8` and panics on a non-UTF-8 header value;
//! this one never panics: names are decoded lossily, values stay bytes.

/// Header pairs with lower-case names and byte values, in order, repeats kept.
pub type Headers = Vec<(String, Vec<u8>)>;

/// Encodes pairs: count, then (name length, value length) pairs, then NUL-terminated data.
pub fn encode(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 8 + n.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (n, v) in pairs {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Decodes a serialized map; `None` if it is malformed (truncated or inconsistent).
pub fn decode(bytes: &[u8]) -> Option<Headers> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let read_u32 = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = read_u32(0)?;
    let mut sizes = Vec::with_capacity(count.min(bytes.len() / 8));
    let mut at = 4usize;
    for _ in 0..count {
        sizes.push((read_u32(at)?, read_u32(at + 4)?));
        at += 8;
    }
    let mut out = Vec::with_capacity(sizes.len());
    for (nl, vl) in sizes {
        let name = bytes.get(at..at.checked_add(nl)?)?;
        at = at.checked_add(nl)?.checked_add(1)?;
        let value = bytes.get(at..at.checked_add(vl)?)?;
        at = at.checked_add(vl)?.checked_add(1)?;
        if at > bytes.len() {
            return None;
        }
        out.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            value.to_vec(),
        ));
    }
    Some(out)
}

/// The first value of `name` (lower case) as text, if it is UTF-8.
pub fn first<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    first_bytes(headers, name).and_then(|v| std::str::from_utf8(v).ok())
}

/// The first value of `name` (lower case), as bytes.
pub fn first_bytes<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_binary_values_and_repeats() {
        let pairs: Vec<(&str, &[u8])> = vec![
            (":status", b"200"),
            ("set-cookie", b"a=1"),
            ("set-cookie", b"b=2"),
            ("x-bin", &[0xff, 0x80, 0x01]),
            ("empty", b""),
        ];
        let decoded = decode(&encode(&pairs)).unwrap();
        assert_eq!(decoded.len(), 5);
        assert_eq!(decoded[2], ("set-cookie".to_string(), b"b=2".to_vec()));
        assert_eq!(decoded[3].1, vec![0xff, 0x80, 0x01]);
        assert_eq!(first(&decoded, ":status"), Some("200"));
        assert_eq!(first(&decoded, "x-bin"), None);
    }

    #[test]
    fn malformed_input_is_none_not_panic() {
        let good = encode(&[("a", b"b".as_slice())]);
        for cut in 1..good.len() {
            assert_eq!(decode(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(decode(&[]), Some(vec![]));
    }
}
