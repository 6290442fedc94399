//! WASI preview1, implemented here: stdout/stderr as log lines, the fake
//! clock, a seeded random source, and stubs for the rest of what std imports.

use super::guest::{read, write, write_u32, C, R};
use super::state::WorkerState;
use crate::gateway::LogLevel;
use wasmtime::Linker;

pub(super) const WASI_ESUCCESS: i32 = 0;
pub(super) const WASI_EBADF: i32 = 8;
pub(super) const WASI_EINVAL: i32 = 28;
pub(super) const WASI_ENOSYS: i32 = 52;

/// Writes a value at `ptr` and returns the errno the guest sees.
fn wasi_return_value(c: &mut C<'_>, ptr: i32, bytes: &[u8]) -> R<i32> {
    Ok(if write(c, ptr, bytes) {
        WASI_ESUCCESS
    } else {
        WASI_EINVAL
    })
}

impl WorkerState {
    pub(super) fn flush_output(&mut self, force: bool) {
        for stderr in [false, true] {
            let buf = if stderr {
                &mut self.stderr
            } else {
                &mut self.stdout
            };
            let mut lines = Vec::new();
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            if force && !buf.is_empty() {
                lines.push(String::from_utf8_lossy(buf).into_owned());
                buf.clear();
            }
            let level = if stderr {
                LogLevel::Error
            } else {
                LogLevel::Info
            };
            for line in lines {
                self.log(level, line);
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic per seed and worker.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// WASI preview1: the calls Rust's std makes on wasm32-wasip1; anything else
/// the module imports returns ENOSYS so that it still loads.
pub(super) fn define(linker: &mut Linker<WorkerState>) -> R<()> {
    const M: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        M,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, ret: i32| -> R<i32> {
            let mut out = Vec::new();
            for i in 0..n.max(0) {
                let Some(iov) = read(&mut c, iovs.wrapping_add(i * 8), 8) else {
                    return Ok(WASI_EINVAL);
                };
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let Some(bytes) = read(&mut c, ptr, len) else {
                    return Ok(WASI_EINVAL);
                };
                out.extend_from_slice(&bytes);
            }
            let written = out.len() as u32;
            {
                let s = c.data_mut();
                match fd {
                    1 => s.stdout.extend_from_slice(&out),
                    2 => s.stderr.extend_from_slice(&out),
                    _ => return Ok(WASI_EBADF),
                }
                s.flush_output(false);
            }
            wasi_return_value(&mut c, ret, &written.to_le_bytes())
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(M, name, |mut c: C<'_>, count: i32, size: i32| -> R<i32> {
            if !write_u32(&mut c, count, 0) || !write_u32(&mut c, size, 0) {
                return Ok(WASI_EINVAL);
            }
            Ok(WASI_ESUCCESS)
        })?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(M, name, |_: C<'_>, _a: i32, _b: i32| -> R<i32> {
            Ok(WASI_ESUCCESS)
        })?;
    }
    linker.func_wrap(
        M,
        "clock_time_get",
        |mut c: C<'_>, _id: i32, _prec: i64, ret: i32| -> R<i32> {
            let ns = c.data().now_ns();
            if !write(&mut c, ret, &ns.to_le_bytes()) {
                return Ok(WASI_EINVAL);
            }
            Ok(WASI_ESUCCESS)
        },
    )?;
    linker.func_wrap(
        M,
        "random_get",
        |mut c: C<'_>, buf: i32, len: i32| -> R<i32> {
            let len = len as u32 as usize;
            let mut bytes = Vec::with_capacity(len);
            while bytes.len() < len {
                let r = c.data_mut().next_random();
                bytes.extend_from_slice(&r.to_le_bytes());
            }
            bytes.truncate(len);
            wasi_return_value(&mut c, buf, &bytes)
        },
    )?;
    linker.func_wrap(M, "proc_exit", |_: C<'_>, code: i32| -> R<()> {
        Err(wasmtime::Error::msg(format!("proc_exit({code})")))
    })?;
    linker.func_wrap(M, "sched_yield", |_: C<'_>| -> R<i32> { Ok(WASI_ESUCCESS) })?;
    linker.func_wrap(M, "fd_close", |_: C<'_>, _fd: i32| -> R<i32> {
        Ok(WASI_EBADF)
    })?;
    linker.func_wrap(
        M,
        "fd_seek",
        |_: C<'_>, _fd: i32, _off: i64, _wh: i32, _ret: i32| -> R<i32> { Ok(WASI_EBADF) },
    )?;
    linker.func_wrap(
        M,
        "fd_prestat_get",
        |_: C<'_>, _fd: i32, _ret: i32| -> R<i32> { Ok(WASI_EBADF) },
    )?;
    linker.func_wrap(
        M,
        "fd_prestat_dir_name",
        |_: C<'_>, _fd: i32, _p: i32, _n: i32| -> R<i32> { Ok(WASI_EBADF) },
    )?;
    linker.func_wrap(
        M,
        "fd_fdstat_get",
        |mut c: C<'_>, fd: i32, ret: i32| -> R<i32> {
            if !(0..=2).contains(&fd) {
                return Ok(WASI_EBADF);
            }
            // fdstat: filetype u8 (2 = character device), flags u16, rights u64 × 2.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            wasi_return_value(&mut c, ret, &stat)
        },
    )?;
    Ok(())
}
