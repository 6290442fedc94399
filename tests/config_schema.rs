//! The Kong config schema (`kong/kong_retry.meta.json`) and the filter's parser
//! (`kong_retry::config::parse`) must never drift apart: Kong validates a filter's JSON config
//! with the schema, the filter parses it with its own code, and a config one accepts and the
//! other rejects fails at the worst moment.
//!
//! How drift is caught:
//! * fixtures `tests/config/{valid,invalid}/*.json` get the same verdict from both, and an
//!   invalid fixture named `<field>__<what>.json` is rejected by the parser *naming that field*;
//! * the fields the parser knows (read from its own "unknown field" error) are exactly the
//!   schema's properties, at the top level and inside every object;
//! * every schema property is probed from the schema itself: defaults and samples accepted,
//!   integer bounds, enum members (compared with the parser's own "one of" list), wrong types;
//! * the string grammars (upstream, delay_endpoint, header names, retry_on, methods) are
//!   compared on every combination of a few tricky tokens;
//! * what JSON Schema cannot say is listed in [`EXCEPTIONS`] with the reason, and asserted, so
//!   the list stays true.
//!
//! The operator guide's configuration reference is generated from the schema here:
//! `UPDATE_DOCS=1 cargo test --test config_schema` rewrites it.

// Test code: a failed check panics, with a message saying what and where.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod packaging_support;

use kong_retry::config::{self, Plan};
use packaging_support::{assert_agree, fixtures, read, root, schema, validator, verdicts};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

const DRAFT_4: &str = "http://json-schema.org/draft-04/schema#";

// ---------------------------------------------------------------------------------------
// The meta file itself
// ---------------------------------------------------------------------------------------

/// Keywords of JSON Schema draft 4 (the dialect Kong validates with, lua-resty-ljsonschema).
/// Anything newer (`const`, `examples`, `if`/`then`, numeric `exclusiveMinimum`, `$id`, ...)
/// would be ignored or misread by Kong.
const DRAFT_4_KEYWORDS: &[&str] = &[
    "$schema",
    "id",
    "$ref",
    "title",
    "description",
    "default",
    "type",
    "enum",
    "properties",
    "patternProperties",
    "additionalProperties",
    "required",
    "dependencies",
    "minProperties",
    "maxProperties",
    "items",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "definitions",
];

/// Walks every subschema, calling `f(location, subschema)`.
fn walk_schemas(at: &str, s: &Value, f: &mut dyn FnMut(&str, &Map<String, Value>)) {
    let Some(obj) = s.as_object() else { return };
    f(at, obj);
    for (k, v) in obj {
        match k.as_str() {
            "properties" | "patternProperties" | "definitions" => {
                for (name, sub) in v.as_object().into_iter().flatten() {
                    walk_schemas(&format!("{at}/{k}/{name}"), sub, f);
                }
            }
            "allOf" | "anyOf" | "oneOf" => {
                for (i, sub) in v.as_array().into_iter().flatten().enumerate() {
                    walk_schemas(&format!("{at}/{k}/{i}"), sub, f);
                }
            }
            "not" | "items" | "additionalProperties" | "additionalItems" => {
                walk_schemas(&format!("{at}/{k}"), v, f)
            }
            _ => {}
        }
    }
}

#[test]
fn meta_file_is_what_kong_loads() {
    let meta = packaging_support::meta();
    let keys: Vec<&String> = meta
        .as_object()
        .expect("meta is an object")
        .keys()
        .collect();
    assert_eq!(keys, ["config_schema"], "Kong reads only config_schema");
    let s = schema();
    assert_eq!(s["$schema"], DRAFT_4, "Kong validates with draft 4");
    if let Err(e) = jsonschema::draft4::meta::validate(&s) {
        panic!("config_schema is not a valid draft 4 schema: {e}");
    }
    assert_eq!(s["type"], "object");

    let mut problems = Vec::new();
    walk_schemas("#", &s, &mut |at, obj| {
        for (k, v) in obj {
            if !DRAFT_4_KEYWORDS.contains(&k.as_str()) {
                problems.push(format!("{at}: `{k}` is not a draft 4 keyword"));
            }
            if matches!(k.as_str(), "exclusiveMinimum" | "exclusiveMaximum") && !v.is_boolean() {
                problems.push(format!("{at}: draft 4 `{k}` is a boolean"));
            }
            if k == "pattern" {
                let p = v.as_str().unwrap_or_default();
                // Kong matches patterns with PCRE in byte mode: a non-ASCII character in a
                // class would be split into bytes. Keep patterns ASCII.
                if !p.is_ascii() {
                    problems.push(format!("{at}: pattern is not ASCII"));
                }
            }
        }
        // The parser denies unknown fields in every object it reads.
        let declares_object = obj.get("type") == Some(&json!("object"));
        if declares_object
            && obj.contains_key("properties")
            && obj.get("additionalProperties") != Some(&json!(false))
        {
            problems.push(format!("{at}: object without additionalProperties: false"));
        }
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// The parser's field name a fixture file name stands for: `retries__above_max.json` ->
/// `retries`, `backoff.interval__missing.json` -> `backoff.interval`, `root__...` -> `(config)`.
fn field_of(file: &str) -> String {
    let prefix = file.split("__").next().unwrap_or_default();
    if prefix == "root" {
        "(config)".to_string()
    } else {
        prefix.to_string()
    }
}

#[test]
fn valid_fixtures_are_accepted_by_schema_and_parser() {
    let v = validator();
    let all = fixtures("tests/config/valid");
    assert!(all.len() >= 12, "only {} valid fixtures", all.len());
    for (name, config) in &all {
        let verdict = verdicts(&v, config);
        assert!(
            verdict.schema.is_ok() && verdict.parser.is_ok(),
            "tests/config/valid/{name}: {}",
            verdict.describe()
        );
    }
}

#[test]
fn invalid_fixtures_are_rejected_by_schema_and_parser_naming_the_field() {
    let v = validator();
    let all = fixtures("tests/config/invalid");
    assert!(all.len() >= 12, "only {} invalid fixtures", all.len());
    for (name, config) in &all {
        assert!(
            name.contains("__"),
            "tests/config/invalid/{name}: name it <field>__<what>.json"
        );
        let verdict = verdicts(&v, config);
        assert!(
            verdict.schema.is_err() && verdict.parser.is_err(),
            "tests/config/invalid/{name}: {}",
            verdict.describe()
        );
        let field = field_of(name);
        if let Err(e) = &verdict.parser {
            assert!(
                e.field == field || e.field.starts_with(&format!("{field}[")),
                "tests/config/invalid/{name}: the parser names `{}`, the file name says `{field}`",
                e.field
            );
        }
    }
}

/// Every field and sub-field of the schema, as `(path, subschema)`, in schema order.
fn fields(s: &Value) -> Vec<(String, Value)> {
    fn go(prefix: &str, s: &Value, out: &mut Vec<(String, Value)>) {
        let Some(props) = s.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, sub) in props {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            out.push((path.clone(), sub.clone()));
            go(&path, sub, out);
        }
    }
    let mut out = Vec::new();
    go("", s, &mut out);
    out
}

/// Paths of all keys present in a config, e.g. `budget` and `budget.percent`.
fn paths_in(prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
    if let Some(obj) = v.as_object() {
        for (k, sub) in obj {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.insert(path.clone());
            paths_in(&path, sub, out);
        }
    }
}

#[test]
fn every_field_has_a_valid_and_an_invalid_fixture() {
    let mut in_valid = BTreeSet::new();
    for (_, config) in fixtures("tests/config/valid") {
        paths_in("", &config, &mut in_valid);
    }
    let invalid: Vec<String> = fixtures("tests/config/invalid")
        .iter()
        .map(|(name, _)| field_of(name))
        .collect();
    let mut missing = Vec::new();
    for (path, _) in fields(&schema()) {
        if !in_valid.contains(&path) {
            missing.push(format!("no valid fixture sets `{path}`"));
        }
        let named = |f: &String| f == &path || f.starts_with(&format!("{path}["));
        if !invalid.iter().any(named) {
            missing.push(format!("no tests/config/invalid/{path}__*.json"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Same fields, same values: probes derived from the schema
// ---------------------------------------------------------------------------------------

/// The field list in the parser's "unknown field" error for the object at `path`.
fn parser_known_fields(path: &str) -> BTreeSet<String> {
    let probe = if path.is_empty() {
        json!({"zzz_not_a_field": 1})
    } else {
        with_field(path, json!({"zzz_not_a_field": 1}))
    };
    let e =
        config::parse(probe.to_string().as_bytes()).expect_err("an unknown field must be rejected");
    let list = e
        .allowed
        .split("known fields: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no field list in the parser's error: {e}"));
    list.split(',').map(|f| f.trim().to_string()).collect()
}

fn schema_fields_of(s: &Value) -> BTreeSet<String> {
    s.get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn schema_and_parser_know_the_same_fields() {
    let s = schema();
    let v = validator();
    assert_eq!(
        schema_fields_of(&s),
        parser_known_fields(""),
        "top-level fields: schema (left) vs parser (right); add the new field to \
         kong/kong_retry.meta.json (with a description and default) and to the fixtures"
    );
    for (path, sub) in fields(&s) {
        if sub["type"] != "object" {
            continue;
        }
        assert_eq!(
            schema_fields_of(&sub),
            parser_known_fields(&path),
            "fields of `{path}`: schema (left) vs parser (right)"
        );
        let unknown = with_field(&path, json!({"zzz_not_a_field": 1}));
        assert!(!assert_agree(&v, "unknown nested field", &unknown));
    }
    // Unknown top-level fields, including names pasted from other products.
    for name in ["zzz_not_a_field", "retry_timeout", "num_retries", "timeout"] {
        let mut cfg = Map::new();
        cfg.insert(name.into(), json!(1));
        assert!(!assert_agree(&v, "unknown field", &Value::Object(cfg)));
    }
}

/// Values for fields whose schema has no `default` (there is no sensible one).
fn sample(path: &str) -> Option<Value> {
    Some(match path {
        "upstream" => json!("orders.internal:8080"),
        "delay_endpoint" => json!("127.0.0.1:8555"),
        "backoff.interval" => json!(1000),
        "idempotency.consumer_header" => json!("X-Consumer-ID"),
        "idempotency.etcd.endpoint" => json!("127.0.0.1:2379"),
        "maintenance_windows" => json!([{"daily": {"start": "01:00", "end": "02:00"}}]),
        _ => return None,
    })
}

/// Top-level fields that only `"mode": "adaptive"` accepts.
const ADAPTIVE_ONLY: [&str; 2] = ["adaptive", "maintenance_windows"];

/// A config that sets `path` (dotted) to `value`, plus the partner fields that the
/// cross-field rules need for the field to be judged alone. These rules are the ones listed
/// in [`EXCEPTIONS`] and in the schema's `allOf`/`anyOf`:
/// * `deadline >= per_try_timeout` (defaults 10000 and 2000);
/// * backoff `interval` only with `"strategy":"fixed"`, which requires it;
/// * backoff `jitter` (like `base_interval`, `max_interval`) only with `"strategy":"exponential"`;
/// * backoff `max_interval >= base_interval` (default base 25);
/// * `adaptive` and `maintenance_windows` only with `"mode":"adaptive"`;
/// * `adaptive.cache <= adaptive.window` (default 30000).
fn with_field(path: &str, value: Value) -> Value {
    if path.is_empty() {
        return value;
    }
    let mut cfg = json!({});
    if ADAPTIVE_ONLY.contains(&path.split('.').next().unwrap_or_default()) {
        cfg["mode"] = json!("adaptive");
    }
    match path {
        "adaptive.cache" => cfg["adaptive"] = json!({"window": 3_600_000}),
        "per_try_timeout" => cfg["deadline"] = json!(config::MAX_DURATION_MS),
        "deadline" => cfg["per_try_timeout"] = json!(1),
        "backoff.interval" => cfg["backoff"] = json!({"strategy": "fixed"}),
        "backoff.max_interval" => cfg["backoff"] = json!({"base_interval": 1}),
        "backoff.strategy" if value == "fixed" => cfg["backoff"] = json!({"interval": 0}),
        _ => {}
    }
    let mut at = &mut cfg;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if at.get(*part).is_none() {
            at[*part] = json!({});
        }
        at = &mut at[*part];
    }
    at[parts[parts.len() - 1]] = value;
    cfg
}

/// The strings quoted in a parser message: `one of "a", "b"` -> {a, b}.
fn quoted(s: &str) -> BTreeSet<String> {
    s.split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w.to_string())
        .collect()
}

#[test]
fn every_schema_field_is_probed_against_the_parser() {
    let s = schema();
    let v = validator();
    let mut checked = 0;
    for (path, sub) in fields(&s) {
        let accept = |value: Value, why: &str| {
            let cfg = with_field(&path, value);
            assert!(
                assert_agree(&v, &format!("{path} ({why})"), &cfg),
                "{path} ({why}): both should accept {cfg}"
            );
        };
        let reject = |value: Value, why: &str| {
            let cfg = with_field(&path, value);
            let verdict = verdicts(&v, &cfg);
            assert!(
                verdict.schema.is_err() && verdict.parser.is_err(),
                "{path} ({why}): both should reject {cfg}: {}",
                verdict.describe()
            );
            let named = verdict.parser.err().map(|e| e.field).unwrap_or_default();
            assert!(
                named == path || named.starts_with(&format!("{path}[")),
                "{path} ({why}): the parser's error names `{named}`"
            );
        };

        // A value the field takes: its default, or a sample.
        match sub.get("default").cloned().or_else(|| sample(&path)) {
            Some(d) => accept(d, "default or sample"),
            None => panic!("`{path}` has no default in the schema and no sample() here"),
        }
        // No field takes null (Kong's YAML `~`) or a value of an unrelated type.
        reject(Value::Null, "null");
        if sub["type"] != "boolean" {
            reject(json!(true), "a boolean");
        }

        if let Some(members) = sub.get("enum").and_then(Value::as_array) {
            for m in members {
                accept(m.clone(), "enum member");
            }
            reject(json!("zzz-not-a-member"), "not an enum member");
            let e = config::parse(with_field(&path, json!("zzz")).to_string().as_bytes())
                .expect_err("not a member");
            let schema_members: BTreeSet<String> = members
                .iter()
                .filter_map(|m| m.as_str().map(String::from))
                .collect();
            assert_eq!(
                schema_members,
                quoted(&e.allowed),
                "`{path}`: schema enum (left) vs the parser's list (right)"
            );
        }
        match sub["type"].as_str() {
            Some("integer") => {
                let min = sub["minimum"].as_i64().expect("integers have a minimum");
                let max = sub["maximum"].as_i64().expect("integers have a maximum");
                accept(json!(min), "minimum");
                accept(json!(max), "maximum");
                reject(json!(min - 1), "below minimum");
                reject(json!(max + 1), "above maximum");
                reject(json!(min.to_string()), "number written as a string");
                reject(json!(min as f64 + 0.5), "not an integer");
                reject(
                    json!(min as f64),
                    "an integer written with a fraction, e.g. 1.0",
                );
            }
            Some("boolean") => {
                accept(json!(true), "true");
                accept(json!(false), "false");
                reject(json!("true"), "a string");
            }
            Some("object") => {
                accept(json!({}), "empty object: defaults");
                reject(json!(5), "a number");
                reject(json!([]), "an array");
            }
            Some("string") => {
                reject(json!(""), "empty");
                reject(json!(5), "a number");
                reject(json!(["a"]), "an array");
            }
            Some("array") => {
                // A list of structured items (e.g. schedules): its items need fixtures.
                reject(json!("a"), "a string");
                reject(json!(5), "a number");
                reject(json!({}), "an object");
            }
            Some(other) => panic!("`{path}`: no probes for type {other}; add them here"),
            None => {
                // retry_on / methods: a list or a comma-separated string.
                reject(json!(""), "empty string");
                reject(json!([]), "empty list");
                reject(json!(" , "), "only separators");
                reject(json!(5), "a bare number");
                reject(json!({}), "an object");
            }
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fields probed");
}

#[test]
fn schema_defaults_are_the_parser_defaults() {
    let s = schema();
    let v = validator();
    let mut all = Map::new();
    let mut adaptive = Map::new();
    for (name, sub) in s["properties"].as_object().expect("properties") {
        if let Some(d) = sub.get("default") {
            if ADAPTIVE_ONLY.contains(&name.as_str()) {
                adaptive.insert(name.clone(), d.clone());
            } else {
                all.insert(name.clone(), d.clone());
            }
        }
    }
    let mut all_adaptive = all.clone();
    let all = Value::Object(all);
    assert!(assert_agree(&v, "all defaults", &all));
    assert_eq!(
        config::parse(all.to_string().as_bytes()).expect("accepted"),
        Plan::default(),
        "a config spelling out every schema default must parse to the parser's defaults: {all}"
    );
    // Adaptive mode's own fields, spelled out at their defaults, change nothing but the mode.
    assert_eq!(adaptive.len(), ADAPTIVE_ONLY.len(), "{adaptive:?}");
    all_adaptive.extend(adaptive);
    all_adaptive.insert("mode".into(), json!("adaptive"));
    let all_adaptive = Value::Object(all_adaptive);
    assert!(assert_agree(&v, "all defaults, adaptive", &all_adaptive));
    assert_eq!(
        config::parse(all_adaptive.to_string().as_bytes()).expect("accepted"),
        Plan {
            mode: config::Mode::Adaptive,
            ..Plan::default()
        },
        "{all_adaptive}"
    );
    // And each object's nested defaults agree with the object's own default.
    for (path, sub) in fields(&s) {
        let Some(props) = sub.get("properties").and_then(Value::as_object) else {
            continue;
        };
        let mut nested = Map::new();
        for (name, p) in props {
            if let Some(d) = p.get("default") {
                nested.insert(name.clone(), d.clone());
            }
        }
        assert_eq!(
            Some(&Value::Object(nested)),
            sub.get("default"),
            "`{path}`: default of the object vs defaults of its fields"
        );
    }
    assert_eq!(config::parse(b"{}").expect("empty"), Plan::default());
}

// ---------------------------------------------------------------------------------------
// String grammars, compared on every combination of a few tricky tokens
// ---------------------------------------------------------------------------------------

/// Every concatenation of 1 to `n` tokens.
fn combinations(tokens: &[&str], n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut layer = vec![String::new()];
    for _ in 0..n {
        let mut next = Vec::new();
        for prefix in &layer {
            for t in tokens {
                next.push(format!("{prefix}{t}"));
            }
        }
        out.extend(next.iter().cloned());
        layer = next;
    }
    out
}

fn compare_strings(field: &str, tokens: &[&str], n: usize) -> (usize, usize) {
    let v = validator();
    let (mut yes, mut no) = (0, 0);
    for s in combinations(tokens, n) {
        let cfg = with_field(field, json!(s));
        if assert_agree(&v, field, &cfg) {
            yes += 1;
        } else {
            no += 1;
        }
    }
    // Both outcomes must occur, or the tokens test nothing.
    assert!(yes > 0 && no > 0, "{field}: {yes} accepted, {no} rejected");
    (yes, no)
}

#[test]
fn upstream_grammar_agrees() {
    compare_strings(
        "upstream",
        &[
            "h", "[", "]", ":", "8", "0", "/", "?", " ", "http://", "https://", "65536", "\u{1}",
        ],
        4,
    );
}

#[test]
fn etcd_endpoint_grammar_agrees() {
    // The same grammar as `upstream` (one parser, one pattern), on fewer combinations.
    compare_strings(
        "idempotency.etcd.endpoint",
        &[
            "h", "[", "]", ":", "2", "0", "/", "?", " ", "http://", "https://", "65536", "\u{1}",
        ],
        3,
    );
}

#[test]
fn etcd_prefix_grammar_agrees() {
    compare_strings(
        "idempotency.etcd.prefix",
        &["/", "a", " ", "\n", "\t", "é", "~", "\u{7f}"],
        3,
    );
}

#[test]
fn delay_endpoint_grammar_agrees() {
    compare_strings(
        "delay_endpoint",
        &[
            "h", "[", "]", ":", "8", "0", "/", "?", " ", "65535", "65536", "\t",
        ],
        4,
    );
}

#[test]
fn header_name_grammar_agrees() {
    let tokens = [
        "x",
        "-",
        "T",
        "e",
        "Host",
        "connection",
        " ",
        ":",
        "é",
        "\n",
        "_",
        "~",
        "(",
    ];
    for field in [
        "idempotency_header",
        "attempt_header",
        "attempts_header",
        "idempotency.consumer_header",
    ] {
        compare_strings(field, &tokens, 3);
    }
    // Every hop-by-hop header, in any case, is refused by both.
    let v = validator();
    for h in [
        "Connection",
        "KEEP-ALIVE",
        "proxy-connection",
        "TE",
        "Trailer",
        "transfer-encoding",
        "Upgrade",
        "expect",
        "HOST",
        "content-length",
    ] {
        let cfg = json!({ "attempt_header": h });
        assert!(!assert_agree(&v, "hop-by-hop", &cfg), "{h}");
    }
}

#[test]
fn retry_on_grammar_agrees() {
    compare_strings(
        "retry_on",
        &[
            "502",
            "5xX",
            "Timeout",
            "gateway_error",
            "connect-failure",
            "RESET",
            ",",
            " ",
            "\t",
            "200",
            "600",
            "oops",
            "4",
        ],
        3,
    );
    compare_lists(
        "retry_on",
        &[
            json!("502"),
            json!(502),
            json!(""),
            json!(" "),
            json!(" reset "),
            json!(200),
            json!("502,503"),
            json!(502.0),
            json!(true),
            json!("gateway-ERROR"),
        ],
    );
}

#[test]
fn methods_grammar_agrees() {
    for field in ["methods", "idempotency.methods"] {
        methods_grammar_agrees_for(field);
    }
}

fn methods_grammar_agrees_for(field: &str) {
    compare_strings(
        field,
        &["GET", "p", "-", ",", " ", "\t", "5", "_", "é", "Ab"],
        3,
    );
    compare_lists(
        field,
        &[
            json!("GET"),
            json!(""),
            json!(" "),
            json!("p-x"),
            json!(5),
            json!("GE T"),
            json!(null),
            json!("GET,PUT"),
        ],
    );
}

#[test]
fn maintenance_window_timestamps_agree() {
    // The one-off timestamp grammar: each part of a good timestamp replaced in turn, and
    // every month against every day (calendar rules are the parser's alone, see EXCEPTIONS).
    let item = &schema()["properties"]["maintenance_windows"]["items"]["properties"]["start"];
    let v = jsonschema::draft4::new(item).expect("the timestamp schema compiles");
    let parts: [&[&str]; 10] = [
        &["2026", "1970", "1969", "0000", "9999", "202", "20266"],
        &["-", "/"],
        &["12", "01", "02", "13", "00", "1"],
        &["-"],
        &["01", "28", "29", "30", "31", "32", "00", "1"],
        &["T", "t", " ", "TT"],
        &["01:00", "00:00", "23:59", "24:00", "23:60", "1:00"],
        &[":00", ":59", ":60", ""],
        &["", ".5", ".123456789", ".1234567890", "."],
        &["Z", "z", "+00:00", "-00:00", "+01:00", "", "Z "],
    ];
    let base: Vec<&str> = parts.iter().map(|p| p[0]).collect();
    let mut candidates = Vec::new();
    for (i, options) in parts.iter().enumerate() {
        for o in options.iter() {
            let mut c = base.clone();
            c[i] = o;
            candidates.push(c.concat());
        }
    }
    for month in parts[2] {
        for day in parts[4] {
            let mut c = base.clone();
            c[2] = month;
            c[4] = day;
            candidates.push(c.concat());
        }
    }
    let (mut yes, mut no) = (0, 0);
    for c in candidates {
        let schema_ok = v.is_valid(&json!(c));
        let parser_ok = kong_retry::maintenance::parse_timestamp(&c).is_ok();
        let calendar_only = matches!(
            c.get(5..7).zip(c.get(8..10)),
            Some(("02", "29" | "30" | "31")) | Some(("04" | "06" | "09" | "11", "31"))
        );
        if calendar_only && schema_ok && !parser_ok {
            continue;
        }
        assert_eq!(schema_ok, parser_ok, "timestamp {c:?}: schema vs parser");
        if parser_ok {
            yes += 1;
        } else {
            no += 1;
        }
    }
    assert!(yes > 5 && no > 20, "{yes} accepted, {no} rejected");
}

#[test]
fn maintenance_window_times_of_day_agree() {
    let v = validator();
    let (mut yes, mut no) = (0, 0);
    for s in combinations(&["0", "1", "2", "3", "5", "9", "6", ":", " "], 5) {
        if s == "12:34" {
            continue; // equal to the end: see EXCEPTIONS
        }
        let cfg = json!({
            "mode": "adaptive",
            "maintenance_windows": [{"daily": {"start": s, "end": "12:34"}}]
        });
        if assert_agree(&v, "daily.start", &cfg) {
            yes += 1;
        } else {
            no += 1;
        }
    }
    assert!(yes > 100 && no > 100, "{yes} accepted, {no} rejected");
}

/// Every list of 0 to 2 of `items`.
fn compare_lists(field: &str, items: &[Value]) {
    let v = validator();
    let mut lists = vec![json!([])];
    for a in items {
        lists.push(json!([a]));
        for b in items {
            lists.push(json!([a, b]));
        }
    }
    for list in lists {
        assert_agree(&v, field, &with_field(field, list));
    }
}

// ---------------------------------------------------------------------------------------
// What JSON Schema (as Kong runs it) cannot say
// ---------------------------------------------------------------------------------------

/// Configs on which schema and parser knowingly differ, with the reason. Each is asserted,
/// so a change on either side that removes (or flips) a difference shows up here.
///
/// Differences of Kong's validator (lua-resty-ljsonschema) that this Rust validator cannot
/// show, and why they are harmless or handled:
/// * Lua cannot tell `{}` from `[]`: Kong lets `"backoff": []` pass as an empty object;
///   the filter then gets `{}` (defaults) or `[]` (refused when it starts), depending on how
///   Kong re-encodes the config.
/// * Lua numbers: Kong takes `2.0` as an integer, then re-encodes it as `2` for the filter,
///   which accepts it. Draft 4 here, like the parser, refuses `2.0` and `1e2`.
/// * PCRE without UTF-8 mode matches bytes, and its `$` also matches before a final
///   newline: patterns are ASCII only (checked in `meta_file_is_what_kong_loads`) and the
///   header, upstream and delay_endpoint schemas refuse any newline explicitly.
const EXCEPTIONS: &[(&str, bool, bool, &str)] = &[
    // (config, schema accepts, parser accepts, reason)
    (
        "null",
        false,
        true,
        "a missing config: Kong never validates an absent `config`, and the parser treats \
         empty or null configuration (as Envoy may pass) as all defaults",
    ),
    (
        r#"{"per_try_timeout":5000,"deadline":4000}"#,
        true,
        false,
        "deadline >= per_try_timeout compares two given values; draft 4 has no $data. The \
         schema does cover each one against the other's default",
    ),
    (
        r#"{"backoff":{"base_interval":100,"max_interval":50}}"#,
        true,
        false,
        "backoff max_interval >= base_interval compares two given values (draft 4 cannot); \
         max_interval against the default base (25) is covered",
    ),
    (
        r#"{"mode":"adaptive","adaptive":{"window":2000,"cache":3000}}"#,
        true,
        false,
        "adaptive.cache <= adaptive.window compares two given values (draft 4 cannot); cache \
         against the default window (30000) is covered",
    ),
    (
        r#"{"mode":"adaptive","maintenance_windows":[{"start":"2026-12-01T03:00:00Z","end":"2026-12-01T01:00:00Z"}]}"#,
        true,
        false,
        "a one-off window's end must be after its start: comparing two timestamps is beyond \
         draft 4; the schema checks each one's shape",
    ),
    (
        r#"{"mode":"adaptive","maintenance_windows":[{"start":"2026-12-01T00:00:00Z","end":"2026-12-08T00:00:01Z"}]}"#,
        true,
        false,
        "a one-off window lasts at most 7 days (date arithmetic, beyond draft 4)",
    ),
    (
        r#"{"mode":"adaptive","maintenance_windows":[{"start":"2027-02-29T01:00:00Z","end":"2027-03-01T01:00:00Z"}]}"#,
        true,
        false,
        "calendar dates: the schema's pattern allows day 01-31 in every month; the parser \
         knows month lengths and leap years",
    ),
    (
        r#"{"mode":"adaptive","maintenance_windows":[{"daily":{"start":"01:00","end":"01:00"}}]}"#,
        true,
        false,
        "a daily window whose end equals its start is ambiguous (empty or 24 hours); two given \
         values compared",
    ),
    (
        r#"{"mode":"adaptive","maintenance_windows":[{"daily":{"start":"00:00","end":"12:00"}},{"daily":{"start":"12:00","end":"00:00"}}]}"#,
        true,
        false,
        "daily windows that together cover the whole day are refused (that is dispatch mode); \
         a union of intervals is beyond draft 4",
    ),
    (
        r#"{"deadline":20000,"idempotency":{"enabled":true,"lock_timeout":15000}}"#,
        true,
        false,
        "idempotency.lock_timeout >= deadline compares two given values (draft 4 cannot); \
         each against the other's default is covered",
    ),
    (
        r#"{"upstream":"orders.ünicode.svc:8080"}"#,
        false,
        true,
        "non-ASCII upstream: Kong's hosts are ASCII (punycode), and Kong's PCRE matches bytes, \
         so the schema allows printable ASCII only; the parser also takes any Envoy cluster name",
    ),
    (
        "{\"delay_endpoint\":\"127.0.0.1\\u0001:8555\"}",
        false,
        true,
        "a control character in delay_endpoint: the parser only refuses whitespace and '/'; \
         the schema allows printable ASCII only",
    ),
    (
        "{\"methods\":\"GET,\\u00a0PUT\"}",
        false,
        true,
        "non-ASCII whitespace around list items: the parser trims Unicode whitespace, the \
         schema's byte-safe patterns know ASCII whitespace only",
    ),
];

#[test]
fn exceptions_are_as_documented() {
    let v = validator();
    for (json, schema_ok, parser_ok, why) in EXCEPTIONS {
        let cfg: Value = serde_json::from_str(json).expect("exception configs are JSON");
        let verdict = verdicts(&v, &cfg);
        assert_eq!(
            (verdict.schema.is_ok(), verdict.parser.is_ok()),
            (*schema_ok, *parser_ok),
            "exception {json} ({why}) no longer holds: {}",
            verdict.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------
// The operator guide's configuration reference, generated from the schema
// ---------------------------------------------------------------------------------------

const GUIDE: &str = "docs/operator-guide.md";
const BEGIN: &str = "<!-- BEGIN GENERATED config-reference: from kong/kong_retry.meta.json by \
                     tests/config_schema.rs; refresh with UPDATE_DOCS=1 cargo test --test config_schema -->";
const END: &str = "<!-- END GENERATED config-reference -->";

/// Property names in the order the meta file lists them (serde_json sorts its maps; the
/// YAML parser keeps order, and JSON is YAML).
fn ordered_names(text: &str, pointer: &[&str]) -> Vec<String> {
    let mut v: serde_norway::Value =
        serde_norway::from_str(text).expect("the meta file parses as YAML too");
    for key in pointer {
        v = v.get(*key).cloned().unwrap_or(serde_norway::Value::Null);
    }
    match v {
        serde_norway::Value::Mapping(m) => m
            .keys()
            .filter_map(|k| k.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn type_cell(s: &Value) -> String {
    if let Some(members) = s.get("enum").and_then(Value::as_array) {
        return members
            .iter()
            .map(|m| format!("`{}`", m.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    match &s["type"] {
        Value::String(t) if t == "integer" => {
            match (s["minimum"].as_i64(), s["maximum"].as_i64()) {
                (Some(lo), Some(hi)) => format!("integer {lo}–{hi}"),
                _ => "integer".into(),
            }
        }
        Value::String(t) => t.clone(),
        Value::Array(_) => "list or comma-separated string".into(),
        _ => "any".into(),
    }
}

fn default_cell(s: &Value) -> String {
    match s.get("default") {
        None => "—".into(),
        Some(_) if s.get("properties").is_some() => "see below".into(),
        Some(Value::String(d)) => format!("`{d}`"),
        Some(d) => format!("`{d}`"),
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown table of every field, from the schema.
fn reference_markdown() -> String {
    let text = read("kong/kong_retry.meta.json");
    let s = schema();
    let mut out = String::new();
    out.push_str("| field | type | default | meaning |\n|---|---|---|---|\n");
    let mut row = |path: &str, sub: &Value| {
        out.push_str(&format!(
            "| `{path}` | {} | {} | {} |\n",
            type_cell(sub),
            default_cell(sub),
            cell(sub["description"].as_str().unwrap_or_default())
        ));
    };
    for name in ordered_names(&text, &["config_schema", "properties"]) {
        let sub = &s["properties"][&name];
        row(&name, sub);
        for child in ordered_names(&text, &["config_schema", "properties", &name, "properties"]) {
            row(&format!("{name}.{child}"), &sub["properties"][&child]);
        }
    }
    out
}

#[test]
fn every_field_has_a_description() {
    for (path, sub) in fields(&schema()) {
        let d = sub["description"].as_str().unwrap_or_default();
        assert!(d.len() > 10, "`{path}` needs a description in the schema");
    }
}

#[test]
fn operator_guide_reference_is_generated_from_the_schema() {
    let path = root().join(GUIDE);
    let guide = read(GUIDE);
    let (Some(b), Some(e)) = (guide.find(BEGIN), guide.find(END)) else {
        panic!("{GUIDE} lacks the markers:\n{BEGIN}\n{END}");
    };
    assert!(b < e, "{GUIDE}: markers out of order");
    let current = &guide[b + BEGIN.len()..e];
    let wanted = format!("\n{}", reference_markdown());
    if current == wanted {
        return;
    }
    if std::env::var("UPDATE_DOCS").as_deref() == Ok("1") {
        let updated = format!("{}{}{}", &guide[..b + BEGIN.len()], wanted, &guide[e..]);
        std::fs::write(&path, updated).expect("write the guide");
        return;
    }
    panic!(
        "{GUIDE}: the configuration reference is stale; run \
         UPDATE_DOCS=1 cargo test --test config_schema"
    );
}

/// Log and error text the guide's troubleshooting table quotes; each must still be in the
/// filter's source, or the guide describes messages nobody will see.
const GUIDE_QUOTES: &[&str] = &[
    "invalid config: `",
    "did you mean `per_try_timeout` (ms, the timeout of each attempt) or `deadline` (ms, the overall time for all attempts)?",
    "mode \"response\" is not possible on Kong; using dispatch mode",
    "the last attempt failed without a response and Kong cannot deliver the filter's own answer from that callback; the request goes the native way once more (set `delay_endpoint` to answer 502/504 instead)",
    "retry budget store unavailable: ",
    "retry budget kept in shared data (",
    "not JSON (",
    "cannot read the configuration (status ",
    "host detected: ",
    "; attempts run in ",
    "configured: mode=",
    "no `upstream` configured and the host names none (Kong: kong.router.service, Kong 3.6+; Envoy: xds.cluster_name); requests go the native way without retries",
    "no `delay_endpoint` configured: Kong offers no per-request timer, so retries go immediately, without backoff",
    "the delay endpoint answered before the delay was over; check delay_endpoint (kong/delay-server.conf)",
    "; retrying now",
    "dispatch of attempt ",
    "retry: attempt ",
    "answering ",
    " attempt(s)",
    "upstream request failed: ",
    "cannot read request headers (status ",
    "); not retrying",
    "cannot send the response (status ",
    "cannot resume the stream (status ",
    "adaptive: protection of ",
    " started after ",
    ": requests are protected (retries on)",
    "maintenance window over: requests go natively while calm",
    "adaptive protection without shared data: ",
    "; each worker protects on the failures it sees itself, the others do not learn of them",
];

fn source_text(dir: &std::path::Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable").flatten() {
        let p = entry.path();
        if p.is_dir() {
            source_text(&p, out);
        } else if p.extension().and_then(|e| e.to_str()) == Some("rs") {
            out.push_str(
                &std::fs::read_to_string(&p)
                    .unwrap_or_default()
                    .replace("\\\"", "\""),
            );
        }
    }
}

#[test]
fn operator_guide_quotes_the_filters_real_messages() {
    let guide = read(GUIDE);
    let mut src = String::new();
    source_text(&root().join("src"), &mut src);
    for q in GUIDE_QUOTES {
        assert!(guide.contains(q), "{GUIDE} no longer quotes {q:?}");
        assert!(
            src.contains(q),
            "{GUIDE} quotes {q:?}, which is no longer in src/: update the troubleshooting table"
        );
    }
}
