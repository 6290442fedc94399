//! Builds `.wasm` modules for tests: fixture filters and the workspace's
//! filter, with `cargo build --release --target wasm32-wasip1`.
//!
//! Each build runs once per test process (memoised) and builds are serialised
//! across processes with a file lock, so parallel test binaries do not race.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The wasm target the host runs.
pub const TARGET: &str = "wasm32-wasip1";

/// Why a `.wasm` could not be built; says which command to run by hand.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}\n  to build by hand: {command}")]
pub struct BuildError {
    pub message: String,
    pub command: String,
}

fn workspace_root() -> PathBuf {
    // host/ is one level below the workspace root.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| here.to_path_buf())
}

/// The workspace's `target/` (respects `CARGO_TARGET_DIR`).
pub fn target_root() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

fn memo() -> &'static Mutex<HashMap<PathBuf, Result<PathBuf, BuildError>>> {
    static MEMO: OnceLock<Mutex<HashMap<PathBuf, Result<PathBuf, BuildError>>>> = OnceLock::new();
    MEMO.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Builds the cargo project at `manifest_dir` for wasm32-wasip1 (release) into
/// `target/wasm/<name>/` and returns the path of its `.wasm` (the single cdylib
/// the project produces).
pub fn cargo_wasm(manifest_dir: impl AsRef<Path>) -> Result<PathBuf, BuildError> {
    cargo_wasm_with(manifest_dir, &[])
}

/// [`cargo_wasm`] with cargo features enabled; each feature set builds into its
/// own `target/wasm/<name>-<feature>-.../`, so variants never overwrite each other.
pub fn cargo_wasm_with(
    manifest_dir: impl AsRef<Path>,
    features: &[&str],
) -> Result<PathBuf, BuildError> {
    let dir = manifest_dir.as_ref().to_path_buf();
    let mut name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module".to_string());
    for f in features {
        name.push('-');
        name.push_str(f);
    }
    let target_dir = target_root().join("wasm").join(&name);
    build_memoised(&dir, &target_dir, None, features)
}

/// Builds the workspace's filter (package `kong-retry`) for wasm32-wasip1 and
/// returns the path of `kong_retry.wasm`.
pub fn filter_wasm() -> Result<PathBuf, BuildError> {
    let root = workspace_root();
    let target_dir = target_root().join("wasm").join("filter");
    build_memoised(&root, &target_dir, Some("kong-retry"), &[])
}

/// The probe fixture filter used by the host's own tests.
pub fn probe_wasm() -> Result<PathBuf, BuildError> {
    probe_wasm_with(&[])
}

/// A variant of the probe fixture with cargo features (see its Cargo.toml), e.g.
/// `start-log-level` for a module that makes a host call during `_initialize`.
pub fn probe_wasm_with(features: &[&str]) -> Result<PathBuf, BuildError> {
    cargo_wasm_with(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join("probe"),
        features,
    )
}

fn build_memoised(
    dir: &Path,
    target_dir: &Path,
    package: Option<&str>,
    features: &[&str],
) -> Result<PathBuf, BuildError> {
    // Holding the memo lock serialises builds within this process. One target
    // dir per (project, features), so it is the key.
    let mut memo = memo().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(done) = memo.get(target_dir) {
        return done.clone();
    }
    let result = build(dir, target_dir, package, features);
    memo.insert(target_dir.to_path_buf(), result.clone());
    result
}

fn command_line(dir: &Path, target_dir: &Path, package: Option<&str>, features: &[&str]) -> String {
    let mut s = format!(
        "cd {} && cargo build --release --target {TARGET} --target-dir {}",
        dir.display(),
        target_dir.display()
    );
    if let Some(p) = package {
        s.push_str(&format!(" -p {p} --lib"));
    }
    if !features.is_empty() {
        s.push_str(&format!(" --features {}", features.join(",")));
    }
    s
}

fn build(
    dir: &Path,
    target_dir: &Path,
    package: Option<&str>,
    features: &[&str],
) -> Result<PathBuf, BuildError> {
    let command = command_line(dir, target_dir, package, features);
    let fail = |message: String| BuildError {
        message,
        command: command.clone(),
    };
    ensure_target().map_err(&fail)?;
    std::fs::create_dir_all(target_dir)
        .map_err(|e| fail(format!("creating {}: {e}", target_dir.display())))?;
    // Serialise with other test processes building the same project.
    let lock_path = target_dir.join(".build.lock");
    let lock = File::create(&lock_path)
        .map_err(|e| fail(format!("creating {}: {e}", lock_path.display())))?;
    lock.lock()
        .map_err(|e| fail(format!("locking {}: {e}", lock_path.display())))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir)
        // Flags meant for the native test build must not leak into the wasm build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    if let Some(p) = package {
        cmd.args(["-p", p, "--lib"]);
    }
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let output = cmd
        .output()
        .map_err(|e| fail(format!("running cargo: {e}")))?;
    drop(lock);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(fail(format!(
            "cargo build for {TARGET} failed in {}:\n{}",
            dir.display(),
            tail.join("\n")
        )));
    }
    find_wasm(&target_dir.join(TARGET).join("release"))
        .ok_or_else(|| fail(format!("no .wasm produced in {}", target_dir.display())))
}

fn find_wasm(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Installs the wasm target with rustup when it is missing.
fn ensure_target() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output();
        match installed {
            Ok(out)
                if String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.trim() == TARGET) =>
            {
                Ok(())
            }
            Ok(_) => {
                let status = Command::new("rustup")
                    .args(["target", "add", TARGET])
                    .status()
                    .map_err(|e| format!("running rustup: {e}"))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("`rustup target add {TARGET}` failed"))
                }
            }
            // No rustup: let cargo report a missing target itself.
            Err(_) => Ok(()),
        }
    })
    .clone()
}
