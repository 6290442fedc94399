//! Time imports: the fake clock as wall-clock time, and the tick period.

use super::guest::{counted, plain_trap, return_value, C, R};
use super::state::WorkerState;
use super::ROOT_ID;
use crate::abi::status;
use wasmtime::Linker;

/// Milliseconds added to the fake clock for `get_current_time`, so filters see
/// a plausible wall-clock time (2023-11-14T22:13:20Z at `now_ms() == 0`).
pub(super) const EPOCH_MS: u64 = 1_700_000_000_000;

impl WorkerState {
    /// The fake clock as nanoseconds since the epoch.
    pub(super) fn now_ns(&self) -> u64 {
        (EPOCH_MS + self.node().now_ms) * 1_000_000
    }
}

pub(super) fn define(linker: &mut Linker<WorkerState>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> R<i32> {
            counted(&mut c)?;
            let ns = c.data().now_ns();
            return_value(&mut c, ret, &ns.to_le_bytes())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: i32| -> R<i32> {
            counted(&mut c)?;
            let s = c.data_mut();
            let from_root = s.active == ROOT_ID;
            s.profile()
                .tick_period_rule(from_root, s.tick_period_ms.is_some(), period as u32)
                .map_err(plain_trap)?;
            let period = u64::from(period as u32);
            s.tick_period_ms = if period == 0 { None } else { Some(period) };
            s.tick_changed = true;
            Ok(status::OK)
        },
    )?;
    Ok(())
}
