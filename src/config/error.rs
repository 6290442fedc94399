//! [`ConfigError`]: which field, which value, and what would have been accepted.

use crate::maintenance::MaintenanceError;
use serde_json::Value;
use std::fmt;

/// A configuration error: which field, which value, and what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's path, e.g. `retries` or `backoff.base_interval`.
    pub field: String,
    /// The offending value as JSON text (or a short description of it).
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

impl ConfigError {
    pub(super) fn new(field: &str, value: &Value, allowed: impl Into<String>) -> Self {
        ConfigError {
            field: field.to_string(),
            value: truncated(value.to_string()),
            allowed: allowed.into(),
        }
    }
}

/// An offending value's text as errors show it: at most 80 bytes, longer ones cut at a
/// char boundary and ended with `...`.
pub(crate) fn truncated(mut text: String) -> String {
    if text.len() > 80 {
        let mut cut = 77;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid config: `{}` = {}: {}",
            self.field, self.value, self.allowed
        )
    }
}

impl std::error::Error for ConfigError {}

impl From<MaintenanceError> for ConfigError {
    fn from(e: MaintenanceError) -> Self {
        ConfigError {
            field: e.field,
            value: e.value,
            allowed: e.allowed,
        }
    }
}
