//! Reading one JSON value as what a field expects (an integer in range, a string, an object
//! of known fields, a list), with a [`ConfigError`] naming the field when it is not.

use super::ConfigError;
use serde_json::{Map, Value};

pub(super) fn int_in(
    field: &str,
    v: &Value,
    min: u64,
    max: u64,
    unit: &str,
) -> Result<u64, ConfigError> {
    let allowed = || format!("an integer from {min} to {max}{unit}");
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => {
            let why = if v.is_string() {
                format!("{}, written as a JSON number, not a string", allowed())
            } else {
                allowed()
            };
            Err(ConfigError::new(field, v, why))
        }
    }
}

pub(super) fn string<'a>(field: &str, v: &'a Value, allowed: &str) -> Result<&'a str, ConfigError> {
    v.as_str()
        .ok_or_else(|| ConfigError::new(field, v, allowed.to_string()))
}

/// A string naming one of `choices`, as its value; `allowed` says which names are accepted.
pub(super) fn one_of<T: Copy>(
    field: &str,
    v: &Value,
    allowed: &str,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let name = string(field, v, allowed)?;
    choices
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, value)| value)
        .ok_or_else(|| ConfigError::new(field, v, allowed))
}

pub(super) fn object<'a>(
    field: &str,
    v: &'a Value,
    known: &[&str],
    allowed: &str,
) -> Result<&'a Map<String, Value>, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ConfigError::new(field, v, allowed.to_string()))?;
    for (name, val) in obj {
        if !known.contains(&name.as_str()) {
            return Err(ConfigError::new(
                &format!("{field}.{name}"),
                val,
                format!("unknown field; known fields: {}", known.join(", ")),
            ));
        }
    }
    Ok(obj)
}

/// A list, or a comma-separated string, of non-empty trimmed items.
pub(super) fn list_items(
    field: &str,
    v: &Value,
    allowed: &str,
) -> Result<Vec<String>, ConfigError> {
    let items: Vec<String> = match v {
        Value::String(s) => s.split(',').map(|t| t.trim().to_string()).collect(),
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, item) in a.iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s.trim().to_string()),
                    Value::Number(n) => out.push(n.to_string()),
                    other => {
                        return Err(ConfigError::new(&format!("{field}[{i}]"), other, allowed))
                    }
                }
            }
            out
        }
        other => return Err(ConfigError::new(field, other, allowed)),
    };
    if items.iter().all(|s| s.is_empty()) {
        return Err(ConfigError::new(
            field,
            v,
            format!("must not be empty; {allowed}"),
        ));
    }
    Ok(items)
}
