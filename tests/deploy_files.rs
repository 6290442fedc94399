//! The deployment files in `kong/` and `envoy/` parse, say what the filter needs, and
//! agree with each other; every filter config embedded in them is accepted by both the Kong
//! schema (`kong/kong_retry.meta.json`) and the filter's own parser.

// Test code: a failed check panics, with a message saying what and where.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod packaging_support;

use kong_retry::config::{self, Plan};
use packaging_support::{assert_agree, read, root, validator};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The filter's name in Kong: the `.wasm` file name that `wasm-build.sh` writes to `dist/`.
const FILTER: &str = "kong_retry";

fn yaml(rel: &str) -> Value {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

fn items<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn name(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("(unnamed)")
}

/// Kong's `enabled` flags default to true.
fn enabled(v: &Value) -> bool {
    v.get("enabled").and_then(Value::as_bool).unwrap_or(true)
}

/// Checks a filter config with the schema and the parser; both must accept it.
fn accepted(label: &str, cfg: &Value) -> Plan {
    assert!(
        assert_agree(&validator(), label, cfg),
        "{label}: rejected by both: {cfg}"
    );
    config::parse(cfg.to_string().as_bytes()).expect("accepted")
}

// ---------------------------------------------------------------------------------------
// Every file parses
// ---------------------------------------------------------------------------------------

#[test]
fn every_file_in_kong_and_envoy_parses() {
    let mut seen = 0;
    for dir in ["kong", "envoy"] {
        let mut names: Vec<String> = std::fs::read_dir(root().join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        for file in names {
            let rel = format!("{dir}/{file}");
            match file.rsplit_once('.').map(|(_, ext)| ext) {
                Some("yml" | "yaml") => {
                    yaml(&rel);
                }
                Some("json") => {
                    serde_json::from_str::<Value>(&read(&rel))
                        .unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"));
                }
                Some("conf") if file == "kong.conf" => {
                    kong_conf();
                }
                Some("conf") => {
                    nginx_blocks(&rel);
                }
                Some("md") => {}
                _ => panic!("{rel}: no check for this kind of file; add one here"),
            }
            seen += 1;
        }
    }
    assert!(seen >= 7, "only {seen} files in kong/ and envoy/");
}

// ---------------------------------------------------------------------------------------
// kong.yml, the 3.4 form and the 3.9 plugin form
// ---------------------------------------------------------------------------------------

/// `(route or service name, chain enabled, filter enabled, config)` for every kong_retry
/// filter in a declarative config's filter chains.
fn chain_filters(doc: &Value) -> Vec<(String, bool, bool, Value)> {
    let mut out = Vec::new();
    let mut chains_of = |owner: &str, v: &Value| {
        for chain in items(v, "filter_chains") {
            for f in items(chain, "filters") {
                assert_eq!(name(f), FILTER, "{owner}: unknown filter");
                let cfg = f.get("config").cloned().unwrap_or(Value::Null);
                out.push((owner.to_string(), enabled(chain), enabled(f), cfg));
            }
        }
    };
    chains_of("(top level)", doc);
    for s in items(doc, "services") {
        chains_of(name(s), s);
        for r in items(s, "routes") {
            chains_of(name(r), r);
        }
    }
    out
}

/// `(owner, enabled, config)` for every kong_retry plugin (Kong 3.9 form).
fn plugin_filters(doc: &Value) -> Vec<(String, bool, Value)> {
    let mut out = Vec::new();
    let mut plugins_of = |owner: &str, v: &Value| {
        for p in items(v, "plugins") {
            if name(p) == FILTER {
                let cfg = p.get("config").cloned().unwrap_or(Value::Null);
                out.push((owner.to_string(), enabled(p), cfg));
            }
        }
    };
    plugins_of("(top level)", doc);
    for s in items(doc, "services") {
        plugins_of(name(s), s);
        for r in items(s, "routes") {
            plugins_of(name(r), r);
        }
    }
    out
}

fn route_names(doc: &Value) -> BTreeSet<String> {
    items(doc, "services")
        .into_iter()
        .flat_map(|s| items(s, "routes"))
        .map(|r| name(r).to_string())
        .collect()
}

#[test]
fn kong_yml_has_one_service_with_a_route_on_and_a_route_off() {
    let doc = yaml("kong/kong.yml");
    assert_eq!(doc["_format_version"], "3.0");
    let services = items(&doc, "services");
    assert_eq!(services.len(), 1, "one service");
    assert_eq!(items(services[0], "routes").len(), 2, "two routes");

    let filters = chain_filters(&doc);
    let on: Vec<_> = filters.iter().filter(|f| f.1 && f.2).collect();
    let off: Vec<_> = filters.iter().filter(|f| !f.1).collect();
    assert_eq!(on.len(), 1, "one route runs the filter: {filters:?}");
    assert_eq!(off.len(), 1, "one route declares it disabled: {filters:?}");
    assert_ne!(on[0].0, off[0].0, "the two chains are on different routes");
    for (owner, _, _, cfg) in &filters {
        let plan = accepted(&format!("kong.yml {owner}"), cfg);
        // Kong cannot run response mode.
        assert_ne!(plan.mode, config::Mode::Response, "kong.yml {owner}");
    }
}

#[test]
fn kong_39_plugin_form_matches_the_filter_chain() {
    let chains = yaml("kong/kong.yml");
    let plugins = yaml("kong/kong-3.9-plugin.yml");
    assert_eq!(plugins["_format_version"], "3.0");
    assert_eq!(route_names(&plugins), route_names(&chains));
    let as_plugins = plugin_filters(&plugins);
    assert!(!as_plugins.is_empty(), "no kong_retry plugin");
    for (owner, on, cfg) in &as_plugins {
        accepted(&format!("kong-3.9-plugin.yml {owner}"), cfg);
        if *on {
            let chain = chain_filters(&chains)
                .into_iter()
                .find(|c| &c.0 == owner && c.1 && c.2)
                .unwrap_or_else(|| panic!("{owner}: enabled as a plugin, not as a chain"));
            assert_eq!(
                cfg, &chain.3,
                "{owner}: the plugin form and the filter chain configure the filter differently"
            );
        }
    }
}

/// kong-3.4.yml with every filter's `config` string replaced by the JSON it holds; panics
/// on a config that is not a string of JSON (Kong 3.4 takes nothing else).
fn kong_34_with_json_configs() -> Value {
    let mut doc = yaml("kong/kong-3.4.yml");
    let mut seen = 0;
    let mut decode = |owner: &str, v: &mut Value| {
        let Some(chains) = v.get_mut("filter_chains").and_then(Value::as_array_mut) else {
            return;
        };
        for chain in chains {
            let Some(filters) = chain.get_mut("filters").and_then(Value::as_array_mut) else {
                continue;
            };
            for f in filters {
                let Some(cfg) = f.get_mut("config") else {
                    continue;
                };
                let text = cfg.as_str().unwrap_or_else(|| {
                    panic!("kong-3.4.yml {owner}: Kong 3.4 takes `config` only as a string: {cfg}")
                });
                *cfg = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("kong-3.4.yml {owner}: `config` is not JSON: {e}"));
                seen += 1;
            }
        }
    };
    decode("(top level)", &mut doc);
    if let Some(services) = doc.get_mut("services").and_then(Value::as_array_mut) {
        for s in services {
            let owner = name(s).to_string();
            decode(&owner, s);
            if let Some(routes) = s.get_mut("routes").and_then(Value::as_array_mut) {
                for r in routes {
                    let owner = name(r).to_string();
                    decode(&owner, r);
                }
            }
        }
    }
    assert!(seen > 0, "kong-3.4.yml configures no filter");
    doc
}

#[test]
fn kong_34_form_is_kong_yml_with_configs_as_json_strings() {
    let decoded = kong_34_with_json_configs();
    assert_eq!(
        decoded,
        yaml("kong/kong.yml"),
        "kong-3.4.yml must be kong.yml with each `config` written as a JSON string"
    );
    // kong.yml writes config as YAML objects (3.5+, with the meta file); 3.4 cannot read them.
    for (owner, _, _, cfg) in chain_filters(&yaml("kong/kong.yml")) {
        assert!(cfg.is_object(), "kong.yml {owner}: config is not an object");
    }
}

/// Every kong_retry config in the Kong files, parsed.
fn kong_plans() -> Vec<(String, Plan)> {
    let mut out = Vec::new();
    for (owner, _, _, cfg) in chain_filters(&yaml("kong/kong.yml")) {
        out.push((format!("kong.yml {owner}"), accepted(&owner, &cfg)));
    }
    for (owner, _, _, cfg) in chain_filters(&kong_34_with_json_configs()) {
        out.push((format!("kong-3.4.yml {owner}"), accepted(&owner, &cfg)));
    }
    for (owner, _, cfg) in plugin_filters(&yaml("kong/kong-3.9-plugin.yml")) {
        out.push((
            format!("kong-3.9-plugin.yml {owner}"),
            accepted(&owner, &cfg),
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// The shipped retry schedule
// ---------------------------------------------------------------------------------------

/// The longest gap of fast failures (refused connections, 502/503) the shipped configs
/// promise to hide (issues 11 and 13: every instance down for 2 s).
const GAP_MS: u64 = 2_000;

/// The filter config of envoy/envoy.yaml.
fn envoy_plan() -> Plan {
    let doc = yaml("envoy/envoy.yaml");
    for listener in items(&doc["static_resources"], "listeners") {
        for chain in items(listener, "filter_chains") {
            for nf in items(chain, "filters") {
                for hf in items(&nf["typed_config"], "http_filters") {
                    if name(hf) == FILTER {
                        let text = hf["typed_config"]["config"]["configuration"]["value"]
                            .as_str()
                            .unwrap_or_default();
                        let json: Value = serde_json::from_str(text).expect("JSON");
                        return accepted("envoy.yaml", &json);
                    }
                }
            }
        }
    }
    panic!("envoy.yaml has no {FILTER} filter")
}

/// Every enabled route's schedule outlasts [`GAP_MS`] of fast failures whatever the jitter
/// draws (the sum of the shortest waits), and with the longest waits every retry still
/// passes the filter's deadline check (`time_for_attempt`: elapsed + wait + per_try_timeout
/// <= deadline, attempts failing fast). See docs/operator-guide.md, "Sizing the retry
/// schedule".
#[test]
fn shipped_schedules_outlast_a_two_second_gap_within_the_deadline() {
    use kong_retry::retry::backoff::{ceiling_ms, floor_ms};
    let mut plans = vec![("envoy.yaml".to_string(), envoy_plan())];
    for (owner, chain_on, filter_on, cfg) in chain_filters(&yaml("kong/kong.yml")) {
        if chain_on && filter_on {
            plans.push((format!("kong.yml {owner}"), accepted(&owner, &cfg)));
        }
    }
    for (owner, on, cfg) in plugin_filters(&yaml("kong/kong-3.9-plugin.yml")) {
        if on {
            plans.push((
                format!("kong-3.9-plugin.yml {owner}"),
                accepted(&owner, &cfg),
            ));
        }
    }
    assert!(plans.len() >= 3, "{plans:?}");
    for (label, plan) in &plans {
        let floors: u64 = (1..=plan.retries).map(|n| floor_ms(&plan.backoff, n)).sum();
        let ceilings: u64 = (1..=plan.retries)
            .map(|n| ceiling_ms(&plan.backoff, n))
            .sum();
        assert!(
            floors >= GAP_MS,
            "{label}: the shortest waits add up to {floors} ms, less than the {GAP_MS} ms gap"
        );
        assert!(
            ceilings + plan.per_try_timeout_ms <= plan.deadline_ms,
            "{label}: the longest waits ({ceilings} ms) and one attempt ({} ms) exceed the \
             deadline ({} ms): the last retries would not start",
            plan.per_try_timeout_ms,
            plan.deadline_ms
        );
    }
}

// ---------------------------------------------------------------------------------------
// kong.conf
// ---------------------------------------------------------------------------------------

/// kong.conf properties these files may set (exact names), and prefixes of Kong's
/// injected nginx directives.
const KONG_CONF_KEYS: &[&str] = &[
    "wasm",
    "wasm_filters_path",
    "wasm_filters",
    "client_body_buffer_size",
    "database",
    "declarative_config",
    "log_level",
    "nginx_http_include",
    "nginx_http_wasm_socket_connect_timeout",
    "nginx_http_wasm_socket_send_timeout",
    "nginx_http_wasm_socket_read_timeout",
];
const KONG_CONF_PREFIXES: &[&str] = &["nginx_wasm_shm_kv_", "nginx_wasm_shm_"];

/// kong.conf as `key = value` lines (comments and blank lines skipped).
fn kong_conf() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (n, line) in read("kong/kong.conf").lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("kong.conf:{}: not `key = value`: {line}", n + 1));
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        assert!(
            KONG_CONF_KEYS.contains(&k.as_str())
                || KONG_CONF_PREFIXES.iter().any(|p| k.starts_with(p)),
            "kong.conf:{}: unknown key `{k}` (add it to KONG_CONF_KEYS if it is real)",
            n + 1
        );
        assert!(!v.is_empty(), "kong.conf:{}: `{k}` has no value", n + 1);
        assert!(
            out.insert(k.clone(), v).is_none(),
            "kong.conf: `{k}` set twice"
        );
    }
    out
}

/// An nginx size (`64k`, `4m`, `1048576`) in bytes.
fn nginx_size(s: &str) -> u64 {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("bad size {s}"));
    n * match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1024,
        "m" => 1024 * 1024,
        "g" => 1024 * 1024 * 1024,
        _ => panic!("bad size unit in {s}"),
    }
}

/// An nginx time (`500ms`, `2s`, `1m`) in ms.
fn nginx_ms(s: &str) -> u64 {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("bad time {s}"));
    n * match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => panic!("bad time unit in {s}"),
    }
}

#[test]
fn kong_conf_has_what_the_filter_needs() {
    let conf = kong_conf();
    let get = |k: &str| {
        conf.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("kong.conf lacks `{k}`"))
    };
    assert_eq!(get("wasm"), "on");
    assert!(
        get("wasm_filters_path").ends_with("/dist"),
        "mount dist/ there"
    );

    // The shm_kv zone: on Kong the first segment of a shared-data key names the zone, and
    // the filter's keys (budget, protection) start with `kong_retry/`.
    let zones: BTreeSet<&str> = [
        kong_retry::state::budget::KEY_PREFIX,
        kong_retry::state::protection::KEY_PREFIX,
    ]
    .iter()
    .filter_map(|k| k.split('/').next())
    .collect();
    for zone_name in zones {
        let zone = nginx_size(get(&format!("nginx_wasm_shm_kv_{zone_name}")));
        assert!(
            zone >= 1024 * 1024,
            "the {zone_name} shm_kv zone is {zone} bytes"
        );
    }

    // A body the filter would copy must fit the buffer, or Kong spills it to a file the
    // filter cannot read.
    let buffer = nginx_size(get("client_body_buffer_size"));
    for (label, plan) in kong_plans() {
        assert!(
            plan.max_body_bytes as u64 <= buffer,
            "{label}: max_body_bytes {} > client_body_buffer_size {buffer}",
            plan.max_body_bytes
        );
    }
    for t in ["connect", "send", "read"] {
        let ms = nginx_ms(get(&format!("nginx_http_wasm_socket_{t}_timeout")));
        assert!(ms > 0, "{t} timeout");
    }

    // The included delay server and the declarative config are the files in kong/.
    let include = get("nginx_http_include");
    assert!(include.ends_with("/kong/delay-server.conf"), "{include}");
    assert_eq!(get("database"), "off");
    let declarative = get("declarative_config");
    assert!(declarative.ends_with("/kong/kong.yml"), "{declarative}");
    let base = |p: &str, suffix: &str| p.strip_suffix(suffix).unwrap_or(p).to_string();
    assert_eq!(
        base(include, "/kong/delay-server.conf"),
        base(get("wasm_filters_path"), "/dist"),
        "kong/ and dist/ are mounted side by side"
    );
}

// ---------------------------------------------------------------------------------------
// The delay server
// ---------------------------------------------------------------------------------------

/// The nginx file with comments removed; panics on unbalanced braces or quotes.
fn nginx_blocks(rel: &str) -> String {
    let text = read(rel);
    let mut code = String::new();
    let mut depth: i32 = 0;
    for (n, line) in text.lines().enumerate() {
        // `#` starts an nginx comment; the Lua inside *_by_lua_block uses `--`.
        let line = line.split('#').next().unwrap_or_default();
        let line = line.split("--").next().unwrap_or_default();
        assert_eq!(line.matches('"').count() % 2, 0, "{rel}:{}: quote", n + 1);
        for c in line.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0, "{rel}:{}: unbalanced '}}'", n + 1);
        }
        code.push_str(line);
        code.push('\n');
    }
    assert_eq!(depth, 0, "{rel}: unbalanced braces");
    code
}

#[test]
fn delay_server_answers_the_delay_endpoint_the_configs_name() {
    let code = nginx_blocks("kong/delay-server.conf");
    let listens: BTreeSet<String> = code
        .lines()
        .filter_map(|l| l.trim().strip_prefix("listen "))
        .map(|l| l.trim_end_matches(';').trim().to_string())
        .collect();
    assert!(!listens.is_empty(), "delay-server.conf has no listen");
    for l in &listens {
        assert!(
            l.starts_with("127.") || l.starts_with("[::1]"),
            "the delay server must listen on loopback only: {l}"
        );
    }
    for (label, plan) in kong_plans() {
        let endpoint = plan.delay_endpoint.unwrap_or_else(|| {
            panic!("{label}: no delay_endpoint: retries on Kong would not wait")
        });
        assert!(
            listens.contains(&endpoint),
            "{label}: delay_endpoint {endpoint} is not a listener of delay-server.conf {listens:?}"
        );
    }

    // The path and argument the filter sends (src/adapter/driver/mod.rs) are served here.
    let driver = read("src/adapter/driver/mod.rs");
    assert!(
        driver.contains("\"/kong-retry/delay\""),
        "driver's delay path moved"
    );
    assert!(driver.contains("?ms={ms}"), "driver's delay argument moved");
    assert!(code.contains("location = /kong-retry/delay"));
    assert!(code.contains("ngx.var.arg_ms"));

    // No cap below the longest wait the filter can ask for (bounded by the deadline).
    let cap = code
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("if ms > ")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .expect("the delay server caps ms");
    assert!(
        cap >= config::MAX_DURATION_MS,
        "delay-server.conf caps waits at {cap} ms, the filter may wait up to {} ms",
        config::MAX_DURATION_MS
    );
}

// ---------------------------------------------------------------------------------------
// envoy.yaml
// ---------------------------------------------------------------------------------------

#[test]
fn envoy_yaml_loads_the_filter_and_defines_its_cluster() {
    let doc = yaml("envoy/envoy.yaml");
    let resources = &doc["static_resources"];
    let clusters: BTreeSet<String> = items(resources, "clusters")
        .into_iter()
        .map(|c| name(c).to_string())
        .collect();

    let mut wasm_filters = 0;
    let mut routes_on = 0;
    let mut routes_off = 0;
    for listener in items(resources, "listeners") {
        for chain in items(listener, "filter_chains") {
            for nf in items(chain, "filters") {
                let hcm = &nf["typed_config"];
                let mut names = Vec::new();
                let mut deadline = 0;
                for hf in items(hcm, "http_filters") {
                    names.push(name(hf).to_string());
                    let tc = &hf["typed_config"];
                    if tc["@type"]
                        != "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
                    {
                        continue;
                    }
                    wasm_filters += 1;
                    assert_eq!(name(hf), FILTER, "the per-route toggle uses this name");
                    let c = &tc["config"];
                    let runtime = c["vm_config"]["runtime"].as_str().unwrap_or_default();
                    assert!(
                        ["envoy.wasm.runtime.v8", "envoy.wasm.runtime.wasmtime"].contains(&runtime),
                        "runtime {runtime}"
                    );
                    let file = c["vm_config"]["code"]["local"]["filename"]
                        .as_str()
                        .unwrap_or_default();
                    assert!(file.ends_with("/kong_retry.wasm"), "{file}");
                    let conf = &c["configuration"];
                    assert_eq!(
                        conf["@type"],
                        "type.googleapis.com/google.protobuf.StringValue"
                    );
                    let json: Value = serde_json::from_str(conf["value"].as_str().unwrap_or(""))
                        .unwrap_or_else(|e| panic!("envoy.yaml configuration is not JSON: {e}"));
                    let plan = accepted("envoy.yaml", &json);
                    let upstream = plan.upstream.expect("envoy.yaml names the retry cluster");
                    assert!(
                        clusters.contains(&upstream.target),
                        "upstream {} is not a cluster {clusters:?}",
                        upstream.target
                    );
                    deadline = plan.deadline_ms;
                }
                assert_eq!(
                    names.last().map(String::as_str),
                    Some("envoy.filters.http.router"),
                    "the router comes last"
                );
                for vh in items(&hcm["route_config"], "virtual_hosts") {
                    for r in items(vh, "routes") {
                        let route = &r["route"];
                        let cluster = route["cluster"].as_str().unwrap_or_default();
                        assert!(clusters.contains(cluster), "route to unknown {cluster}");
                        assert!(
                            route.get("retry_policy").is_none(),
                            "Envoy's own retries would multiply the filter's"
                        );
                        if r["typed_per_filter_config"][FILTER]["disabled"] == true {
                            routes_off += 1;
                            continue;
                        }
                        routes_on += 1;
                        let timeout = route["timeout"].as_str().unwrap_or("15s");
                        assert!(
                            nginx_ms(timeout) >= deadline,
                            "route timeout {timeout} is shorter than the filter's deadline"
                        );
                    }
                }
            }
        }
    }
    assert_eq!(wasm_filters, 1, "envoy.yaml loads the filter once");
    assert!(
        routes_on >= 1 && routes_off >= 1,
        "a route on and a route off"
    );
}

// ---------------------------------------------------------------------------------------
// dist/
// ---------------------------------------------------------------------------------------

#[test]
fn wasm_build_puts_the_meta_file_next_to_the_module() {
    let script = read("wasm-build.sh");
    assert!(script.contains("dist/kong_retry.wasm"));
    assert!(
        script.contains("cp kong/kong_retry.meta.json dist/kong_retry.meta.json"),
        "wasm-build.sh must copy the meta file into dist/, so that dist/ can be \
         wasm_filters_path as is"
    );
}
