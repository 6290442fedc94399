//! A plain blocking HTTP/1.1 client on a fresh connection per request: it sees exactly
//! what a user would (status, every header, the body bytes, a connection dropped before
//! a whole response), and can send a chunked body or walk away mid-request.

use crate::http1::{self, Framing, Headers};
use std::io::{BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Headers,
    pub body: Option<Vec<u8>>,
    /// Send the body with `transfer-encoding: chunked`, in pieces of this size.
    pub chunk: Option<usize>,
    /// How long to wait for the whole response.
    pub timeout: Duration,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: None,
            chunk: None,
            timeout: Duration::from_secs(15),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body (sent with `content-length` unless [`Self::chunked`]).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sends the body chunked, `size` bytes a chunk, each written on its own.
    pub fn chunked(mut self, size: usize) -> Self {
        self.chunk = Some(size);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// From the first byte sent to the last byte read.
    pub elapsed: Duration,
}

impl Response {
    /// The first value of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        http1::header(&self.headers, name)
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        http1::all(&self.headers, name)
    }

    /// The body as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why no whole response came.
#[derive(Debug)]
pub enum ClientError {
    Connect(std::io::Error),
    /// No whole response within the request's timeout.
    Timeout,
    /// The connection ended before a whole response: what a user sees as a dropped
    /// connection.
    Dropped(String),
    Malformed(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Timeout => f.write_str("no whole response before the timeout"),
            ClientError::Dropped(why) => write!(f, "connection dropped: {why}"),
            ClientError::Malformed(why) => write!(f, "malformed response: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

fn io_error(e: std::io::Error) -> ClientError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout,
        ErrorKind::InvalidData => ClientError::Malformed(e.to_string()),
        _ => ClientError::Dropped(e.to_string()),
    }
}

fn connect_and_send(addr: SocketAddr, req: &Request) -> Result<TcpStream, ClientError> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(ClientError::Connect)?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(req.timeout))
        .map_err(ClientError::Connect)?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    let has = |n: &str| req.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
    if !has("host") {
        head.push_str(&format!("host: {addr}\r\n"));
    }
    for (n, v) in &req.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !has("connection") {
        head.push_str("connection: close\r\n");
    }
    match (&req.body, req.chunk) {
        (Some(_), Some(_)) => head.push_str("transfer-encoding: chunked\r\n"),
        (Some(b), None) => head.push_str(&format!("content-length: {}\r\n", b.len())),
        (None, _) => {}
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(io_error)?;
    match (&req.body, req.chunk) {
        (Some(b), Some(size)) => http1::write_chunked(&mut stream, b, size).map_err(io_error)?,
        (Some(b), None) => stream.write_all(b).map_err(io_error)?,
        (None, _) => {}
    }
    stream.flush().map_err(io_error)?;
    Ok(stream)
}

/// Sends `req` to `addr` on a new connection and reads the whole response.
pub fn send(addr: SocketAddr, req: &Request) -> Result<Response, ClientError> {
    let started = Instant::now();
    let stream = connect_and_send(addr, req)?;
    let mut r = BufReader::new(stream);
    // Interim 1xx answers are skipped.
    let head = loop {
        let head = http1::read_head(&mut r)
            .map_err(io_error)?
            .ok_or_else(|| ClientError::Dropped("closed before any response byte".into()))?;
        let status = parse_status(&head.start)?;
        if !(100..200).contains(&status) {
            break head;
        }
    };
    let status = parse_status(&head.start)?;
    let framing = if req.method == "HEAD" || status == 204 || status == 304 {
        Framing::None
    } else {
        http1::framing(&head.headers, true).map_err(io_error)?
    };
    let body = http1::read_body(&mut r, framing).map_err(io_error)?;
    if started.elapsed() > req.timeout {
        return Err(ClientError::Timeout);
    }
    Ok(Response {
        status,
        headers: head.headers,
        body,
        elapsed: started.elapsed(),
    })
}

/// Sends `req`, waits `after`, then closes the connection without reading an answer:
/// a client that goes away mid-request.
pub fn send_and_leave(addr: SocketAddr, req: &Request, after: Duration) -> Result<(), ClientError> {
    let stream = connect_and_send(addr, req)?;
    std::thread::sleep(after);
    drop(stream);
    Ok(())
}

fn parse_status(line: &str) -> Result<u16, ClientError> {
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Malformed(format!("status line {line:?}")))
}
