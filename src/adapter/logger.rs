//! The `log` facade and the panic hook, both writing through the raw `proxy_log`.
//!
//! The SDK's logger unwraps the host's status; ours drops an error instead (a log line that
//! cannot be written must not become a trap).

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

/// Installs the logger (info; Envoy refuses any host call during `_initialize`, so the
/// host's level is not asked here) and a panic hook that logs at critical: a panic aborts
/// the VM, and the log line is all an operator will have.
pub fn install() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    std::panic::set_hook(Box::new(|info| {
        abi::log(5, &format!("kong_retry: panic (filter bug): {info}"));
    }));
}
