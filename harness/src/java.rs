//! The Java example's client (`examples/java`, `IdempotentClient`) as a process: its main
//! classes compiled with the JDK on PATH, and the lines its `main` prints read back.

use crate::process::run_dir;
use crate::HarnessError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The client's main class.
pub const CLIENT_CLASS: &str = "dev.kongretry.example.IdempotentClient";

/// Why the JDK cannot be used (`javac` or `java` missing from PATH), or None when it can.
pub fn jdk_missing() -> Option<String> {
    for (tool, flag) in [("javac", "-version"), ("java", "-version")] {
        let works = Command::new(tool)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success());
        if !works {
            return Some(format!(
                "no working `{tool}` on PATH (./scripts/setup.sh installs openjdk-17-jdk-headless)"
            ));
        }
    }
    None
}

/// Compiles the example's main classes (`--release 17`) into a run directory of their own;
/// returns the class path.
pub fn compile_example() -> Result<PathBuf, HarnessError> {
    let src = crate::repo_root().join("examples/java/src/main/java");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| HarnessError::new(format!("reading {}: {e}", d.display())))?;
        for p in entries.flatten().map(|e| e.path()) {
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "java") {
                files.push(p);
            }
        }
    }
    if files.is_empty() {
        return Err(HarnessError::new(format!(
            "no .java files under {}",
            src.display()
        )));
    }
    let out = run_dir("java")?.join("classes");
    let result = Command::new("javac")
        .args(["--release", "17", "-d"])
        .arg(&out)
        .args(&files)
        .output()
        .map_err(|e| {
            HarnessError::new(format!(
                "javac: {e} (./scripts/setup.sh installs openjdk-17)"
            ))
        })?;
    if !result.status.success() {
        return Err(HarnessError::new(format!(
            "javac failed on {}: {}",
            src.display(),
            String::from_utf8_lossy(&result.stderr).trim()
        )));
    }
    Ok(out)
}

/// `java -cp <classes> IdempotentClient <urls> <operations> --path <path> --print-keys`:
/// `operations` payments, one after the other, through the comma-separated gateway nodes.
pub fn client_command(classes: &Path, urls: &[String], operations: usize, path: &str) -> Command {
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(classes)
        .arg(CLIENT_CLASS)
        .arg(urls.join(","))
        .arg(operations.to_string())
        .args(["--path", path, "--print-keys"]);
    cmd
}

/// One payment as the client printed it (`--print-keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub status: String,
    pub attempts: u32,
    /// The answer was the gateway's (or backend's) stored result (`Idempotent-Replayed`).
    pub replayed: bool,
    /// The Idempotency-Key, without the Structured Field quotes.
    pub key: String,
    pub body_sha256: String,
}

/// `operation 7: 200 ? attempts=2 replayed key=K body_sha256=H`.
pub fn parse_payment(line: &str) -> Option<Payment> {
    let rest = line.strip_prefix("operation ")?;
    let (_, rest) = rest.split_once(": ")?;
    let mut p = Payment {
        status: rest.split_whitespace().next()?.to_string(),
        attempts: 0,
        replayed: false,
        key: String::new(),
        body_sha256: String::new(),
    };
    for t in rest.split_whitespace() {
        if let Some(v) = t.strip_prefix("attempts=") {
            p.attempts = v.parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("key=") {
            p.key = v.to_string();
        } else if let Some(v) = t.strip_prefix("body_sha256=") {
            p.body_sha256 = v.to_string();
        } else if t == "replayed" {
            p.replayed = true;
        }
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_payment_line() {
        let p = parse_payment("operation 7: 200 p-1 attempts=2 replayed key=k-7 body_sha256=ab")
            .unwrap();
        assert_eq!(
            p,
            Payment {
                status: "200".into(),
                attempts: 2,
                replayed: true,
                key: "k-7".into(),
                body_sha256: "ab".into()
            }
        );
        let q = parse_payment("operation 8: rejected 422 {} key=k-8").unwrap();
        assert_eq!((q.status.as_str(), q.replayed), ("rejected", false));
        assert_eq!(parse_payment("operations=8 ok=8"), None);
    }
}
