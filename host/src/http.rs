//! The HTTP vocabulary of the fakes: client requests, upstream calls and their
//! replies, and the response the client finally sees.

/// Identifies one client request sent into a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies one upstream call (a filter dispatch or the proxy's own forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub scheme: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A request without headers or body, for authority `localhost`.
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            authority: "localhost".to_string(),
            scheme: "http".to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (repeated names are kept in order).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body; `content-length` is added when sent unless a
    /// `content-length` or `transfer-encoding` header is present.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the `:authority` (Host).
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_string();
        self
    }

    /// First value of a header, case-insensitive.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The headers as sent on the wire: `content-length` added for a body unless
    /// the request is framed otherwise.
    pub(crate) fn wire_headers(&self) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        let framed = self.header_value("content-length").is_some()
            || self.header_value("transfer-encoding").is_some();
        if !self.body.is_empty() && !framed {
            headers.push(("content-length".to_string(), self.body.len().to_string()));
        }
        headers
    }
}

/// Why an upstream call produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connection refused (nothing listening).
    Refused,
    /// No complete response within the call's timeout.
    Timeout,
    /// The connection was reset before a response head arrived.
    Reset,
}

/// What an upstream answers to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A complete response.
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        delay_ms: u64,
    },
    /// A response whose body was cut off: `announced_len` announced, `body` received.
    Truncated {
        status: u16,
        headers: Vec<(String, String)>,
        announced_len: usize,
        body: Vec<u8>,
        delay_ms: u64,
    },
    /// No response at all.
    Failure { failure: Failure, delay_ms: u64 },
}

impl Reply {
    /// A complete response with this status, no headers and an empty body.
    pub fn status(status: u16) -> Self {
        Reply::Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay_ms: 0,
        }
    }

    /// A failed call.
    pub fn failure(failure: Failure) -> Self {
        Reply::Failure {
            failure,
            delay_ms: 0,
        }
    }

    /// A response cut off mid-body: `announced_len` in `content-length`, `partial` received.
    pub fn truncated(status: u16, announced_len: usize, partial: impl Into<Vec<u8>>) -> Self {
        Reply::Truncated {
            status,
            headers: vec![("content-length".to_string(), announced_len.to_string())],
            announced_len,
            body: partial.into(),
            delay_ms: 0,
        }
    }

    /// Adds a header to a response (no effect on a failure).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match &mut self {
            Reply::Response { headers, .. } | Reply::Truncated { headers, .. } => {
                headers.push((name.to_string(), value.to_string()))
            }
            Reply::Failure { .. } => {}
        }
        self
    }

    /// Sets the body of a complete response (no effect otherwise).
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        if let Reply::Response { body, .. } = &mut self {
            *body = bytes.into();
        }
        self
    }

    /// Used by [`crate::Gateway::run`]: the answer arrives this many ms after the
    /// call was seen, so a shorter call timeout fires first.
    pub fn after_ms(mut self, ms: u64) -> Self {
        match &mut self {
            Reply::Response { delay_ms, .. }
            | Reply::Truncated { delay_ms, .. }
            | Reply::Failure { delay_ms, .. } => *delay_ms = ms,
        }
        self
    }

    pub(crate) fn delay_ms(&self) -> u64 {
        match self {
            Reply::Response { delay_ms, .. }
            | Reply::Truncated { delay_ms, .. }
            | Reply::Failure { delay_ms, .. } => *delay_ms,
        }
    }
}

/// Who made an upstream call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallKind {
    /// The filter's `dispatch_http_call`, with its token and upstream argument.
    Dispatch { token: u32, upstream: String },
    /// The proxy's own forward of the client request (filter continued).
    Proxied,
}

/// One upstream call as the upstream sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamCall {
    pub id: CallId,
    /// The client request it belongs to (None: made from a root context).
    pub request: Option<RequestId>,
    pub worker: usize,
    pub kind: CallKind,
    pub method: String,
    pub path: String,
    pub authority: String,
    /// Regular headers (no pseudo-headers), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
    pub sent_at_ms: u64,
}

impl UpstreamCall {
    /// A call as it goes on the wire: the pseudo-headers become method, path and
    /// authority (empty when absent); id, owner and timing are the caller's to fill.
    pub(crate) fn from_wire(kind: CallKind, headers: &[(String, String)], body: Vec<u8>) -> Self {
        let pseudo = |name: &str| find_header(headers, name).unwrap_or("").to_string();
        UpstreamCall {
            id: CallId(0),
            request: None,
            worker: 0,
            kind,
            method: pseudo(":method"),
            path: pseudo(":path"),
            authority: pseudo(":authority"),
            headers: regular_headers(headers),
            body,
            timeout_ms: 0,
            sent_at_ms: 0,
        }
    }

    /// First value of a header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Whether the filter made this call.
    pub fn is_dispatch(&self) -> bool {
        matches!(self.kind, CallKind::Dispatch { .. })
    }

    /// The upstream a dispatch was sent to, or the proxy's upstream for a forward.
    pub fn upstream(&self) -> Option<&str> {
        match &self.kind {
            CallKind::Dispatch { upstream, .. } => Some(upstream),
            CallKind::Proxied => None,
        }
    }
}

/// Where the client's response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The filter's `send_local_response`.
    Local,
    /// The upstream's answer to the proxied request (possibly modified by the filter).
    Upstream,
    /// The gateway itself: an error page for a failed forward, or the 500/503 after a trap.
    Gateway,
    /// No response: the gateway closed the connection (status 0, no headers, no
    /// body; a client sees e.g. Python's `RemoteDisconnected`).
    Dropped,
}

/// The response the client finally sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    /// All headers, all values, in order (no pseudo-headers).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub source: Source,
    /// The filter trapped while handling this request.
    pub trapped: bool,
    /// The bytes on the wire would not frame this response correctly: a
    /// `content-length` that does not match the body, `content-length` together
    /// with `transfer-encoding`, or an upstream body that was cut off.
    pub framing_error: bool,
}

impl ClientResponse {
    /// The connection closed without a response.
    pub(crate) fn dropped() -> Self {
        ClientResponse {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
            source: Source::Dropped,
            trapped: false,
            framing_error: false,
        }
    }

    /// Whether the client got no response at all (the connection was closed).
    pub fn is_dropped(&self) -> bool {
        self.source == Source::Dropped
    }

    /// First value of a header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// All values of a header, case-insensitive, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as UTF-8 (lossy), for assertions.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The headers without the pseudo-headers (`:status`, `:path`, ...), in order.
pub(crate) fn regular_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .cloned()
        .collect()
}

/// Whether a response with these headers and body is framed correctly.
pub(crate) fn framing_ok(headers: &[(String, String)], body_len: usize) -> bool {
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    if chunked && !lengths.is_empty() {
        return false;
    }
    lengths
        .iter()
        .all(|v| v.trim().parse::<usize>().ok() == Some(body_len))
}
