//! What every Envoy test shares: the three modes, a rig (one Envoy with the filter in a
//! mode, one upstream), and running one scenario in all modes at once.

use kong_retry_harness::client::{ClientError, Request, Response};
use kong_retry_harness::envoy::{Bootstrap, Envoy, WasmFilter};
use kong_retry_harness::prometheus::Metrics;
use kong_retry_harness::upstream::{Call, Upstream};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// The filter modes every scenario runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Response,
    Dispatch,
    Adaptive,
}

pub const MODES: [Mode; 3] = [Mode::Response, Mode::Dispatch, Mode::Adaptive];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Response => "response",
            Mode::Dispatch => "dispatch",
            Mode::Adaptive => "adaptive",
        }
    }
}

/// The filter built from this checkout, once per test process.
pub fn filter_wasm() -> std::path::PathBuf {
    static WASM: OnceLock<Result<std::path::PathBuf, String>> = OnceLock::new();
    match WASM.get_or_init(|| kong_retry_harness::wasm::filter().map_err(|e| e.to_string())) {
        Ok(p) => p.clone(),
        Err(e) => panic!("cannot build the filter: {e}"),
    }
}

/// The config every scenario starts from, with `extra` merged over it.
pub fn config(mode: Mode, extra: &Value) -> Value {
    let mut c = json!({
        "mode": mode.name(),
        "upstream": "backend",
        "retries": 2,
        "retry_on": "502,503,504,connect-failure,timeout,reset",
        "per_try_timeout": 2000,
        "deadline": 9000,
        "backoff": { "strategy": "fixed", "interval": 10 },
    });
    if let (Some(base), Some(over)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in over {
            base.insert(k.clone(), v.clone());
        }
    }
    c
}

/// One Envoy with the filter in one mode, in front of one upstream.
pub struct Rig {
    pub mode: Mode,
    pub upstream: Upstream,
    pub envoy: Envoy,
    /// Requests this rig sent before the scenario (adaptive: the one that armed protection).
    pub primed: u64,
}

impl Rig {
    /// Starts with `extra` merged into the config; `tweak` may change the bootstrap.
    pub fn start_with(mode: Mode, extra: Value, tweak: impl FnOnce(&mut Bootstrap)) -> Rig {
        let upstream = Upstream::start().unwrap_or_else(|e| panic!("{e}"));
        let cfg = config(mode, &extra).to_string();
        let mut b =
            Bootstrap::new(&[upstream.addr()]).filter(WasmFilter::kong_retry(&filter_wasm(), &cfg));
        tweak(&mut b);
        let envoy = Envoy::start(&b).unwrap_or_else(|e| panic!("{e}"));
        let mut rig = Rig {
            mode,
            upstream,
            envoy,
            primed: 0,
        };
        if mode == Mode::Adaptive {
            rig.arm_protection();
        }
        rig
    }

    pub fn start(mode: Mode, extra: Value) -> Rig {
        Self::start_with(mode, extra, |_| {})
    }

    /// Adaptive mode starts calm (native, no retries); one failing response protects the
    /// upstream for `adaptive.window`, and the scenarios then see retries.
    fn arm_protection(&mut self) {
        let r = self
            .send(&Request::get("/arm?id=arm&plan=503"))
            .unwrap_or_else(|e| panic!("adaptive: arming request: {e}"));
        assert_eq!(
            r.status, 503,
            "adaptive: the calm request goes natively, once"
        );
        self.primed = 1;
        let calls = self.calls("arm");
        assert_eq!(calls.len(), 1, "adaptive: the calm request is not retried");
    }

    pub fn send(&self, req: &Request) -> Result<Response, ClientError> {
        self.envoy.send(req)
    }

    /// Sends `req`, panicking (with the mode) when no whole response comes.
    pub fn ok(&self, req: &Request) -> Response {
        self.envoy.send(req).unwrap_or_else(|e| {
            panic!(
                "{}: {} {}: {e}; log {}",
                self.mode.name(),
                req.method,
                req.path,
                self.envoy.log_path().display()
            )
        })
    }

    pub fn calls(&self, id: &str) -> Vec<Call> {
        self.upstream.calls(id).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn metrics(&self) -> Metrics {
        self.envoy.metrics().unwrap_or_else(|e| panic!("{e}"))
    }

    /// No wasm error line in Envoy's log.
    pub fn assert_clean(&self) {
        if let Err(e) = self.envoy.check_wasm_clean() {
            panic!("{}: {e}", self.mode.name());
        }
    }
}

/// Runs `scenario` in every mode at once (one thread, Envoy and upstream each) and fails
/// naming each mode that failed.
pub fn in_every_mode(scenario: impl Fn(Mode) + Sync) {
    in_modes(&MODES, scenario)
}

pub fn in_modes(modes: &[Mode], scenario: impl Fn(Mode) + Sync) {
    let scenario = &scenario;
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = modes
            .iter()
            .map(|&m| (m, s.spawn(move || scenario(m))))
            .collect();
        handles
            .into_iter()
            .filter_map(|(m, h)| {
                h.join().err().map(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("[{} mode] {msg}", m.name())
                })
            })
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
