//! Shared by the packaging tests: the Kong config schema (`kong/kong_retry.meta.json`) and
//! the filter's own parser, asked the same question.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use jsonschema::Validator;
use kong_retry::config::{self, ConfigError, Plan};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The repository root (where Cargo.toml is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads a file of the repository as text, naming it when it cannot.
pub fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The meta file as Kong reads it: `{"config_schema": {...}}`.
pub fn meta() -> Value {
    serde_json::from_str(&read("kong/kong_retry.meta.json"))
        .unwrap_or_else(|e| panic!("kong/kong_retry.meta.json is not JSON: {e}"))
}

/// The `config_schema` of the meta file.
pub fn schema() -> Value {
    meta()
        .get("config_schema")
        .cloned()
        .unwrap_or_else(|| panic!("kong/kong_retry.meta.json has no config_schema"))
}

/// A validator for the schema with the dialect Kong uses (JSON Schema draft 4).
pub fn validator() -> Validator {
    jsonschema::draft4::new(&schema())
        .unwrap_or_else(|e| panic!("config_schema does not compile: {e}"))
}

/// What the schema and the parser each say about one config.
pub struct Verdicts {
    /// `Err` holds the schema's error messages.
    pub schema: Result<(), Vec<String>>,
    pub parser: Result<Plan, ConfigError>,
}

impl Verdicts {
    /// True when both accept or both reject.
    pub fn agree(&self) -> bool {
        self.schema.is_ok() == self.parser.is_ok()
    }

    /// A one-line account of both verdicts, for assertion messages.
    pub fn describe(&self) -> String {
        let schema = match &self.schema {
            Ok(()) => "schema accepts".to_string(),
            Err(e) => format!("schema rejects ({})", e.join("; ")),
        };
        let parser = match &self.parser {
            Ok(_) => "parser accepts".to_string(),
            Err(e) => format!("parser rejects ({e})"),
        };
        format!("{schema}; {parser}")
    }
}

/// Asks the schema and the filter's parser about `config`.
pub fn verdicts(validator: &Validator, config: &Value) -> Verdicts {
    let errors: Vec<String> = validator
        .iter_errors(config)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    let schema = if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    };
    // The parser takes bytes, as the host hands them over.
    let parser = config::parse(config.to_string().as_bytes());
    Verdicts { schema, parser }
}

/// Asserts that schema and parser agree on `config`, and returns whether they accept it.
pub fn assert_agree(validator: &Validator, label: &str, config: &Value) -> bool {
    let v = verdicts(validator, config);
    assert!(
        v.agree(),
        "{label}: schema and parser disagree on {config}: {}",
        v.describe()
    );
    v.parser.is_ok()
}

/// The `*.json` files of a fixture directory, sorted, with their parsed contents.
pub fn fixtures(dir: &str) -> Vec<(String, Value)> {
    let path = root().join(dir);
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(&path).unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
    for entry in entries {
        let p = entry
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .path();
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        out.push((file_name(&p), read_json(&p)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

fn read_json(p: &Path) -> Value {
    let text =
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}
