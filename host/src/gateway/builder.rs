//! Configuring and starting a gateway: the builder, the settings it produces,
//! and the properties each profile provides by default.

use super::{Gateway, LogLevel, Node, Slot};
use crate::module::WasmModule;
use crate::profile::{kong_worker_exit_log, Profile};
use crate::worker::ROOT_ID;
use crate::HostError;
use crate::RequestStats;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Immutable configuration of a gateway, shared with its workers.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub profile: Profile,
    /// Kong: the filter's name, its `.wasm` file name without the extension
    /// (`wasm_filters_path`); `plugin_name` answers it.
    pub filter_name: String,
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    /// Later entries win; `None` removes a default property.
    pub properties: Vec<(Vec<String>, Option<Vec<u8>>)>,
    pub clusters: Vec<String>,
    pub upstream: String,
    pub shared_data_zone: bool,
    /// Kong: the name of the `shm_kv` zone (shown as `kong.configuration.nginx_wasm_shm_kv_<name>`).
    pub shared_data_zone_name: String,
    pub body_buffer_size: usize,
    pub fuel_per_callback: u64,
    pub memory_limit_bytes: usize,
    pub log_level: LogLevel,
    pub seed: u64,
    pub proxy_timeout_ms: u64,
}

/// Builds a [`Gateway`].
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    settings: Settings,
    module: WasmModule,
    workers: usize,
}

impl GatewayBuilder {
    /// The filter's configuration (Kong: the filter chain's `config`).
    pub fn plugin_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.settings.plugin_config = bytes.into();
        self
    }

    /// The VM configuration given to `on_vm_start`.
    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.settings.vm_config = bytes.into();
        self
    }

    /// Number of VM instances (nginx workers / Envoy worker threads). Default 1.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Kong: whether an `shm_kv` zone is configured (default true). Without
    /// one, shared-data calls trap. With one, the Kong profile shows it to
    /// filters as the property `kong.configuration.nginx_wasm_shm_kv_<name>`.
    pub fn shared_data_zone(mut self, on: bool) -> Self {
        self.settings.shared_data_zone = on;
        self
    }

    /// Kong: the name of the configured `shm_kv` zone (default `kong_retry`),
    /// i.e. which `kong.configuration.nginx_wasm_shm_kv_<name>` property exists.
    pub fn shared_data_zone_name(mut self, name: &str) -> Self {
        self.settings.shared_data_zone_name = name.to_string();
        self
    }

    /// Kong: `client_body_buffer_size` (default 8192); larger bodies are
    /// spilled to a file and unreadable by the filter.
    pub fn body_buffer_size(mut self, bytes: usize) -> Self {
        self.settings.body_buffer_size = bytes;
        self
    }

    /// Sets a property (path parts joined as the ABI does); overrides defaults.
    pub fn property(mut self, path: &[&str], value: impl Into<Vec<u8>>) -> Self {
        self.settings.properties.push((
            path.iter().map(|s| s.to_string()).collect(),
            Some(value.into()),
        ));
        self
    }

    /// Removes a default property (e.g. to model a Kong version without it).
    pub fn without_property(mut self, path: &[&str]) -> Self {
        self.settings
            .properties
            .push((path.iter().map(|s| s.to_string()).collect(), None));
        self
    }

    /// Envoy: a cluster name dispatches may target.
    pub fn cluster(mut self, name: &str) -> Self {
        self.settings.clusters.push(name.to_string());
        self
    }

    /// Where the proxy's own path forwards (`host:port`). Also fills Kong's
    /// `kong.router.service` property.
    pub fn upstream(mut self, host_port: &str) -> Self {
        self.settings.upstream = host_port.to_string();
        self
    }

    /// Seed of the deterministic `random_get`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = seed;
        self
    }

    /// Fuel (≈ wasm instructions) allowed per callback. Default 200 million.
    pub fn fuel_per_callback(mut self, fuel: u64) -> Self {
        self.settings.fuel_per_callback = fuel;
        self
    }

    /// Maximum linear memory per instance. Default 256 MiB.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.settings.memory_limit_bytes = bytes;
        self
    }

    /// The level `proxy_get_log_level` reports. Default Trace (tests see everything).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.settings.log_level = level;
        self
    }

    /// Timeout of the proxy's own forward. Default: Kong 60 s, Envoy 15 s.
    pub fn proxy_timeout_ms(mut self, ms: u64) -> Self {
        self.settings.proxy_timeout_ms = ms;
        self
    }

    /// Starts every worker: instantiate, `on_vm_start`, `on_configure`.
    ///
    /// Envoy: any start-up failure is an error (Envoy does not start). Kong: a
    /// worker whose start-up fails (an import the host refuses, a trap, or
    /// `on_vm_start`/`on_configure` returning false) exits for good and the
    /// gateway is returned without it; its error log says why
    /// ([`Gateway::exited`]) and every request sent to it hangs
    /// ([`HostError::Hung`] from [`Gateway::run`]).
    pub fn build(self) -> Result<Gateway, HostError> {
        let mut settings = self.settings;
        let zone = settings
            .shared_data_zone
            .then_some(settings.shared_data_zone_name.as_str());
        let mut props = default_properties(
            settings.profile,
            &settings.upstream,
            zone,
            &settings.filter_name,
        );
        props.append(&mut settings.properties);
        settings.properties = props;
        let settings = Arc::new(settings);
        let node = Arc::new(Mutex::new(Node {
            now_ms: 0,
            shared_data: HashMap::new(),
            next_cas: 0,
            metrics: Vec::new(),
            logs: Vec::new(),
            next_call_id: 0,
        }));
        let mut gw = Gateway {
            settings,
            module: self.module,
            node,
            slots: Vec::new(),
            flights: BTreeMap::new(),
            pending: BTreeMap::new(),
            history: Vec::new(),
            traps: Vec::new(),
            next_request: 0,
            root_stats: RequestStats::default(),
            instances_started: 0,
        };
        let profile = gw.settings.profile;
        for index in 0..self.workers {
            let (worker, exited) = match gw.start_worker(index, 0) {
                Ok(worker) => (Some(worker), None),
                Err(e) if profile.start_failure_kills_worker() => {
                    let lines = kong_worker_exit_log(index, &e, &gw.settings.filter_name);
                    let reason = lines
                        .iter()
                        .map(|(_, l)| l.as_str())
                        .collect::<Vec<_>>()
                        .join("; ");
                    for (level, line) in lines {
                        gw.host_log(index, level, line);
                    }
                    (None, Some(reason))
                }
                Err(e) => return Err(e),
            };
            gw.slots.push(Slot {
                worker,
                generation: 0,
                next_tick_at: None,
                next_ctx: ROOT_ID + 1,
                exited,
            });
            gw.reschedule_tick(index);
        }
        Ok(gw)
    }
}

/// Properties each profile provides. Kong (BRIEF): `kong.route_id`,
/// `kong.service_id` (3.4+), `kong.router.route`/`kong.router.service`
/// (3.6+), `kong.route_name`/`kong.service_name` (3.9+), nginx variables as
/// `ngx.<var>`; the read-only `kong.configuration.<key>` namespace
/// (kong/runloop/wasm.lua) shows kong.conf, here only the `shm_kv` zone
/// (`nginx_wasm_shm_kv_<zone>`, the dynamic key that defines it). Envoy:
/// `plugin_name`, `plugin_root_id`, `plugin_vm_id`. Kong also answers
/// `plugin_name` (the filter's name) and `plugin_root_id` ("0": the getter of
/// ngx_proxy_wasm_properties.c formats an unset `pwctx->root_id`;
/// t/03-proxy_wasm/hfuncs/117-proxy_properties_get.t TEST 17 expects
/// `plugin_root_id: 0`), in every context.
fn default_properties(
    profile: Profile,
    upstream: &str,
    zone: Option<&str>,
    filter_name: &str,
) -> Vec<(Vec<String>, Option<Vec<u8>>)> {
    let p = |path: &[&str], v: &str| {
        (
            path.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            Some(v.as_bytes().to_vec()),
        )
    };
    match profile {
        Profile::Kong => {
            let (host, port) = match upstream.rsplit_once(':') {
                Some((h, port)) => (h.to_string(), port.parse::<u16>().unwrap_or(80)),
                None => (upstream.to_string(), 80),
            };
            let service = serde_json::json!({
                "id": "5f1c2bcd-0000-4000-8000-000000000002",
                "name": "test-service",
                "host": host,
                "port": port,
                "protocol": "http",
                "path": null,
                "retries": 5,
                "connect_timeout": 60000,
                "read_timeout": 60000,
                "write_timeout": 60000,
            });
            let route = serde_json::json!({
                "id": "5f1c2bcd-0000-4000-8000-000000000001",
                "name": "test-route",
                "paths": ["/"],
                "service": {"id": "5f1c2bcd-0000-4000-8000-000000000002"},
            });
            let mut props = vec![
                p(&["plugin_name"], filter_name),
                p(&["plugin_root_id"], "0"),
                p(&["ngx", "hostname"], "kong-test-host"),
                p(
                    &["kong", "route_id"],
                    "5f1c2bcd-0000-4000-8000-000000000001",
                ),
                p(
                    &["kong", "service_id"],
                    "5f1c2bcd-0000-4000-8000-000000000002",
                ),
                p(&["kong", "route_name"], "test-route"),
                p(&["kong", "service_name"], "test-service"),
                p(&["kong", "router", "route"], &route.to_string()),
                p(&["kong", "router", "service"], &service.to_string()),
            ];
            if let Some(zone) = zone {
                let key = format!("nginx_wasm_shm_kv_{zone}");
                props.push(p(&["kong", "configuration", &key], "4m"));
            }
            props
        }
        Profile::Envoy => vec![
            p(&["plugin_name"], "filter"),
            p(&["plugin_root_id"], ""),
            p(&["plugin_vm_id"], ""),
        ],
    }
}

impl Gateway {
    /// Starts building a gateway for `module` under `profile`.
    pub fn builder(profile: Profile, module: &WasmModule) -> GatewayBuilder {
        GatewayBuilder {
            settings: Settings {
                profile,
                filter_name: module
                    .name()
                    .strip_suffix(".wasm")
                    .unwrap_or(module.name())
                    .to_string(),
                plugin_config: Vec::new(),
                vm_config: Vec::new(),
                properties: Vec::new(),
                clusters: Vec::new(),
                upstream: "127.0.0.1:8080".to_string(),
                shared_data_zone: true,
                shared_data_zone_name: "kong_retry".to_string(),
                body_buffer_size: 8192,
                fuel_per_callback: 200_000_000,
                memory_limit_bytes: 256 << 20,
                log_level: LogLevel::Trace,
                seed: 0,
                proxy_timeout_ms: profile.default_proxy_timeout_ms(),
            },
            module: module.clone(),
            workers: 1,
        }
    }
}
