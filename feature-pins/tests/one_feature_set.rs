//! Every build the README and the scripts make asks for the dependencies' features that
//! `cargo test --workspace` asks for, so none of them compiles a dependency a second time.
//! Cargo's own resolver answers (`cargo tree`): when a dependency update brings a new
//! feature difference, this test names the package and what to add to
//! feature-pins/Cargo.toml.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

/// Package (`name vX.Y.Z`) → the feature sets it is built with (a proc-macro's and a build
/// script's dependencies are a separate set, so a package can have two).
type Features = BTreeMap<String, BTreeSet<String>>;

/// The features Cargo resolves for `cargo tree <selection>`; `edges` says whether the
/// selection's dev-dependencies are built (tests, clippy --all-targets) or not (build, run).
fn resolved(selection: &[&str], edges: &str) -> Features {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .arg("tree")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "--locked", "--prefix", "none", "--format", "{p}|{f}", "-e", edges,
        ])
        .args(selection)
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree {selection:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut features = Features::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim_end_matches(" (*)");
        let Some((package, set)) = line.split_once('|') else {
            continue;
        };
        let name = package.split(" (").next().unwrap_or(package).to_string();
        features.entry(name).or_default().insert(set.to_string());
    }
    features
}

#[test]
fn scripts_and_tools_build_dependencies_with_the_test_suites_features() {
    let suite = resolved(&["--workspace"], "normal,build,dev");
    let builds: [(&str, &[&str], &str); 6] = [
        (
            "./demo.sh trace: cargo build -p kong-retry-demo",
            &["-p", "kong-retry-demo"],
            "normal,build",
        ),
        (
            "./demo.sh: cargo build -p kong-retry-lab --no-default-features",
            &["-p", "kong-retry-lab", "--no-default-features"],
            "normal,build",
        ),
        (
            "cargo run -p kong-retry-notice",
            &["-p", "kong-retry-notice"],
            "normal,build",
        ),
        (
            "cargo run -p kong-retry-bench",
            &["-p", "kong-retry-bench"],
            "normal,build",
        ),
        ("cargo build --workspace", &["--workspace"], "normal,build"),
        (
            "cargo test (the root package)",
            &["-p", "kong-retry"],
            "normal,build,dev",
        ),
    ];
    // The short lab leaves out the test host (and so wasmtime) on purpose: these small
    // workspace packages (the harness without its `fuel` figures) get a second, lighter
    // build; every dependency keeps one.
    let lighter_on_purpose = [
        "kong-retry-lab ",
        "proxy-wasm-test-host ",
        "kong-retry-harness ",
    ];
    let mut differences = Vec::new();
    for (what, selection, edges) in builds {
        for (package, sets) in resolved(selection, edges) {
            if selection.contains(&"--no-default-features")
                && lighter_on_purpose.iter().any(|p| package.starts_with(p))
            {
                continue;
            }
            let theirs = suite.get(&package).cloned().unwrap_or_default();
            for set in sets.difference(&theirs) {
                differences.push(format!(
                    "{what} builds {package} with features [{set}]; cargo test --workspace with {theirs:?}"
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "a dependency would be compiled twice; add the features the suite uses to feature-pins/Cargo.toml:\n{}",
        differences.join("\n")
    );
}
