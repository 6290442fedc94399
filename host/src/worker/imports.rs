//! Links every import: the proxy-wasm groups, WASI, and stubs for anything
//! else the module imports.

use super::guest::{plain_trap, R};
use super::state::WorkerState;
use super::wasi::WASI_ENOSYS;
use super::{
    buffers, dispatch, headers, log, metrics, properties, shared_data, stream_control, time, wasi,
};
use crate::abi::status;
use wasmtime::{ExternType, Linker, Store, Val, ValType};

/// Links the host's imports and stubs for the rest of `module`'s.
pub(super) fn link(
    linker: &mut Linker<WorkerState>,
    module: &wasmtime::Module,
    store: &mut Store<WorkerState>,
) -> R<()> {
    log::define(linker)?;
    time::define(linker)?;
    stream_control::define(linker)?;
    headers::define(linker)?;
    buffers::define(linker)?;
    dispatch::define(linker)?;
    shared_data::define(linker)?;
    properties::define(linker)?;
    metrics::define(linker)?;
    wasi::define(linker)?;
    define_not_implemented(linker, module, store)?;
    define_unknown_imports(linker, module, store)
}

/// Links the functions the real host declares but does not implement (Kong:
/// `ngx_proxy_wasm_hfuncs_nop`) with the host's type, over the test host's own
/// implementation: calling one traps as on the real host
/// (src/wasm/vm/ngx_wavm_host.c: `NGX_WAVM_NYI` → "host trap (function not yet
/// implemented): <name>").
fn define_not_implemented(
    linker: &mut Linker<WorkerState>,
    module: &wasmtime::Module,
    store: &mut Store<WorkerState>,
) -> R<()> {
    let profile = store.data().profile();
    let abi_0_2_1 = module
        .exports()
        .any(|e| e.name() == "proxy_abi_version_0_2_1");
    let engine = linker.engine().clone();
    linker.allow_shadowing(true);
    for import in module.imports() {
        if import.module() != "env" {
            continue;
        }
        let Some(host) = profile.host_function(import.name(), abi_0_2_1) else {
            continue;
        };
        if !host.nyi {
            continue;
        }
        let message = format!(
            "host trap (function not yet implemented): {}",
            import.name()
        );
        linker.func_new(
            "env",
            import.name(),
            host.func_type(&engine),
            move |mut c, _args, _out| {
                c.data_mut().stats.host_calls += 1;
                Err(plain_trap(&message))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// Links every import the host does not implement: WASI ones return ENOSYS,
/// proxy-wasm ones return Unimplemented; other signatures trap when called.
fn define_unknown_imports(
    linker: &mut Linker<WorkerState>,
    module: &wasmtime::Module,
    store: &mut Store<WorkerState>,
) -> R<()> {
    for import in module.imports() {
        if linker.get_by_import(&mut *store, &import).is_some() {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let results: Vec<ValType> = ty.results().collect();
        let code = if import.module() == "wasi_snapshot_preview1" {
            WASI_ENOSYS
        } else {
            status::UNIMPLEMENTED
        };
        let what = format!("{}::{}", import.module(), import.name());
        let returns_i32 = results.len() == 1 && matches!(results[0], ValType::I32);
        let no_results = results.is_empty();
        linker.func_new(
            import.module(),
            import.name(),
            ty.clone(),
            move |mut c, _args, out| {
                c.data_mut().stats.host_calls += 1;
                if returns_i32 {
                    out[0] = Val::I32(code);
                    Ok(())
                } else if no_results {
                    Ok(())
                } else {
                    Err(wasmtime::Error::msg(format!("unimplemented import {what}")))
                }
            },
        )?;
    }
    Ok(())
}
