//! `cargo run -p kong-retry-demo`: the README's demo (see `lib.rs`). Exit status 1 when the
//! filter did not behave as expected, 2 when the demo could not run.
//!
//! Runs `dist/kong_retry.wasm` (or `$KONG_RETRY_WASM`); builds the filter when dist is missing.

use std::process::ExitCode;

fn main() -> ExitCode {
    let (module, label) = match kong_retry_demo::load_filter(true) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("demo: cannot load the filter: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match kong_retry_demo::run(&module, &label, &mut out) {
        Ok(run) if run.ok() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(2)
        }
    }
}
