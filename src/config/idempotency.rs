//! `idempotency`: gateway-side idempotency keys — which requests are covered, how long
//! locks and results live, where records are kept (node shared data or etcd), and bounds.

use super::read::{int_in, object, one_of, string};
use super::upstream::{parse_upstream, Upstream};
use super::{header_name, parse_methods_of, BudgetScope, ConfigError, StoreUnavailable};
use serde_json::Value;

/// Where idempotency records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyStore {
    /// The node's shared data (Kong `shm_kv` zone `budget.zone`, Envoy shared data).
    Shared,
    /// Cluster-wide, in etcd through its v3 JSON gateway.
    Etcd,
}

/// Longest accepted `ttl`, ms: 7 days.
pub const MAX_TTL_MS: u64 = 7 * 86_400_000;
/// Largest accepted `max_response_bytes`.
pub const MAX_RESPONSE_LIMIT: u64 = 16 * 1024 * 1024;
/// Largest accepted `shared.max_records`: the index of records is one shared-data value
/// rewritten on every claim, so its size (32 bytes a record) is what a claim costs.
pub const MAX_SHARED_RECORDS: u64 = 20_000;
/// Largest accepted `shared.max_bytes`: 1 GiB.
pub const MAX_SHARED_BYTES: u64 = 1024 * 1024 * 1024;

/// Default `etcd.prefix`.
pub const DEFAULT_ETCD_PREFIX: &str = "/kong-retry/idem/";

/// How to reach etcd (`idempotency.etcd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Kong: `host:port` (or `http(s)://host:port`); Envoy: a cluster name. Required when
    /// `store` is `"etcd"` and idempotency is enabled.
    pub endpoint: Option<Upstream>,
    /// Every record key starts with this.
    pub prefix: String,
    /// Timeout of one etcd call, ms.
    pub timeout_ms: u64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoint: None,
            prefix: DEFAULT_ETCD_PREFIX.to_string(),
            timeout_ms: 1_000,
        }
    }
}

/// Bounds of the node-local store (`idempotency.shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBounds {
    /// Most records kept; the oldest finished ones are evicted first.
    pub max_records: u32,
    /// Most bytes (keys and values of records) kept.
    pub max_bytes: u64,
}

impl Default for SharedBounds {
    fn default() -> Self {
        SharedBounds {
            max_records: 1_000,
            max_bytes: 2 * 1024 * 1024,
        }
    }
}

/// The validated `idempotency` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyConfig {
    pub enabled: bool,
    pub store: IdempotencyStore,
    /// Methods whose keyed requests are deduplicated, upper case.
    pub methods: Vec<String>,
    /// A covered request without the key gets 400.
    pub required: bool,
    /// How long a completed record is replayed, ms.
    pub ttl_ms: u64,
    /// How long an in-flight record blocks duplicates, ms (at least `deadline`).
    pub lock_timeout_ms: u64,
    /// Largest response body stored, bytes.
    pub max_response_bytes: usize,
    /// What the key is combined with besides the client's key: the route or the upstream.
    pub scope: BudgetScope,
    /// Lower case; when set, its value is combined with the key too (one key space per
    /// consumer).
    pub consumer_header: Option<String>,
    pub on_store_unavailable: StoreUnavailable,
    pub etcd: EtcdConfig,
    pub shared: SharedBounds,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            enabled: false,
            store: IdempotencyStore::Shared,
            methods: vec!["POST".to_string(), "PATCH".to_string()],
            required: false,
            ttl_ms: 86_400_000,
            lock_timeout_ms: 30_000,
            max_response_bytes: 1_048_576,
            scope: BudgetScope::Route,
            consumer_header: None,
            on_store_unavailable: StoreUnavailable::Allow,
            etcd: EtcdConfig::default(),
            shared: SharedBounds::default(),
        }
    }
}

impl IdempotencyConfig {
    /// Is a request of `method` (any case) covered?
    pub fn covers(&self, method: &str) -> bool {
        self.enabled && self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

const FIELDS: &[&str] = &[
    "enabled",
    "store",
    "methods",
    "required",
    "ttl",
    "lock_timeout",
    "max_response_bytes",
    "scope",
    "consumer_header",
    "on_store_unavailable",
    "etcd",
    "shared",
];

/// Parses `idempotency`; `deadline_ms` is the plan's deadline (the lock must outlive it).
pub(super) fn parse_idempotency(
    v: &Value,
    deadline_ms: u64,
) -> Result<IdempotencyConfig, ConfigError> {
    const ALLOWED: &str = "an object with enabled, store (\"shared\"|\"etcd\"), methods, required, ttl (ms), lock_timeout (ms), max_response_bytes, scope (\"route\"|\"upstream\"), consumer_header, on_store_unavailable (\"allow\"|\"deny\"), etcd {endpoint, prefix, timeout}, shared {max_records, max_bytes}";
    let obj = object("idempotency", v, FIELDS, ALLOWED)?;
    let mut c = IdempotencyConfig::default();
    if let Some(e) = obj.get("enabled") {
        c.enabled = boolean("idempotency.enabled", e)?;
    }
    if let Some(s) = obj.get("store") {
        const A: &str = "one of \"shared\" (this node's shared data), \"etcd\" (cluster-wide)";
        c.store = one_of(
            "idempotency.store",
            s,
            A,
            &[
                ("shared", IdempotencyStore::Shared),
                ("etcd", IdempotencyStore::Etcd),
            ],
        )?;
    }
    if let Some(m) = obj.get("methods") {
        c.methods = parse_methods_of("idempotency.methods", m, "[\"POST\",\"PATCH\"]")?;
    }
    if let Some(r) = obj.get("required") {
        c.required = boolean("idempotency.required", r)?;
    }
    if let Some(t) = obj.get("ttl") {
        c.ttl_ms = int_in("idempotency.ttl", t, 1_000, MAX_TTL_MS, " (ms)")?;
    }
    if let Some(t) = obj.get("lock_timeout") {
        c.lock_timeout_ms = int_in(
            "idempotency.lock_timeout",
            t,
            1_000,
            super::MAX_DURATION_MS,
            " (ms)",
        )?;
    }
    if let Some(m) = obj.get("max_response_bytes") {
        c.max_response_bytes = int_in(
            "idempotency.max_response_bytes",
            m,
            0,
            MAX_RESPONSE_LIMIT,
            " (bytes)",
        )? as usize;
    }
    if let Some(s) = obj.get("scope") {
        const A: &str = "one of \"route\", \"upstream\"";
        c.scope = one_of(
            "idempotency.scope",
            s,
            A,
            &[
                ("route", BudgetScope::Route),
                ("upstream", BudgetScope::Upstream),
            ],
        )?;
    }
    if let Some(h) = obj.get("consumer_header") {
        c.consumer_header = Some(header_name("idempotency.consumer_header", h)?);
    }
    if let Some(s) = obj.get("on_store_unavailable") {
        const A: &str = "one of \"allow\" (forward once, without the gateway's idempotency), \"deny\" (answer 503)";
        c.on_store_unavailable = one_of(
            "idempotency.on_store_unavailable",
            s,
            A,
            &[
                ("allow", StoreUnavailable::Allow),
                ("deny", StoreUnavailable::Deny),
            ],
        )?;
    }
    if let Some(e) = obj.get("etcd") {
        c.etcd = parse_etcd(e)?;
    }
    if let Some(s) = obj.get("shared") {
        c.shared = parse_shared(s)?;
    }
    if c.enabled {
        check_enabled(&c, deadline_ms)?;
    }
    Ok(c)
}

/// The rules that tie fields together; only an enabled feature is held to them, so a
/// disabled block can be kept in a config while the deadline changes.
fn check_enabled(c: &IdempotencyConfig, deadline_ms: u64) -> Result<(), ConfigError> {
    if c.lock_timeout_ms < deadline_ms {
        return Err(ConfigError {
            field: "idempotency.lock_timeout".into(),
            value: c.lock_timeout_ms.to_string(),
            allowed: format!(
                "must be at least deadline ({deadline_ms} ms): a lock that expires while its request is still in flight lets a duplicate run"
            ),
        });
    }
    if c.store == IdempotencyStore::Etcd && c.etcd.endpoint.is_none() {
        return Err(ConfigError {
            field: "idempotency.etcd.endpoint".into(),
            value: "(missing)".into(),
            allowed: "required with \"store\":\"etcd\": Kong: \"host:port\" of etcd's client port; Envoy: a cluster name".into(),
        });
    }
    Ok(())
}

fn boolean(field: &str, v: &Value) -> Result<bool, ConfigError> {
    v.as_bool()
        .ok_or_else(|| ConfigError::new(field, v, "true or false"))
}

fn parse_etcd(v: &Value) -> Result<EtcdConfig, ConfigError> {
    const ALLOWED: &str = "an object with endpoint, prefix, timeout (ms)";
    let obj = object(
        "idempotency.etcd",
        v,
        &["endpoint", "prefix", "timeout"],
        ALLOWED,
    )?;
    let mut e = EtcdConfig::default();
    if let Some(p) = obj.get("endpoint") {
        e.endpoint = parse_upstream("idempotency.etcd.endpoint", p)?;
    }
    if let Some(p) = obj.get("prefix") {
        const A: &str =
            "1 to 256 printable ASCII characters without spaces, e.g. \"/kong-retry/idem/\"";
        let s = string("idempotency.etcd.prefix", p, A)?;
        if !(1..=256).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new("idempotency.etcd.prefix", p, A));
        }
        e.prefix = s.to_string();
    }
    if let Some(t) = obj.get("timeout") {
        e.timeout_ms = int_in("idempotency.etcd.timeout", t, 1, 60_000, " (ms)")?;
    }
    Ok(e)
}

fn parse_shared(v: &Value) -> Result<SharedBounds, ConfigError> {
    const ALLOWED: &str = "an object with max_records, max_bytes";
    let obj = object(
        "idempotency.shared",
        v,
        &["max_records", "max_bytes"],
        ALLOWED,
    )?;
    let mut b = SharedBounds::default();
    if let Some(m) = obj.get("max_records") {
        b.max_records = int_in(
            "idempotency.shared.max_records",
            m,
            1,
            MAX_SHARED_RECORDS,
            "",
        )? as u32;
    }
    if let Some(m) = obj.get("max_bytes") {
        b.max_bytes = int_in(
            "idempotency.shared.max_bytes",
            m,
            65_536,
            MAX_SHARED_BYTES,
            " (bytes)",
        )?;
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, IdempotencyStore, Scheme, StoreUnavailable};

    #[test]
    fn defaults_are_off_post_patch_one_day() {
        let p = parse(b"{}").unwrap();
        let i = &p.idempotency;
        assert!(!i.enabled);
        assert_eq!(i.store, IdempotencyStore::Shared);
        assert_eq!(i.methods, vec!["POST", "PATCH"]);
        assert_eq!((i.ttl_ms, i.lock_timeout_ms), (86_400_000, 30_000));
        assert_eq!(i.etcd.prefix, "/kong-retry/idem/");
        assert!(!i.covers("POST"), "disabled covers nothing");
    }

    #[test]
    fn full_block_parses() {
        let p = parse(
            br#"{"idempotency_header":"X-Idem","deadline":20000,"idempotency":{"enabled":true,
            "store":"etcd","methods":"post, delete","required":true,"ttl":3600000,
            "lock_timeout":20000,"max_response_bytes":0,"scope":"upstream",
            "consumer_header":"X-Consumer-ID","on_store_unavailable":"deny",
            "etcd":{"endpoint":"https://etcd.internal:2379","prefix":"/a/","timeout":250},
            "shared":{"max_records":10,"max_bytes":65536}}}"#,
        )
        .unwrap();
        let i = &p.idempotency;
        assert_eq!(p.idempotency_header, "x-idem");
        assert!(i.enabled && i.required);
        assert!(i.covers("delete") && i.covers("POST") && !i.covers("PATCH"));
        assert_eq!(i.consumer_header.as_deref(), Some("x-consumer-id"));
        assert_eq!(i.on_store_unavailable, StoreUnavailable::Deny);
        let ep = i.etcd.endpoint.clone().unwrap();
        assert_eq!(
            (ep.target.as_str(), ep.scheme),
            ("etcd.internal:2379", Scheme::Https)
        );
        assert_eq!((i.etcd.prefix.as_str(), i.etcd.timeout_ms), ("/a/", 250));
        assert_eq!((i.shared.max_records, i.shared.max_bytes), (10, 65536));
        assert_eq!(i.max_response_bytes, 0);
    }

    #[test]
    fn lock_shorter_than_the_deadline_names_both_fields() {
        for json in [
            r#"{"idempotency":{"enabled":true,"lock_timeout":5000}}"#,
            r#"{"deadline":60000,"idempotency":{"enabled":true}}"#,
            r#"{"deadline":20000,"idempotency":{"enabled":true,"lock_timeout":15000}}"#,
        ] {
            let e = parse(json.as_bytes()).unwrap_err();
            assert_eq!(e.field, "idempotency.lock_timeout", "{json}");
            assert!(e.to_string().contains("deadline"), "{e}");
        }
        // A disabled block is not held to it.
        parse(br#"{"deadline":60000,"idempotency":{"lock_timeout":5000}}"#).unwrap();
        parse(br#"{"deadline":30000,"idempotency":{"enabled":true}}"#).unwrap();
    }

    #[test]
    fn etcd_store_needs_an_endpoint() {
        let e = parse(br#"{"idempotency":{"enabled":true,"store":"etcd"}}"#).unwrap_err();
        assert_eq!(e.field, "idempotency.etcd.endpoint");
        parse(br#"{"idempotency":{"store":"etcd"}}"#).unwrap();
        parse(br#"{"idempotency":{"enabled":true,"store":"etcd","etcd":{"endpoint":"etcd"}}}"#)
            .unwrap();
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"idempotency":true}"#, "idempotency"),
            (
                r#"{"idempotency":{"enabled":"yes"}}"#,
                "idempotency.enabled",
            ),
            (r#"{"idempotency":{"store":"redis"}}"#, "idempotency.store"),
            (r#"{"idempotency":{"methods":[]}}"#, "idempotency.methods"),
            (
                r#"{"idempotency":{"methods":["PO ST"]}}"#,
                "idempotency.methods",
            ),
            (r#"{"idempotency":{"required":1}}"#, "idempotency.required"),
            (r#"{"idempotency":{"ttl":999}}"#, "idempotency.ttl"),
            (
                r#"{"idempotency":{"lock_timeout":"30s"}}"#,
                "idempotency.lock_timeout",
            ),
            (
                r#"{"idempotency":{"max_response_bytes":-1}}"#,
                "idempotency.max_response_bytes",
            ),
            (r#"{"idempotency":{"scope":"global"}}"#, "idempotency.scope"),
            (
                r#"{"idempotency":{"consumer_header":"Connection"}}"#,
                "idempotency.consumer_header",
            ),
            (
                r#"{"idempotency":{"on_store_unavailable":"maybe"}}"#,
                "idempotency.on_store_unavailable",
            ),
            (r#"{"idempotency":{"etcd":[]}}"#, "idempotency.etcd"),
            (
                r#"{"idempotency":{"etcd":{"endpoint":"http://e/x"}}}"#,
                "idempotency.etcd.endpoint",
            ),
            (
                r#"{"idempotency":{"etcd":{"prefix":"a b"}}}"#,
                "idempotency.etcd.prefix",
            ),
            (
                r#"{"idempotency":{"etcd":{"timeout":0}}}"#,
                "idempotency.etcd.timeout",
            ),
            (
                r#"{"idempotency":{"etcd":{"ttl":1}}}"#,
                "idempotency.etcd.ttl",
            ),
            (r#"{"idempotency":{"shared":5}}"#, "idempotency.shared"),
            (
                r#"{"idempotency":{"shared":{"max_records":0}}}"#,
                "idempotency.shared.max_records",
            ),
            (
                r#"{"idempotency":{"shared":{"max_bytes":1}}}"#,
                "idempotency.shared.max_bytes",
            ),
            (
                r#"{"idempotency":{"key_header":"x"}}"#,
                "idempotency.key_header",
            ),
        ];
        for (json, field) in cases {
            let e = parse(json.as_bytes()).unwrap_err();
            assert_eq!(&e.field, field, "{json} -> {e}");
            assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
        }
    }
}
