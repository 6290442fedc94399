//! Logging imports: `proxy_log` and the level filters should log at.

use super::guest::{counted, counted_log, read, return_value, text, C, R};
use super::state::WorkerState;
use crate::abi::status;
use crate::gateway::LogLevel;
use wasmtime::Linker;

pub(super) fn define(linker: &mut Linker<WorkerState>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: i32, p: i32, n: i32| -> R<i32> {
            counted_log(&mut c)?;
            let Some(msg) = read(&mut c, p, n) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            c.data().log(LogLevel::from_raw(level), text(&msg));
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> R<i32> {
            counted(&mut c)?;
            let level = c.data().settings.log_level as u32;
            return_value(&mut c, ret, &level.to_le_bytes())
        },
    )?;
    Ok(())
}
