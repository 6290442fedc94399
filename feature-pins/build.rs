//! Empty: it exists so that Cargo resolves this package's build-dependencies (Cargo.toml
//! says why they are pinned).

fn main() {}
