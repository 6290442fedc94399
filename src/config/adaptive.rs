//! `adaptive`: adaptive mode's protection window, cache age and scope.

use super::read::{int_in, object, one_of};
use super::ConfigError;
use serde_json::Value;

/// Which requests share one adaptive-protection flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectionScope {
    /// Every route to the same backend: a restarting backend protects all of them at once.
    Upstream,
    /// Each route on its own.
    Route,
}

/// Adaptive mode's settings (`adaptive`); the flag lives in the budget's zone
/// (`budget.zone`, `budget.store`): one shared-data zone for the whole filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveConfig {
    /// How long one failure protects the scope, ms.
    pub window_ms: u64,
    /// How old a worker's cached flag may be before it reads shared data again, ms.
    pub cache_ms: u64,
    pub scope: ProtectionScope,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            window_ms: 30_000,
            cache_ms: 1_000,
            scope: ProtectionScope::Upstream,
        }
    }
}

pub(super) fn parse_adaptive(v: &Value) -> Result<AdaptiveConfig, ConfigError> {
    use crate::state::protection::{MAX_CACHE_MS, MAX_WINDOW_MS, MIN_WINDOW_MS};
    const ALLOWED: &str = "an object with window (ms), cache (ms), scope (\"upstream\"|\"route\"); the shared-data zone is budget.zone";
    if let Some(z) = v.get("zone") {
        return Err(ConfigError::new(
            "adaptive.zone",
            z,
            "unknown field; the protection flag lives in the filter's one shared-data zone, set with budget.zone (and budget.store)",
        ));
    }
    let obj = object("adaptive", v, &["window", "cache", "scope"], ALLOWED)?;
    let mut a = AdaptiveConfig::default();
    if let Some(w) = obj.get("window") {
        a.window_ms = int_in("adaptive.window", w, MIN_WINDOW_MS, MAX_WINDOW_MS, " (ms)")?;
    }
    if let Some(c) = obj.get("cache") {
        a.cache_ms = int_in("adaptive.cache", c, 0, MAX_CACHE_MS, " (ms)")?;
    }
    if a.cache_ms > a.window_ms {
        return Err(ConfigError {
            field: "adaptive.cache".into(),
            value: a.cache_ms.to_string(),
            allowed: format!(
                "must be at most adaptive.window ({} ms), or a worker could miss a whole protection",
                a.window_ms
            ),
        });
    }
    if let Some(s) = obj.get("scope") {
        const A: &str = "one of \"upstream\" (every route to the same backend), \"route\"";
        a.scope = one_of(
            "adaptive.scope",
            s,
            A,
            &[
                ("upstream", ProtectionScope::Upstream),
                ("route", ProtectionScope::Route),
            ],
        )?;
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, ConfigError, Mode, DEFAULT_BUDGET_ZONE};

    fn err(json: &str) -> ConfigError {
        parse(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn adaptive_mode_and_its_settings() {
        let p = parse(br#"{"mode":"adaptive"}"#).unwrap();
        assert_eq!(p.mode, Mode::Adaptive);
        assert_eq!(p.adaptive, AdaptiveConfig::default());
        assert!(p.maintenance_windows.is_empty());
        let rules = p.protection_rules();
        assert_eq!((rules.window_ms(), rules.cache_ms()), (30_000, 1_000));
        assert_eq!(rules.zone(), Some(DEFAULT_BUDGET_ZONE));

        let p = parse(
            br#"{"mode":"adaptive","adaptive":{"window":5000,"cache":0,"scope":"route"},
            "budget":{"zone":"retry-state"},
            "maintenance_windows":[{"start":"2026-12-01T01:00:00Z","end":"2026-12-01T03:00:00Z"},
            {"daily":{"start":"23:00","end":"01:00"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            p.adaptive,
            AdaptiveConfig {
                window_ms: 5000,
                cache_ms: 0,
                scope: ProtectionScope::Route
            }
        );
        assert_eq!(p.maintenance_windows.windows().len(), 2);
        let rules = p.protection_rules();
        assert_eq!(rules.zone(), Some("retry-state"));
        assert_eq!(rules.key("r"), "retry-state/kong_retry/protect/r");
        // The cache may equal the window.
        assert!(parse(br#"{"mode":"adaptive","adaptive":{"window":1000,"cache":1000}}"#).is_ok());
    }

    #[test]
    fn adaptive_settings_outside_adaptive_mode_name_mode() {
        let e = err(r#"{"mode":"dispatch","maintenance_windows":[]}"#);
        assert_eq!(e.field, "mode");
        assert!(e.allowed.contains("maintenance_windows"), "{e}");
        assert!(e.allowed.contains("adaptive"), "{e}");
        let e = err(r#"{"mode":"adaptive","adaptive":{"zone":"z"}}"#);
        assert!(e.allowed.contains("budget.zone"), "{e}");
    }
}
