//! A proxy-wasm test host: runs a real filter `.wasm` on wasmtime under the rules
//! of Kong's ngx_wasm_module or of Envoy, with stateful fakes (upstreams, clock,
//! shared data, metrics, logs) that tests drive and inspect.
//!
//! Test and lab infrastructure only: this is not a gateway to deploy.

// `build` needs nothing but std; the host itself (wasmtime, tokio, hyper) is the `runtime`
// feature (on by default), so that a build that only builds modules (the lab's short run,
// ./demo.sh) does not compile wasmtime.
#[cfg(feature = "runtime")]
mod abi;
pub mod build;
#[cfg(feature = "runtime")]
mod gateway;
#[cfg(feature = "runtime")]
mod host_imports;
#[cfg(feature = "runtime")]
mod http;
#[cfg(feature = "runtime")]
pub mod live;
#[cfg(feature = "runtime")]
mod module;
#[cfg(feature = "runtime")]
mod profile;
#[cfg(feature = "runtime")]
mod worker;

#[cfg(feature = "runtime")]
pub use gateway::{Exchange, Gateway, GatewayBuilder, LogEntry, LogLevel, RequestStats, Trap};
#[cfg(feature = "runtime")]
pub use http::{
    CallId, CallKind, ClientResponse, Failure, Reply, Request, RequestId, Source, UpstreamCall,
};
#[cfg(feature = "runtime")]
pub use module::WasmModule;
#[cfg(feature = "runtime")]
pub use profile::Profile;

/// Errors of the host itself (bad module, failed configuration, stuck driver).
#[cfg(feature = "runtime")]
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The module could not be read, compiled or instantiated.
    #[error("cannot load module: {0}")]
    Load(String),
    /// The module does not export the proxy-wasm ABI the host implements.
    #[error("module does not implement proxy-wasm ABI 0.2.x: {0}")]
    Abi(String),
    /// `_initialize`/`_start` or a root-context callback trapped.
    #[error("module trapped during start-up of worker {worker} in {phase}: {message}")]
    StartTrap {
        worker: usize,
        /// The callback that trapped, e.g. `_initialize` or `on_configure`.
        phase: &'static str,
        message: String,
    },
    /// `proxy_on_vm_start` returned false.
    #[error("on_vm_start returned false (logs: {logs:?})")]
    VmStart { logs: Vec<String> },
    /// `proxy_on_configure` returned false.
    #[error("on_configure returned false (logs: {logs:?})")]
    Configure { logs: Vec<String> },
    /// A call id that is not pending was answered.
    #[error("call {0:?} is not pending")]
    UnknownCall(CallId),
    /// A worker index out of range.
    #[error("worker {index} does not exist (gateway has {workers})")]
    NoSuchWorker { index: usize, workers: usize },
    /// The driver gave up: nothing pending, no timer to advance to, no response.
    #[error("request {request:?} is stuck after {steps} steps: {reason}")]
    Stuck {
        request: RequestId,
        steps: usize,
        reason: String,
    },
    /// Kong: the request can never be answered, because the worker it was sent
    /// to exited at start-up and nginx does not respawn it (the real host accepts
    /// the connection and the client waits until it gives up).
    #[error("request {request:?} hangs: {reason}")]
    Hung { request: RequestId, reason: String },
    /// Live mode: socket or runtime failure.
    #[error("live mode: {0}")]
    Live(String),
}
