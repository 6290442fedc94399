//! No code. Depending on this package pins the features of shared dependencies so that
//! every build of the workspace (demo, tests, lints, tools) compiles them once; Cargo.toml
//! lists them and says why.
