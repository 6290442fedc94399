//! Compiled modules: one wasmtime engine per process, each distinct `.wasm`
//! compiled once (tests build many gateways from the same file).

use crate::HostError;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::{Config, Engine, Module};

/// A compiled proxy-wasm module; cheap to clone.
#[derive(Clone)]
pub struct WasmModule {
    pub(crate) module: Module,
    pub(crate) name: Arc<str>,
}

impl std::fmt::Debug for WasmModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmModule")
            .field("name", &self.name)
            .finish()
    }
}

/// The engine is a compilation cache, not observable state: every gateway gets
/// its own stores, so tests stay independent.
pub(crate) fn engine() -> Result<&'static Engine, HostError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            // Fuel bounds every callback: an infinite loop becomes a trap, not a hang.
            config.consume_fuel(true);
            Engine::new(&config).map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| HostError::Load(format!("wasmtime engine: {e}")))
}

fn cache() -> &'static Mutex<HashMap<(u64, usize), Module>> {
    static CACHE: OnceLock<Mutex<HashMap<(u64, usize), Module>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

impl WasmModule {
    /// Reads and compiles a `.wasm` (or `.wat`) file, reusing an earlier
    /// compilation of identical bytes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<WasmModule, HostError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| HostError::Load(format!("reading {}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "module".to_string());
        Self::compile(&bytes, name)
    }

    /// Compiles module bytes (binary or text format), reusing an earlier
    /// compilation of identical bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<WasmModule, HostError> {
        Self::compile(bytes, "module".to_string())
    }

    fn compile(bytes: &[u8], name: String) -> Result<WasmModule, HostError> {
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let key = (hasher.finish(), bytes.len());
        let engine = engine()?;
        // Holding the lock while compiling makes parallel tests wait for the one
        // compilation instead of all compiling the same bytes.
        let mut cache = cache()
            .lock()
            .map_err(|_| HostError::Load("module cache poisoned".to_string()))?;
        let module = match cache.get(&key) {
            Some(m) => m.clone(),
            None => {
                let m = Module::new(engine, bytes)
                    .map_err(|e| HostError::Load(format!("compiling {name}: {e:#}")))?;
                cache.insert(key, m.clone());
                m
            }
        };
        drop(cache);
        check_abi(&module)?;
        Ok(WasmModule {
            module,
            name: name.into(),
        })
    }

    /// The file name the module was loaded from.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A proxy-wasm module must export an ABI version marker and a memory.
fn check_abi(module: &Module) -> Result<(), HostError> {
    let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
    let versioned = exports
        .iter()
        .any(|n| *n == "proxy_abi_version_0_2_1" || *n == "proxy_abi_version_0_2_0");
    if !versioned {
        return Err(HostError::Abi(
            "no proxy_abi_version_0_2_1 or proxy_abi_version_0_2_0 export".to_string(),
        ));
    }
    if !exports.contains(&"memory") {
        return Err(HostError::Abi("no exported memory".to_string()));
    }
    if !exports
        .iter()
        .any(|n| *n == "proxy_on_memory_allocate" || *n == "malloc")
    {
        return Err(HostError::Abi(
            "no allocator export (proxy_on_memory_allocate or malloc)".to_string(),
        ));
    }
    Ok(())
}
