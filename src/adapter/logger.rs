//! The `log` facade and the panic hook, both writing through the raw `proxy_log`.
//!
//! The SDK's logger unwraps the host's status; ours drops an error instead (a log line that
//! cannot be written must not become a trap).

use super::abi;

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_log_level(ret: *mut u32) -> u32;
}

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

/// Installs the logger (level from the host when it tells) and a panic hook that logs at
/// critical: a panic aborts the VM, and the log line is all an operator will have.
pub fn install() {
    let _ = log::set_logger(&LOGGER);
    let mut level = 2u32;
    // SAFETY: `level` is a valid out-pointer.
    let ok = unsafe { proxy_get_log_level(&mut level) } == 0;
    log::set_max_level(match (ok, level) {
        (true, 0) => log::LevelFilter::Trace,
        (true, 1) => log::LevelFilter::Debug,
        (true, 3) => log::LevelFilter::Warn,
        (true, 4 | 5) => log::LevelFilter::Error,
        _ => log::LevelFilter::Info,
    });
    std::panic::set_hook(Box::new(|info| {
        abi::log(5, &format!("kong_retry: panic (filter bug): {info}"));
    }));
}
