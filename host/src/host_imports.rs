//! The host functions each real host links into a module, with the signature it
//! declares for them: a module importing another name, or a name with another
//! type, does not instantiate on that host, and a function the host declares but
//! does not implement traps when called.
//!
//! Kong: ngx_wasm_module 3bed278 src/common/proxy_wasm/ngx_proxy_wasm_host.c,
//! the `ngx_proxy_wasm_hfuncs[]` table (argument arities `ngx_wavm_arity_*`,
//! every result `ngx_wavm_arity_i32`, `ngx_proxy_wasm_hfuncs_nop` = NYI), plus
//! `ngx_log` of src/wasm/ngx_wasm_core_host.c (the VM's core host, consulted
//! second by `ngx_wavm_module_link`). WASI is linked by Wasmtime itself
//! (`wasmtime_linker_define_wasi`, src/wasm/wrt/ngx_wrt_wasmtime.c): every
//! preview-1 name exists, so WASI imports are not checked here.
//!
//! Envoy: proxy-wasm-cpp-host include/proxy-wasm/exports.h (`FOR_ALL_HOST_FUNCTIONS`,
//! `FOR_ALL_WASI_FUNCTIONS`, the signatures of `exports::*`, `Word` = i32 on
//! wasm32) as registered by src/wasm.cc `WasmBase::registerCallbacks`, and the
//! import check of src/v8/v8.cc `V8::link`.

use crate::profile::Profile;
use wasmtime::{FuncType, ValType};

/// A value type in a host function's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum V {
    I32,
    I64,
}

use V::{I32, I64};

/// One host function as a real host declares it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostFunc {
    pub name: &'static str,
    pub params: &'static [V],
    pub results: &'static [V],
    /// Declared but not implemented (Kong: `ngx_proxy_wasm_hfuncs_nop`): calling it traps.
    pub nyi: bool,
}

const fn f(name: &'static str, params: &'static [V]) -> HostFunc {
    HostFunc {
        name,
        params,
        results: &[I32],
        nyi: false,
    }
}

const fn nyi(name: &'static str, params: &'static [V]) -> HostFunc {
    HostFunc {
        name,
        params,
        results: &[I32],
        nyi: true,
    }
}

const A0: &[V] = &[];
const A1: &[V] = &[I32];
const A2: &[V] = &[I32, I32];
const A3: &[V] = &[I32, I32, I32];
const A4: &[V] = &[I32, I32, I32, I32];
const A5: &[V] = &[I32, I32, I32, I32, I32];
const A6: &[V] = &[I32, I32, I32, I32, I32, I32];
const A8: &[V] = &[I32, I32, I32, I32, I32, I32, I32, I32];
const A9: &[V] = &[I32, I32, I32, I32, I32, I32, I32, I32, I32];
const A10: &[V] = &[I32, I32, I32, I32, I32, I32, I32, I32, I32, I32];
const A12: &[V] = &[I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32];
const I32_I64: &[V] = &[I32, I64];

/// ngx_wasm_module 3bed278 `ngx_proxy_wasm_hfuncs[]`, in table order, then the core host.
const KONG: &[HostFunc] = &[
    f("proxy_log", A3),
    nyi("proxy_get_log_level", A2),
    f("proxy_get_current_time_nanoseconds", A1),
    f("proxy_set_effective_context", A1),
    nyi("proxy_context_finalize", A0),
    nyi("proxy_done", A0),
    nyi("proxy_create_timer", A3),
    nyi("proxy_delete_timer", A1),
    f("proxy_set_tick_period_milliseconds", A1),
    f("proxy_get_buffer", A5),
    f("proxy_get_buffer_bytes", A5),
    f("proxy_set_buffer", A5),
    f("proxy_set_buffer_bytes", A5),
    nyi("proxy_get_map_values", A5),
    f("proxy_get_header_map_pairs", A3),
    f("proxy_get_header_map_value", A5),
    nyi("proxy_set_map_values", A5),
    f("proxy_set_header_map_pairs", A3),
    f("proxy_add_header_map_value", A5),
    f("proxy_replace_header_map_value", A5),
    f("proxy_remove_header_map_value", A3),
    f("proxy_get_property", A4),
    f("proxy_set_property", A4),
    nyi("proxy_resume_stream", A1),
    nyi("proxy_resume_downstream", A1),
    nyi("proxy_resume_upstream", A1),
    f("proxy_continue_stream", A1),
    nyi("proxy_close_stream", A1),
    nyi("proxy_resume_http_stream", A1),
    f("proxy_continue_request", A0),
    nyi("proxy_continue_response", A0),
    f("proxy_send_http_response", A8),
    f("proxy_send_local_response", A8),
    f("proxy_dispatch_http_call", A10),
    f("proxy_http_call", A10),
    nyi("proxy_dispatch_grpc_call", A12),
    nyi("proxy_grpc_call", A12),
    nyi("proxy_open_grpc_stream", A9),
    nyi("proxy_grpc_stream", A9),
    nyi("proxy_send_grpc_stream_message", A3),
    nyi("proxy_grpc_send", A4),
    nyi("proxy_cancel_grpc_call", A1),
    nyi("proxy_grpc_cancel", A1),
    nyi("proxy_close_grpc_call", A1),
    nyi("proxy_grpc_close", A1),
    nyi("proxy_get_status", A3),
    nyi("proxy_open_shared_kvstore", A4),
    nyi("proxy_get_shared_kvstore_key_values", A6),
    f("proxy_get_shared_data", A5),
    nyi("proxy_set_shared_kvstore_key_values", A6),
    f("proxy_set_shared_data", A5),
    nyi("proxy_add_shared_kvstore_key_values", A6),
    nyi("proxy_remove_shared_kvstore_key", A6),
    nyi("proxy_delete_shared_kvstore", A6),
    nyi("proxy_open_shared_queue", A4),
    f("proxy_register_shared_queue", A3),
    nyi("proxy_dequeue_shared_queue_item", A3),
    f("proxy_dequeue_shared_queue", A3),
    nyi("proxy_enqueue_shared_queue_item", A3),
    f("proxy_enqueue_shared_queue", A3),
    nyi("proxy_delete_shared_queue", A4),
    nyi("proxy_resolve_shared_queue", A5),
    nyi("proxy_create_metric", A4),
    f("proxy_define_metric", A4),
    nyi("proxy_get_metric_value", A2),
    f("proxy_get_metric", A2),
    nyi("proxy_set_metric_value", I32_I64),
    f("proxy_record_metric", I32_I64),
    nyi("proxy_increment_metric_value", I32_I64),
    f("proxy_increment_metric", I32_I64),
    nyi("proxy_delete_metric", A1),
    nyi("proxy_call_custom_function", A5),
    f("proxy_call_foreign_function", A6),
    f("proxy_get_configuration", A2),
    nyi("proxy_clear_route_cache", A0),
    // src/wasm/ngx_wasm_core_host.c
    HostFunc {
        name: "ngx_log",
        params: A3,
        results: &[],
        nyi: false,
    },
];

/// proxy-wasm-cpp-host `FOR_ALL_HOST_FUNCTIONS` (every ABI version).
const ENVOY: &[HostFunc] = &[
    f("proxy_log", A3),
    f("proxy_get_status", A3),
    f("proxy_set_property", A4),
    f("proxy_get_property", A4),
    f("proxy_send_local_response", A8),
    f("proxy_get_shared_data", A5),
    f("proxy_set_shared_data", A5),
    f("proxy_register_shared_queue", A3),
    f("proxy_resolve_shared_queue", A5),
    f("proxy_dequeue_shared_queue", A3),
    f("proxy_enqueue_shared_queue", A3),
    f("proxy_get_header_map_value", A5),
    f("proxy_add_header_map_value", A5),
    f("proxy_replace_header_map_value", A5),
    f("proxy_remove_header_map_value", A3),
    f("proxy_get_header_map_pairs", A3),
    f("proxy_set_header_map_pairs", A3),
    f("proxy_get_header_map_size", A2),
    f("proxy_get_buffer_status", A3),
    f("proxy_get_buffer_bytes", A5),
    f("proxy_set_buffer_bytes", A5),
    f("proxy_http_call", A10),
    f("proxy_grpc_call", A12),
    f("proxy_grpc_stream", A9),
    f("proxy_grpc_close", A1),
    f("proxy_grpc_cancel", A1),
    f("proxy_grpc_send", A4),
    f("proxy_set_tick_period_milliseconds", A1),
    f("proxy_get_current_time_nanoseconds", A1),
    f("proxy_define_metric", A4),
    f("proxy_increment_metric", I32_I64),
    f("proxy_record_metric", I32_I64),
    f("proxy_get_metric", A2),
    f("proxy_set_effective_context", A1),
    f("proxy_done", A0),
    f("proxy_call_foreign_function", A6),
    // src/wasm.cc registers these two for every module.
    f("pthread_equal", A2),
    HostFunc {
        name: "emscripten_notify_memory_growth",
        params: A1,
        results: &[],
        nyi: false,
    },
];

/// cpp-host src/wasm.cc: registered for ABI 0.2.0 and 0.2.1 only.
const ENVOY_0_2: &[HostFunc] = &[f("proxy_continue_stream", A1), f("proxy_close_stream", A1)];
/// cpp-host src/wasm.cc: registered for ABI 0.2.1 only.
const ENVOY_0_2_1: &[HostFunc] = &[f("proxy_get_log_level", A1)];

/// cpp-host `FOR_ALL_WASI_FUNCTIONS`, linked under `wasi_unstable` and
/// `wasi_snapshot_preview1` (names only: their signatures are WASI's own).
const ENVOY_WASI: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "clock_res_get",
    "fd_advise",
    "fd_allocate",
    "fd_datasync",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_pwrite",
    "fd_readdir",
    "fd_renumber",
    "fd_sync",
    "fd_tell",
    "path_create_directory",
    "path_filestat_set_times",
    "path_link",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
    "random_get",
    "sched_yield",
    "poll_oneoff",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "path_filestat_get",
    "fd_filestat_get",
];

/// Why a real host would refuse one of a module's imports.
#[derive(Debug, Clone)]
pub(crate) enum ImportError {
    /// No host function by that name.
    Missing { module: String, name: String },
    /// The name exists with another signature: `expected` is the module's
    /// import (parameter and result types as text), `found` the host's declaration.
    Mismatch {
        module: String,
        name: String,
        expected: Box<(Vec<&'static str>, Vec<&'static str>)>,
        found: HostFunc,
    },
}

impl Profile {
    /// The `env` function a real host declares under `name`, for a module of
    /// this ABI version (`abi_0_2_1`: exports `proxy_abi_version_0_2_1`).
    pub(crate) fn host_function(self, name: &str, abi_0_2_1: bool) -> Option<HostFunc> {
        let find = |t: &[HostFunc]| t.iter().copied().find(|h| h.name == name);
        match self {
            Profile::Kong => find(KONG),
            Profile::Envoy => find(ENVOY)
                .or_else(|| find(ENVOY_0_2))
                .or_else(|| find(ENVOY_0_2_1).filter(|_| abi_0_2_1)),
        }
    }

    /// Checks each function import of `module` against the host's table: the
    /// first one the real host would refuse.
    pub(crate) fn check_imports(self, module: &wasmtime::Module) -> Result<(), ImportError> {
        let abi_0_2_1 = module
            .exports()
            .any(|e| e.name() == "proxy_abi_version_0_2_1");
        for import in module.imports() {
            let wasmtime::ExternType::Func(ty) = import.ty() else {
                continue;
            };
            let (m, name) = (import.module(), import.name());
            let missing = || ImportError::Missing {
                module: m.to_string(),
                name: name.to_string(),
            };
            match (self, m) {
                (_, "env") => {
                    let host = self.host_function(name, abi_0_2_1).ok_or_else(missing)?;
                    if !host.matches(&ty) {
                        return Err(ImportError::Mismatch {
                            module: m.to_string(),
                            name: name.to_string(),
                            expected: Box::new((type_names(ty.params()), type_names(ty.results()))),
                            found: host,
                        });
                    }
                }
                (Profile::Envoy, "wasi_snapshot_preview1" | "wasi_unstable") => {
                    if !ENVOY_WASI.contains(&name) {
                        return Err(missing());
                    }
                }
                // Kong: Wasmtime links all of WASI preview 1 and ngx_wavm_module_link
                // skips every module but `env`.
                (Profile::Kong, _) => {}
                // cpp-host V8::link looks every function import up by module.name.
                (Profile::Envoy, _) => return Err(missing()),
            }
        }
        Ok(())
    }
}

impl HostFunc {
    fn matches(&self, ty: &FuncType) -> bool {
        let same = |mine: &[V], theirs: Vec<ValType>| {
            mine.len() == theirs.len()
                && mine.iter().zip(theirs.iter()).all(|(a, b)| match a {
                    I32 => matches!(b, ValType::I32),
                    I64 => matches!(b, ValType::I64),
                })
        };
        same(self.params, ty.params().collect()) && same(self.results, ty.results().collect())
    }

    /// The wasmtime type of this declaration.
    pub(crate) fn func_type(&self, engine: &wasmtime::Engine) -> FuncType {
        let vt = |v: &V| match v {
            I32 => ValType::I32,
            I64 => ValType::I64,
        };
        FuncType::new(
            engine,
            self.params.iter().map(vt),
            self.results.iter().map(vt),
        )
    }
}

/// `(func (param i32 i32) (result i32))`, as Wasmtime 26 prints a type in its
/// "types incompatible" error (the Kong log in issue #11).
pub(crate) fn wat_type(params: &[&str], results: &[&str]) -> String {
    let mut s = String::from("(func");
    if !params.is_empty() {
        s.push_str(&format!(" (param {})", params.join(" ")));
    }
    if !results.is_empty() {
        s.push_str(&format!(" (result {})", results.join(" ")));
    }
    s.push(')');
    s
}

/// The value types of a wasmtime function type as text (`i32`, `i64`, ...).
pub(crate) fn type_names(types: impl Iterator<Item = ValType>) -> Vec<&'static str> {
    types
        .map(|t| match t {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
            ValType::F32 => "f32",
            ValType::F64 => "f64",
            ValType::V128 => "v128",
            ValType::Ref(_) => "ref",
        })
        .collect()
}

/// A table declaration's value types as text.
pub(crate) fn decl_names(types: &[V]) -> Vec<&'static str> {
    types
        .iter()
        .map(|v| match v {
            I32 => "i32",
            I64 => "i64",
        })
        .collect()
}

impl ImportError {
    /// The error line(s) the real host logs for this import.
    pub(crate) fn message(&self, profile: Profile, module_name: &str) -> String {
        match (self, profile) {
            (ImportError::Missing { module, name }, Profile::Kong) => format!(
                "failed importing \"{module}.{name}\": missing host function; \
                 failed linking \"{module_name}\" module with \"ngx_proxy_wasm\" host \
                 interface: incompatible host interface"
            ),
            (
                ImportError::Mismatch {
                    module,
                    name,
                    expected,
                    found,
                },
                Profile::Kong,
            ) => format!(
                "failed instantiating \"{module_name}\" module: incompatible import type for \
                 `{module}::{name}`\nCaused by: types incompatible: expected type `{}`, found type `{}`",
                wat_type(&expected.0, &expected.1),
                wat_type(&decl_names(found.params), &decl_names(found.results)),
            ),
            (ImportError::Missing { module, name }, Profile::Envoy) => format!(
                "Failed to load Wasm module due to a missing import: {module}.{name}"
            ),
            (
                ImportError::Mismatch {
                    module,
                    name,
                    expected,
                    found,
                },
                Profile::Envoy,
            ) => {
                let v8 = |t: Vec<&str>| {
                    if t.is_empty() {
                        "void".to_string()
                    } else {
                        t.join(" ")
                    }
                };
                format!(
                    "Failed to load Wasm module due to an import type mismatch: {module}.{name}, \
                     want: {} -> {}, but host exports: {} -> {}",
                    v8(expected.0.clone()),
                    v8(expected.1.clone()),
                    v8(decl_names(found.params)),
                    v8(decl_names(found.results)),
                )
            }
        }
    }
}
