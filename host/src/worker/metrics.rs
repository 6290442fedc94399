//! Metric imports: counters, gauges and histograms shared by all workers of
//! the node.

use super::guest::{counted, read, return_value, text, C, R};
use super::state::WorkerState;
use crate::abi::status;
use wasmtime::Linker;

pub(super) fn define(linker: &mut Linker<WorkerState>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, np: i32, nn: i32, ret: i32| -> R<i32> {
            counted(&mut c)?;
            let Some(name) = read(&mut c, np, nn) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            if !(0..=2).contains(&kind) {
                return Ok(status::BAD_ARGUMENT);
            }
            let id = c.data().node().define_metric(&text(&name), kind as u32);
            return_value(&mut c, ret, &id.to_le_bytes())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: C<'_>, id: i32, offset: i64| -> R<i32> {
            counted(&mut c)?;
            let mut node = c.data().node();
            let Some(m) = node.metrics.get_mut(id as u32 as usize) else {
                return Ok(status::NOT_FOUND);
            };
            if m.kind == 0 && offset < 0 {
                return Ok(status::BAD_ARGUMENT);
            }
            m.value = m.value.saturating_add_signed(offset);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: C<'_>, id: i32, value: i64| -> R<i32> {
            counted(&mut c)?;
            let mut node = c.data().node();
            let Some(m) = node.metrics.get_mut(id as u32 as usize) else {
                return Ok(status::NOT_FOUND);
            };
            m.value = value as u64;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> R<i32> {
            counted(&mut c)?;
            let value = c
                .data()
                .node()
                .metrics
                .get(id as u32 as usize)
                .map(|m| m.value);
            let Some(value) = value else {
                return Ok(status::NOT_FOUND);
            };
            return_value(&mut c, ret, &value.to_le_bytes())
        },
    )?;
    Ok(())
}
