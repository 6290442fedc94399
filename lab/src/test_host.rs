//! The rows on the test host's live mode under Kong's rules (feature `kong-rows`): a
//! trivial filter, kong_retry dispatch, adaptive; behind a forwarder standing for the
//! Kubernetes Service, with the delay server Kong's backoff dispatches to.

use crate::delay::DelayServer;
use crate::forwarder::Forwarder;
use crate::gateways::{filter_config, is_retry_counter, Modules, Row, WORKERS};
use crate::{err, LabError};
use proxy_wasm_test_host::live::{LiveGateway, LiveOptions};
use proxy_wasm_test_host::{Gateway, Profile, WasmModule};
use serde_json::Value;
use std::net::SocketAddr;

/// A running test-host gateway and what it needs around it.
pub struct HostGateway {
    gateway: LiveGateway,
    _service: Forwarder,
    _delay: DelayServer,
}

impl HostGateway {
    /// Starts the test-host `row` in front of `upstreams`.
    pub fn start(row: Row, upstreams: &[SocketAddr], m: &Modules) -> Result<HostGateway, LabError> {
        let (module, mode) = match row {
            Row::KongPlain => (&m.trivial, None),
            Row::KongDispatch => (&m.filter, Some("dispatch")),
            Row::KongAdaptive => (&m.filter, Some("adaptive")),
            envoy_row => {
                return Err(err(format!(
                    "{} does not run on the test host",
                    envoy_row.label()
                )))
            }
        };
        let service = Forwarder::start(upstreams.to_vec())?;
        let wasm = WasmModule::from_file(module)
            .map_err(|e| err(format!("loading {}: {e}", module.display())))?;
        let target = service.addr().to_string();
        let delay = DelayServer::start()?;
        let cfg = match mode {
            Some(mode) => {
                let mut c = filter_config(mode, &target);
                c["delay_endpoint"] = Value::from(delay.addr().to_string());
                c.to_string()
            }
            None => "{}".into(),
        };
        let builder = Gateway::builder(Profile::Kong, &wasm)
            .plugin_config(cfg)
            .workers(WORKERS as usize)
            .upstream(&target)
            .log_level(proxy_wasm_test_host::LogLevel::Warn);
        let gateway = LiveGateway::start(builder, LiveOptions::default())
            .map_err(|e| err(format!("test host: {e}")))?;
        Ok(HostGateway {
            gateway,
            _service: service,
            _delay: delay,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway.addr()
    }

    /// The filter's `kong_retry_retries_total`.
    pub fn retries(&self) -> u64 {
        self.gateway
            .with_gateway(|g| g.metric("kong_retry_retries_total"))
            .unwrap_or(0)
    }

    /// The filter's retry counters.
    pub fn counters(&self) -> Vec<(String, u64)> {
        self.gateway.with_gateway(|g| {
            g.metrics()
                .into_iter()
                .filter(|(n, v)| is_retry_counter(n) && *v > 0)
                .collect()
        })
    }

    /// The traps the test host saw.
    pub fn filter_errors(&self) -> Vec<String> {
        self.gateway
            .with_gateway(|g| g.traps().iter().map(|t| format!("{t:?}")).collect())
    }
}
