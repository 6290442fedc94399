//! The HTTP/1.1 wire format both ends of the harness speak: a message head, and a body
//! framed by `content-length`, `transfer-encoding: chunked` or the end of the connection.

use std::io::{self, BufRead, Write};

/// Header lines as sent, names as they came.
pub type Headers = Vec<(String, String)>;

/// A request or status line and its headers.
#[derive(Debug, Clone)]
pub struct Head {
    pub start: String,
    pub headers: Headers,
}

/// The first value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of header `name`, in order.
pub fn all<'a>(headers: &'a Headers, name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Largest head accepted (request line and headers).
const MAX_HEAD: usize = 64 * 1024;

/// Reads one head; `Ok(None)` when the peer closed before sending a byte of it.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a message head",
            ));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // a stray CRLF between messages
            }
            break;
        }
        lines.push(line);
    }
    let start = lines.remove(0);
    let headers = lines
        .into_iter()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Ok(Some(Head { start, headers }))
}

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
    /// Until the connection closes (a response without length or chunking).
    UntilClose,
}

/// The framing a message with these headers announces; `response` allows `UntilClose`.
pub fn framing(headers: &Headers, response: bool) -> io::Result<Framing> {
    if header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Ok(Framing::Chunked);
    }
    match header(headers, "content-length") {
        Some(v) => v.trim().parse().map(Framing::Length).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, format!("content-length {v:?}"))
        }),
        None if response => Ok(Framing::UntilClose),
        None => Ok(Framing::None),
    }
}

/// Reads a body of the given framing (trailers of a chunked body are skipped).
pub fn read_body(r: &mut impl BufRead, framing: Framing) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        Framing::UntilClose => {
            r.read_to_end(&mut body)?;
        }
        Framing::Chunked => loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "inside a chunked body",
                ));
            }
            let size_text = line
                .trim()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let size = usize::from_str_radix(&size_text, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("chunk size {size_text:?}"),
                )
            })?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        },
    }
    Ok(body)
}

/// Writes `body` as chunks of at most `chunk` bytes, flushing each, then the last chunk.
pub fn write_chunked(w: &mut impl Write, body: &[u8], chunk: usize) -> io::Result<()> {
    for part in body.chunks(chunk.max(1)) {
        write!(w, "{:x}\r\n", part.len())?;
        w.write_all(part)?;
        w.write_all(b"\r\n")?;
        w.flush()?;
    }
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn chunked_round_trip() {
        let body: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut wire = Vec::new();
        write_chunked(&mut wire, &body, 777).unwrap();
        let mut r = BufReader::new(wire.as_slice());
        assert_eq!(read_body(&mut r, Framing::Chunked).unwrap(), body);
    }

    #[test]
    fn head_and_framing() {
        let wire =
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: a\r\nset-cookie: b\r\n\r\nabc";
        let mut r = BufReader::new(&wire[..]);
        let head = read_head(&mut r).unwrap().unwrap();
        assert_eq!(head.start, "HTTP/1.1 200 OK");
        assert_eq!(all(&head.headers, "set-cookie"), ["a", "b"]);
        assert_eq!(framing(&head.headers, true).unwrap(), Framing::Length(3));
        assert_eq!(read_body(&mut r, Framing::Length(3)).unwrap(), b"abc");
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
