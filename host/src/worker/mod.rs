//! One VM instance (an nginx worker / Envoy worker thread): instantiating the
//! module, starting it up and running one export at a time with fresh fuel.

mod buffers;
mod dispatch;
mod guest;
mod headers;
mod imports;
mod log;
mod metrics;
mod properties;
mod shared_data;
mod state;
mod stream_control;
mod time;
mod wasi;

pub(crate) use state::{CallResponse, Effect, Stream, WorkerState};

use crate::gateway::{Node, RequestStats, Settings};
use crate::module::engine;
use crate::profile::{Phase, Profile};
use crate::HostError;
use guest::HostTrap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wasmtime::{Func, Instance, Store, StoreLimitsBuilder, Val, ValType};

/// The root context id of every worker (ids are per VM instance).
pub(crate) const ROOT_ID: u32 = 1;

/// A trap: where and why.
#[derive(Debug, Clone)]
pub(crate) struct TrapInfo {
    pub phase: Phase,
    pub message: String,
}

/// A live VM instance.
pub(crate) struct Worker {
    pub store: Store<WorkerState>,
    instance: Instance,
}

/// A callback's result: the export's return value, if any.
pub(crate) type CallResult = Result<Option<i32>, TrapInfo>;

impl Worker {
    /// Instantiates the module and runs start-up: `_initialize`, root context
    /// creation, `on_vm_start`, `on_configure`.
    pub fn start(
        index: usize,
        settings: Arc<Settings>,
        node: Arc<Mutex<Node>>,
        module: &wasmtime::Module,
        generation: u64,
    ) -> Result<Worker, HostError> {
        let engine = engine()?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(settings.memory_limit_bytes)
            .instances(4)
            .tables(16)
            .memories(2)
            .build();
        let seed = settings.seed ^ ((index as u64) << 32) ^ generation.wrapping_mul(0x9E37);
        let state = WorkerState {
            worker: index,
            settings: settings.clone(),
            node,
            limits,
            phase: Phase::Start,
            active: ROOT_ID,
            effective: ROOT_ID,
            streams: HashMap::new(),
            call_response: None,
            tick_period_ms: None,
            tick_changed: false,
            effects: Vec::new(),
            stats: RequestStats::default(),
            next_token: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            set_properties: HashMap::new(),
            rng: seed,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        let load = |e: wasmtime::Error| HostError::Load(format!("{e:#}"));
        // The real host refuses a module whose imports its table lacks or
        // declares otherwise, before anything runs (src/host_imports.rs).
        settings
            .profile
            .check_imports(module)
            .map_err(|e| HostError::Load(e.message(settings.profile, &settings.filter_name)))?;
        let mut linker = wasmtime::Linker::new(engine);
        imports::link(&mut linker, module, &mut store).map_err(load)?;
        store.set_fuel(settings.fuel_per_callback).map_err(load)?;
        let instance = linker.instantiate(&mut store, module).map_err(|e| {
            HostError::Load(format!(
                "failed instantiating \"{}\" module: {}",
                settings.filter_name,
                describe(&e)
            ))
        })?;
        let mut worker = Worker { store, instance };
        let profile = settings.profile;
        let start_trap = |t: TrapInfo| HostError::StartTrap {
            worker: index,
            phase: t.phase.name(),
            // Envoy logs a failed start function this way (wasm_vm.cc; seen on
            // Envoy 1.40.0: "Function: _initialize failed: Uncaught Error:
            // restricted_callback").
            message: match (profile, t.phase) {
                (Profile::Envoy, Phase::Init) => format!(
                    "Function: _initialize failed: Uncaught Error: {}",
                    t.message
                ),
                _ => t.message,
            },
        };
        for init in ["_initialize", "_start"] {
            if worker.has_export(init) {
                worker
                    .call(Phase::Init, ROOT_ID, init, &[])
                    .map_err(start_trap)?;
                break;
            }
        }
        worker
            .call(
                Phase::Start,
                ROOT_ID,
                "proxy_on_context_create",
                &[ROOT_ID as i32, 0],
            )
            .map_err(start_trap)?;
        let vm_len = settings.vm_config.len();
        if !worker
            .start_root(Phase::VmStart, "proxy_on_vm_start", vm_len)
            .map_err(start_trap)?
        {
            return Err(HostError::VmStart {
                logs: worker.worker_logs(),
            });
        }
        let config_len = settings.plugin_config.len();
        if !worker
            .start_root(Phase::Configure, "proxy_on_configure", config_len)
            .map_err(start_trap)?
        {
            return Err(HostError::Configure {
                logs: worker.worker_logs(),
            });
        }
        Ok(worker)
    }

    /// `on_vm_start` or `on_configure` with its configuration's size; false
    /// when the filter refuses it.
    fn start_root(
        &mut self,
        phase: Phase,
        export: &str,
        config_len: usize,
    ) -> Result<bool, TrapInfo> {
        let accepted = self.call(phase, ROOT_ID, export, &[ROOT_ID as i32, config_len as i32])?;
        Ok(accepted != Some(0))
    }

    fn worker_logs(&self) -> Vec<String> {
        let index = self.store.data().worker;
        let node = self.store.data().node();
        node.logs
            .iter()
            .filter(|l| l.worker == index)
            .map(|l| l.message.clone())
            .collect()
    }

    pub fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    /// The cost booked since the last take: the callbacks run (start-up
    /// included), their fuel, host calls and bytes.
    pub fn take_cost(&mut self) -> RequestStats {
        std::mem::take(&mut self.store.data_mut().stats)
    }

    /// Runs one export with fresh fuel, booking it to the worker's cost. A
    /// missing export is a no-op (`None`).
    pub fn call(&mut self, phase: Phase, ctx: u32, export: &str, args: &[i32]) -> CallResult {
        self.store.data_mut().stats.callbacks += 1;
        let Some(func): Option<Func> = self.instance.get_func(&mut self.store, export) else {
            return Ok(None);
        };
        {
            let s = self.store.data_mut();
            s.phase = phase;
            s.active = ctx;
            s.effective = ctx;
        }
        let fuel = self.store.data().settings.fuel_per_callback;
        let trap = |message: String| TrapInfo { phase, message };
        self.store
            .set_fuel(fuel)
            .map_err(|e| trap(format!("{e}")))?;
        let ty = func.ty(&self.store);
        let params: Vec<Val> = ty
            .params()
            .zip(args.iter().chain(std::iter::repeat(&0)))
            .map(|(t, a)| match t {
                ValType::I64 => Val::I64(i64::from(*a as u32)),
                _ => Val::I32(*a),
            })
            .collect();
        let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
        let outcome = func.call(&mut self.store, &params, &mut results);
        let used = fuel.saturating_sub(self.store.get_fuel().unwrap_or(0));
        self.store.data_mut().stats.fuel += used;
        self.store.data_mut().flush_output(true);
        match outcome {
            Ok(()) => Ok(results.first().and_then(|v| match v {
                Val::I32(x) => Some(*x),
                Val::I64(x) => Some(*x as i32),
                _ => None,
            })),
            Err(e) => Err(trap(describe(&e))),
        }
    }
}

/// A one-line description of a wasmtime error (trap code or host-trap message).
fn describe(e: &wasmtime::Error) -> String {
    if let Some(t) = e.downcast_ref::<HostTrap>() {
        return t.to_string();
    }
    if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        return format!("wasm trap: {t}");
    }
    let text = format!("{e:#}");
    text.lines().next().unwrap_or("unknown error").to_string()
}
