//! Shared-data imports: the node-wide key/value store with cas, under the
//! profile's zone and cas rules.

use super::guest::{counted, host_trap, read, return_bytes, text, write_u32, C, R};
use super::state::WorkerState;
use crate::abi::status;
use crate::profile::SharedWrite;
use wasmtime::Linker;

pub(super) fn define(linker: &mut Linker<WorkerState>) -> R<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: i32, kn: i32, rp: i32, rs: i32, rcas: i32| -> R<i32> {
            counted(&mut c)?;
            c.data_mut().stats.shared_data_gets += 1;
            let Some(key) = read(&mut c, kp, kn) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let state = c.data();
            if let Some(msg) = state
                .profile()
                .shared_data_trap(state.settings.shared_data_zone, true)
            {
                return Err(host_trap(msg));
            }
            let found = state.node().shared_data.get(&text(&key)).cloned();
            match found {
                None => Ok(status::NOT_FOUND),
                Some((value, cas)) => {
                    let st = return_bytes(&mut c, &value, rp, rs)?;
                    if st == status::OK && !write_u32(&mut c, rcas, cas) {
                        return Ok(status::INVALID_MEMORY_ACCESS);
                    }
                    Ok(st)
                }
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C<'_>, kp: i32, kn: i32, vp: i32, vn: i32, cas: i32| -> R<i32> {
            counted(&mut c)?;
            c.data_mut().stats.shared_data_sets += 1;
            let (Some(key), Some(value)) = (read(&mut c, kp, kn), read(&mut c, vp, vn)) else {
                return Ok(status::INVALID_MEMORY_ACCESS);
            };
            let state = c.data();
            let profile = state.profile();
            if let Some(msg) = profile.shared_data_trap(state.settings.shared_data_zone, false) {
                return Err(host_trap(msg));
            }
            let key = text(&key);
            let mut node = state.node();
            let current = node.shared_data.get(&key).map(|(_, c)| *c);
            match profile.shared_data_write(current, cas as u32, vp == 0 && value.is_empty()) {
                SharedWrite::Refuse => return Ok(status::CAS_MISMATCH),
                SharedWrite::Delete => {
                    node.shared_data.remove(&key);
                }
                SharedWrite::Put => node.put_shared_data(key, value),
            }
            Ok(status::OK)
        },
    )?;
    Ok(())
}
