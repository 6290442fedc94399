//! Reads the input: a Kong declarative config (kong.yml, YAML or JSON) or a bare filter config
//! (JSON), and finds, per route, the kong-retry configuration Kong would run.
//!
//! Every filter config is parsed by the filter's own parser (`kong_retry::config`), so a config
//! the filter would reject is an error here too, and the numbers in the notice are the
//! filter's numbers.
//!
//! Kong's rules followed here (Kong/kong `kong/runloop/wasm.lua`, `filter_chains` entity):
//! a route runs the enabled filters of its service's enabled chain, then those of its own
//! enabled chain; `enabled` defaults to true for chains and filters. Kong 3.9 can also run a
//! filter as a plugin; for plugins the most specific enabled one wins (route, then service,
//! then global).

use kong_retry::config::{self, ConfigError, Mode, Plan};
use serde_json::{Map, Value};
use std::fmt;

/// The filter's name in Kong: the `.wasm` file name (`dist/kong_retry.wasm`).
pub const DEFAULT_FILTER_NAME: &str = "kong_retry";

/// What a notice is written from.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One filter configuration, not tied to routes.
    FilterConfig(Box<Plan>),
    /// A Kong declarative config: every route and what the filter does on it.
    Kong(Vec<Route>),
}

/// A route of a kong.yml and its retry coverage.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The route's name, else its id, else `#n` (1-based position).
    pub name: String,
    /// The service's name (or id) when known.
    pub service: Option<String>,
    pub paths: Vec<String>,
    pub hosts: Vec<String>,
    /// Methods the route matches (empty: all).
    pub methods: Vec<String>,
    pub coverage: Coverage,
}

/// Whether, and how, the gateway retries on a route.
#[derive(Debug, Clone, PartialEq)]
pub enum Coverage {
    Retries {
        plan: Box<Plan>,
        /// Where the config comes from, e.g. "filter chain `orders-retry`".
        origin: Origin,
        /// Further kong_retry instances on the same route (they would multiply attempts).
        extra_instances: usize,
    },
    None(NoRetry),
}

/// Where a route's filter config is declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    RouteChain(Option<String>),
    ServiceChain(Option<String>),
    RoutePlugin,
    ServicePlugin,
    GlobalPlugin,
}

/// Why a route gets no gateway retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRetry {
    /// A chain with the filter exists but is switched off.
    ChainDisabled(Option<String>),
    /// The chain is on but the filter inside it is switched off.
    FilterDisabled(Option<String>),
    /// The filter is configured as a plugin, but disabled.
    PluginDisabled,
    /// Nothing on the route or its service mentions the filter.
    NotConfigured,
}

/// Why no notice could be written.
#[derive(Debug)]
pub enum SourceError {
    /// The file is neither YAML nor JSON.
    Syntax(String),
    /// The declarative config's shape is not what Kong accepts.
    Shape(String),
    /// A filter config the filter itself would reject; `place` says where it is.
    Config { place: String, error: ConfigError },
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Syntax(m) => write!(f, "cannot read the file: {m}"),
            SourceError::Shape(m) => write!(f, "unexpected kong.yml structure: {m}"),
            SourceError::Config { place, error } => write!(f, "{place}: {error}"),
        }
    }
}

impl std::error::Error for SourceError {}

/// Reads `text`: a Kong declarative config (YAML or JSON, recognised by `_format_version`,
/// `services`, `routes`, `filter_chains` or `plugins` at the top) or a filter config (JSON).
pub fn load(text: &str, filter_name: &str) -> Result<Input, SourceError> {
    // A JSON filter config goes to the filter's parser byte for byte.
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        if !is_declarative(&v) {
            return config::parse(text.as_bytes())
                .map(|p| Input::FilterConfig(Box::new(p)))
                .map_err(|error| SourceError::Config {
                    place: "filter config".into(),
                    error,
                });
        }
        return kong_routes(&v, filter_name).map(Input::Kong);
    }
    let mut y: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| SourceError::Syntax(e.to_string()))?;
    y.apply_merge()
        .map_err(|e| SourceError::Syntax(e.to_string()))?;
    let v = serde_json::to_value(&y).map_err(|e| SourceError::Syntax(e.to_string()))?;
    if !is_declarative(&v) {
        // A filter config written in YAML: Kong would hand the filter the same JSON.
        return config::parse_value(&v)
            .map(|p| Input::FilterConfig(Box::new(p)))
            .map_err(|error| SourceError::Config {
                place: "filter config".into(),
                error,
            });
    }
    kong_routes(&v, filter_name).map(Input::Kong)
}

fn is_declarative(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        [
            "_format_version",
            "services",
            "routes",
            "filter_chains",
            "plugins",
        ]
        .iter()
        .any(|k| o.contains_key(*k))
    })
}

/// A filter chain or plugin mention of the filter, before its config is parsed.
#[derive(Debug, Clone)]
struct Mention {
    chain_name: Option<String>,
    chain_enabled: bool,
    filter_enabled: bool,
    config: Value,
}

#[derive(Debug, Default, Clone)]
struct Entity {
    name: Option<String>,
    id: Option<String>,
    chains: Vec<Mention>,
    /// Plugin instances of the filter: (enabled, config).
    plugins: Vec<(bool, Value)>,
}

impl Entity {
    fn matches(&self, reference: &str) -> bool {
        self.name.as_deref() == Some(reference) || self.id.as_deref() == Some(reference)
    }

    fn label(&self) -> Option<String> {
        self.name.clone().or_else(|| self.id.clone())
    }
}

#[derive(Debug, Clone)]
struct RawRoute {
    entity: Entity,
    service_ref: Option<String>,
    paths: Vec<String>,
    hosts: Vec<String>,
    methods: Vec<String>,
}

fn str_field(o: &Map<String, Value>, k: &str) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(str::to_string)
}

fn bool_field(o: &Map<String, Value>, k: &str) -> Result<bool, SourceError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(SourceError::Shape(format!(
            "`{k}` must be true or false, got {other}"
        ))),
    }
}

fn strings(o: &Map<String, Value>, k: &str) -> Vec<String> {
    o.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn array<'a>(o: &'a Map<String, Value>, k: &str) -> Result<&'a [Value], SourceError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(SourceError::Shape(format!("`{k}` must be a list"))),
    }
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, SourceError> {
    v.as_object()
        .ok_or_else(|| SourceError::Shape(format!("each entry of `{what}` must be a mapping")))
}

/// A foreign key: `service: orders`, `service: {name: orders}` or `service: {id: ...}`.
fn reference(o: &Map<String, Value>, k: &str) -> Option<String> {
    match o.get(k)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(r) => str_field(r, "name").or_else(|| str_field(r, "id")),
        _ => None,
    }
}

fn chain_mentions(
    chain: &Map<String, Value>,
    filter_name: &str,
) -> Result<Vec<Mention>, SourceError> {
    let chain_name = str_field(chain, "name");
    let chain_enabled = bool_field(chain, "enabled")?;
    let mut out = Vec::new();
    for f in array(chain, "filters")? {
        let f = object(f, "filters")?;
        if f.get("name").and_then(Value::as_str) == Some(filter_name) {
            out.push(Mention {
                chain_name: chain_name.clone(),
                chain_enabled,
                filter_enabled: bool_field(f, "enabled")?,
                config: f.get("config").cloned().unwrap_or(Value::Null),
            });
        }
    }
    Ok(out)
}

fn collect_entity(o: &Map<String, Value>, filter_name: &str) -> Result<Entity, SourceError> {
    let mut e = Entity {
        name: str_field(o, "name"),
        id: str_field(o, "id"),
        ..Entity::default()
    };
    for c in array(o, "filter_chains")? {
        e.chains
            .extend(chain_mentions(object(c, "filter_chains")?, filter_name)?);
    }
    for p in array(o, "plugins")? {
        if let Some(entry) = plugin_instance(object(p, "plugins")?, filter_name)? {
            e.plugins.push(entry);
        }
    }
    Ok(e)
}

/// A `plugins` entry that runs the filter: (enabled, config); `None` for other plugins.
fn plugin_instance(
    p: &Map<String, Value>,
    filter_name: &str,
) -> Result<Option<(bool, Value)>, SourceError> {
    if p.get("name").and_then(Value::as_str) != Some(filter_name) {
        return Ok(None);
    }
    Ok(Some((
        bool_field(p, "enabled")?,
        p.get("config").cloned().unwrap_or(Value::Null),
    )))
}

/// The route or service a top-level `filter_chains` or `plugins` entry (`what`) points at;
/// `None` when it names neither.
fn owner<'a>(
    o: &Map<String, Value>,
    what: &str,
    routes: &'a mut [RawRoute],
    services: &'a mut [Entity],
) -> Result<Option<&'a mut Entity>, SourceError> {
    if let Some(r) = reference(o, "route") {
        return routes
            .iter_mut()
            .map(|x| &mut x.entity)
            .find(|e| e.matches(&r))
            .map(Some)
            .ok_or_else(|| SourceError::Shape(format!("{what} refers to unknown route `{r}`")));
    }
    if let Some(s) = reference(o, "service") {
        return services
            .iter_mut()
            .find(|e| e.matches(&s))
            .map(Some)
            .ok_or_else(|| SourceError::Shape(format!("{what} refers to unknown service `{s}`")));
    }
    Ok(None)
}

fn raw_route(
    o: &Map<String, Value>,
    filter_name: &str,
    service_ref: Option<String>,
) -> Result<RawRoute, SourceError> {
    Ok(RawRoute {
        entity: collect_entity(o, filter_name)?,
        service_ref: service_ref.or_else(|| reference(o, "service")),
        paths: strings(o, "paths"),
        hosts: strings(o, "hosts"),
        methods: strings(o, "methods"),
    })
}

/// Every route of a declarative config with what kong-retry does on it.
pub fn kong_routes(doc: &Value, filter_name: &str) -> Result<Vec<Route>, SourceError> {
    let top = doc
        .as_object()
        .ok_or_else(|| SourceError::Shape("the top level must be a mapping".into()))?;
    let mut services: Vec<Entity> = Vec::new();
    let mut routes: Vec<RawRoute> = Vec::new();

    for s in array(top, "services")? {
        let so = object(s, "services")?;
        let svc = collect_entity(so, filter_name)?;
        let svc_ref = svc.label();
        for r in array(so, "routes")? {
            routes.push(raw_route(
                object(r, "routes")?,
                filter_name,
                svc_ref.clone(),
            )?);
        }
        services.push(svc);
    }
    for r in array(top, "routes")? {
        routes.push(raw_route(object(r, "routes")?, filter_name, None)?);
    }

    // Top-level chains and plugins point at their route or service.
    let mut global_plugins: Vec<(bool, Value)> = Vec::new();
    for c in array(top, "filter_chains")? {
        let co = object(c, "filter_chains")?;
        let mentions = chain_mentions(co, filter_name)?;
        match owner(co, "filter chain", &mut routes, &mut services)? {
            Some(e) => e.chains.extend(mentions),
            None if !mentions.is_empty() => {
                return Err(SourceError::Shape(
                    "a top-level filter chain needs a `route` or a `service`".into(),
                ))
            }
            None => {}
        }
    }
    for p in array(top, "plugins")? {
        let po = object(p, "plugins")?;
        let Some(entry) = plugin_instance(po, filter_name)? else {
            continue;
        };
        match owner(po, "plugin", &mut routes, &mut services)? {
            Some(e) => e.plugins.push(entry),
            None => global_plugins.push(entry),
        }
    }

    let mut out = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        let name = r.entity.label().unwrap_or_else(|| format!("#{}", i + 1));
        let service = r
            .service_ref
            .as_ref()
            .and_then(|s| services.iter().find(|x| x.matches(s)));
        let coverage = coverage(&name, r, service, &global_plugins)?;
        out.push(Route {
            name,
            service: r.service_ref.clone(),
            paths: r.paths.clone(),
            hosts: r.hosts.clone(),
            methods: r.methods.clone(),
            coverage,
        });
    }
    Ok(out)
}

fn parse_config(route: &str, origin: &Origin, v: &Value) -> Result<Plan, SourceError> {
    // Kong hands the filter a string config as is and JSON-encodes anything else.
    let parsed = match v {
        Value::String(s) => config::parse(s.as_bytes()),
        other => config::parse_value(other),
    };
    let place = || format!("route `{route}`, {}", origin_en(origin));
    let plan = parsed.map_err(|error| SourceError::Config {
        place: place(),
        error,
    })?;
    // The filter refuses response mode on Kong (`on_configure` fails): no notice for it.
    match plan.mode {
        Mode::Response => Err(SourceError::Config {
            place: place(),
            error: ConfigError {
                field: "mode".into(),
                value: "\"response\"".into(),
                allowed: "response mode is Envoy's; on Kong the filter refuses it, use \"auto\" or \"dispatch\"".into(),
            },
        }),
        Mode::Auto | Mode::Dispatch | Mode::Adaptive => Ok(plan),
    }
}

/// English description of an origin, for error messages and the notice.
pub fn origin_en(o: &Origin) -> String {
    match o {
        Origin::RouteChain(Some(n)) => format!("filter chain `{n}` on the route"),
        Origin::RouteChain(None) => "the route's filter chain".into(),
        Origin::ServiceChain(Some(n)) => format!("filter chain `{n}` on the service"),
        Origin::ServiceChain(None) => "the service's filter chain".into(),
        Origin::RoutePlugin => "the route's plugin".into(),
        Origin::ServicePlugin => "the service's plugin".into(),
        Origin::GlobalPlugin => "the global plugin".into(),
    }
}

fn coverage(
    name: &str,
    route: &RawRoute,
    service: Option<&Entity>,
    global_plugins: &[(bool, Value)],
) -> Result<Coverage, SourceError> {
    // Filter chains: the service's enabled chain runs first, then the route's.
    let mut running: Vec<(Origin, &Value)> = Vec::new();
    let mut off: Option<NoRetry> = None;
    let chains = service
        .map(|s| s.chains.iter().map(|m| (true, m)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(route.entity.chains.iter().map(|m| (false, m)));
    for (on_service, m) in chains {
        let origin = if on_service {
            Origin::ServiceChain(m.chain_name.clone())
        } else {
            Origin::RouteChain(m.chain_name.clone())
        };
        if m.chain_enabled && m.filter_enabled {
            running.push((origin, &m.config));
        } else if !m.chain_enabled {
            off = Some(NoRetry::ChainDisabled(m.chain_name.clone()));
        } else {
            off = Some(NoRetry::FilterDisabled(m.chain_name.clone()));
        }
    }

    // Plugin form (Kong 3.9): the most specific enabled instance runs.
    let plugin_levels: [(Origin, &[(bool, Value)]); 3] = [
        (Origin::RoutePlugin, &route.entity.plugins),
        (
            Origin::ServicePlugin,
            service.map(|s| s.plugins.as_slice()).unwrap_or(&[]),
        ),
        (Origin::GlobalPlugin, global_plugins),
    ];
    let mut plugin_off = false;
    for (origin, plugins) in plugin_levels {
        if let Some((_, cfg)) = plugins.iter().find(|(enabled, _)| *enabled) {
            running.push((origin, cfg));
            break;
        }
        plugin_off |= !plugins.is_empty();
    }

    let mut it = running.into_iter();
    match it.next() {
        Some((origin, cfg)) => {
            let plan = parse_config(name, &origin, cfg)?;
            // Validate the other instances too: Kong would run them.
            let mut extra = 0;
            for (o, c) in it {
                parse_config(name, &o, c)?;
                extra += 1;
            }
            Ok(Coverage::Retries {
                plan: Box::new(plan),
                origin,
                extra_instances: extra,
            })
        }
        None => Ok(Coverage::None(match off {
            Some(reason) => reason,
            None if plugin_off => NoRetry::PluginDisabled,
            None => NoRetry::NotConfigured,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(yaml: &str) -> Vec<Route> {
        match load(yaml, DEFAULT_FILTER_NAME).unwrap() {
            Input::Kong(r) => r,
            other => panic!("not a kong.yml: {other:?}"),
        }
    }

    fn plan_of(r: &Route) -> &Plan {
        match &r.coverage {
            Coverage::Retries { plan, .. } => plan,
            other => panic!("{}: no retries: {other:?}", r.name),
        }
    }

    #[test]
    fn json_filter_config_goes_through_the_filters_parser() {
        match load(r#"{"retries":4,"retry_on":"503"}"#, "kong_retry").unwrap() {
            Input::FilterConfig(p) => {
                assert_eq!(p.retries, 4);
                assert_eq!(p.retry_on.statuses, vec![503]);
            }
            other => panic!("{other:?}"),
        }
        let e = load(r#"{"retries":3,"retry_timeout":5000}"#, "kong_retry").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("retry_timeout") && msg.contains("per_try_timeout"),
            "{msg}"
        );
    }

    #[test]
    fn nested_routes_chains_and_toggles() {
        let r = routes(
            r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://svc:8080
    routes:
      - name: on
        paths: [/on]
        filter_chains:
          - name: c1
            filters:
              - name: kong_retry
                config: { retries: 5 }
      - name: chain-off
        paths: [/a]
        filter_chains:
          - name: c2
            enabled: false
            filters: [{ name: kong_retry }]
      - name: filter-off
        paths: [/b]
        filter_chains:
          - filters: [{ name: kong_retry, enabled: false }, { name: other }]
      - name: plain
        paths: [/c]
"#,
        );
        assert_eq!(r.len(), 4);
        assert_eq!(plan_of(&r[0]).retries, 5);
        assert_eq!(r[0].service.as_deref(), Some("svc"));
        assert_eq!(r[0].paths, vec!["/on"]);
        assert_eq!(
            r[1].coverage,
            Coverage::None(NoRetry::ChainDisabled(Some("c2".into())))
        );
        assert_eq!(r[2].coverage, Coverage::None(NoRetry::FilterDisabled(None)));
        assert_eq!(r[3].coverage, Coverage::None(NoRetry::NotConfigured));
    }

    #[test]
    fn service_chain_applies_to_its_routes_and_combines_with_route_chain() {
        let r = routes(
            r#"
_format_version: "3.0"
services:
  - name: svc
    filter_chains:
      - name: s
        filters: [{ name: kong_retry, config: { retries: 1 } }]
    routes:
      - name: a
      - name: b
        filter_chains:
          - name: r
            filters: [{ name: kong_retry, config: { retries: 3 } }]
"#,
        );
        assert_eq!(plan_of(&r[0]).retries, 1);
        match &r[1].coverage {
            Coverage::Retries {
                plan,
                origin,
                extra_instances,
            } => {
                // The service's chain runs first.
                assert_eq!(plan.retries, 1);
                assert_eq!(*origin, Origin::ServiceChain(Some("s".into())));
                assert_eq!(*extra_instances, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn top_level_entities_and_string_config() {
        let r = routes(
            r#"
_format_version: "3.0"
services:
  - name: svc
    id: 7d3c
routes:
  - name: top
    service: { id: 7d3c }
    paths: [/top]
filter_chains:
  - route: top
    filters:
      - name: kong_retry
        config: '{"retries":2,"retry_on":"502"}'
"#,
        );
        assert_eq!(r[0].service.as_deref(), Some("7d3c"));
        assert_eq!(plan_of(&r[0]).retry_on.statuses, vec![502]);
    }

    #[test]
    fn plugin_form_most_specific_enabled_wins() {
        let r = routes(
            r#"
_format_version: "3.0"
plugins:
  - name: kong_retry
    config: { retries: 1 }
services:
  - name: svc
    plugins:
      - name: kong_retry
        config: { retries: 2 }
    routes:
      - name: own
        plugins: [{ name: kong_retry, config: { retries: 3 } }]
      - name: inherits
      - name: own-off
        plugins: [{ name: kong_retry, enabled: false, config: { retries: 9 } }]
"#,
        );
        assert_eq!(plan_of(&r[0]).retries, 3);
        assert_eq!(plan_of(&r[1]).retries, 2);
        assert_eq!(plan_of(&r[2]).retries, 2);
        let r = routes(
            "_format_version: '3.0'\nroutes:\n  - name: x\n    plugins: [{name: kong_retry, enabled: false}]\n",
        );
        assert_eq!(r[0].coverage, Coverage::None(NoRetry::PluginDisabled));
    }

    #[test]
    fn invalid_filter_config_is_an_error_naming_the_route() {
        let e = load(
            "_format_version: '3.0'\nroutes:\n  - name: bad\n    filter_chains:\n      - filters: [{name: kong_retry, config: {retries: 99}}]\n",
            "kong_retry",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("route `bad`") && msg.contains("`retries`"),
            "{msg}"
        );
    }

    #[test]
    fn a_disabled_chain_is_validated_by_kong_not_by_us() {
        // The notice describes what runs; the config of a switched-off chain is not parsed.
        let r = routes(
            "_format_version: '3.0'\nroutes:\n  - name: off\n    filter_chains:\n      - enabled: false\n        filters: [{name: kong_retry, config: {retries: 99}}]\n",
        );
        assert_eq!(r[0].coverage, Coverage::None(NoRetry::ChainDisabled(None)));
    }

    #[test]
    fn response_mode_in_a_kong_yml_is_an_error() {
        let e = load(
            "_format_version: '3.0'\nroutes:\n  - name: r\n    filter_chains:\n      - filters: [{name: kong_retry, config: {mode: response}}]\n",
            "kong_retry",
        )
        .unwrap_err();
        assert!(e.to_string().contains("`mode`"), "{e}");
        // A bare filter config may be Envoy's.
        assert!(load(r#"{"mode":"response"}"#, "kong_retry").is_ok());
    }

    #[test]
    fn unknown_reference_and_bad_shapes() {
        assert!(load(
            "_format_version: '3.0'\nfilter_chains:\n  - route: nope\n    filters: []\n",
            "kong_retry"
        )
        .is_err());
        assert!(load("_format_version: '3.0'\nservices: 5\n", "kong_retry").is_err());
        assert!(load(": : :\n  - [", "kong_retry").is_err());
    }
}
