//! The `log` facade and the panic hook, both writing through the raw `proxy_log`.
//!
//! The SDK's logger unwraps the host's status; ours drops an error instead (a log line that
//! cannot be written must not become a trap).
//!
//! The level is fixed at `info`: the filter cannot ask the host for it. Kong's
//! ngx_wasm_module declares `proxy_get_log_level` as `(i32, i32) -> i32` and does not
//! implement it (calling it traps), while the SDK's signature is `(i32) -> i32`, so merely
//! importing it fails instantiation on Kong; and Envoy refuses any host call made while the
//! module starts (`_initialize`), where a logger is installed. The host filters below its
//! own level anyway.

use super::abi;

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => 0,
            log::Level::Debug => 1,
            log::Level::Info => 2,
            log::Level::Warn => 3,
            log::Level::Error => 4,
        };
        abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs the logger at `info` and a panic hook that logs at critical: a panic aborts the
/// VM, and the log line is all an operator will have. Makes no host call: it runs while the
/// module starts, when Envoy allows none.
pub fn install() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    std::panic::set_hook(Box::new(|info| {
        abi::log(5, &format!("kong_retry: panic (filter bug): {info}"));
    }));
}
