//! Where dispatches go: the `upstream` (configured, or Kong's `kong.router.service`) and the
//! `delay_endpoint`, both checked as `host[:port]`.

use super::read::string;
use super::ConfigError;
use serde_json::Value;

/// URL scheme of a configured upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The `:scheme` pseudo-header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Where attempts are dispatched: Kong `host[:port]`, or an Envoy cluster name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The `upstream` argument of `dispatch_http_call`.
    pub target: String,
    /// `https` turns TLS on (Kong); `http` otherwise.
    pub scheme: Scheme,
}

/// Parses `host[:port]`, `http://host[:port]`, `https://host[:port]` or a cluster name.
pub fn parse_upstream(field: &str, v: &Value) -> Result<Option<Upstream>, ConfigError> {
    const ALLOWED: &str =
        "Kong: \"host:port\" or \"https://host:port\" (no path); Envoy: a cluster name";
    let s = string(field, v, ALLOWED)?;
    let (scheme, explicit, rest) = if let Some(r) = s.strip_prefix("https://") {
        (Scheme::Https, true, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (Scheme::Http, true, r)
    } else if s.contains("://") {
        return Err(ConfigError::new(field, v, ALLOWED));
    } else {
        (Scheme::Http, false, s)
    };
    let rest = if explicit {
        rest.strip_suffix('/').unwrap_or(rest)
    } else {
        rest
    };
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == '/' || c == '?';
    if rest.is_empty() || rest.chars().any(bad_char) {
        return Err(ConfigError::new(field, v, ALLOWED));
    }
    if explicit || looks_like_host_port(rest) {
        check_host_port(field, v, rest, explicit, ALLOWED)?;
    }
    Ok(Some(Upstream {
        target: rest.to_string(),
        scheme,
    }))
}

fn looks_like_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !port.is_empty() && !host.contains(':'),
        None => false,
    }
}

fn check_host_port(
    field: &str,
    v: &Value,
    s: &str,
    port_optional: bool,
    allowed: &str,
) -> Result<(), ConfigError> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (s, None),
    };
    if host.is_empty() {
        return Err(ConfigError::new(field, v, allowed));
    }
    match port {
        Some(p) => match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) && !p.starts_with('+') => Ok(()),
            _ => Err(ConfigError::new(
                field,
                v,
                format!("the port must be 1-65535; {allowed}"),
            )),
        },
        None if port_optional => Ok(()),
        None => Err(ConfigError::new(field, v, allowed)),
    }
}

pub(super) fn parse_delay_endpoint(v: &Value) -> Result<Option<String>, ConfigError> {
    const ALLOWED: &str = "\"host:port\" of the loopback delay server, e.g. \"127.0.0.1:8555\"";
    let s = string("delay_endpoint", v, ALLOWED)?;
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ConfigError::new("delay_endpoint", v, ALLOWED));
    }
    check_host_port("delay_endpoint", v, s, false, ALLOWED)?;
    Ok(Some(s.to_string()))
}

/// The upstream of a Kong route's service, from the `kong.router.service` property (JSON).
pub fn upstream_from_kong_service(json: &[u8]) -> Option<Upstream> {
    let v: Value = serde_json::from_slice(json).ok()?;
    let host = v.get("host")?.as_str()?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return None;
    }
    let protocol = v.get("protocol").and_then(Value::as_str).unwrap_or("http");
    let scheme = match protocol {
        "https" | "grpcs" | "tls" => Scheme::Https,
        _ => Scheme::Http,
    };
    let port = v
        .get("port")
        .and_then(Value::as_u64)
        .filter(|p| (1..=65535).contains(p));
    let port = port.unwrap_or(if scheme == Scheme::Https { 443 } else { 80 });
    Some(Upstream {
        target: format!("{host}:{port}"),
        scheme,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        let up = |s: &str| {
            parse_upstream("upstream", &Value::from(s))
                .unwrap()
                .unwrap()
        };
        assert_eq!(up("backend").target, "backend");
        assert_eq!(
            up("outbound|80||svc.local").target,
            "outbound|80||svc.local"
        );
        assert_eq!(up("127.0.0.1:8080").scheme, Scheme::Http);
        assert_eq!(up("http://h:1/").target, "h:1");
        assert_eq!(up("https://h").target, "h");
        assert_eq!(up("https://h").scheme, Scheme::Https);
    }

    #[test]
    fn kong_service_property() {
        let u = upstream_from_kong_service(
            br#"{"host":"orders.svc","port":8443,"protocol":"https","path":"/v1"}"#,
        )
        .unwrap();
        assert_eq!(u.target, "orders.svc:8443");
        assert_eq!(u.scheme, Scheme::Https);
        let u = upstream_from_kong_service(br#"{"host":"a"}"#).unwrap();
        assert_eq!(u.target, "a:80");
        assert!(upstream_from_kong_service(b"{}").is_none());
        assert!(upstream_from_kong_service(b"garbage").is_none());
    }
}
