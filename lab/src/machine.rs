//! Where and from what a run was made: CPU count and model, git revision, the command.

use std::process::Command;

/// The machine, as docs/lab.md states it.
pub fn describe() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("nproc {cpus}, {model}")
}

/// `git describe`-like revision of the checkout (with `-dirty` when it has changes).
pub fn revision(root: &std::path::Path) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown revision".into(),
    }
}

/// Requests per second of `wrk -t1 -c16 -d<s>s` on `url` (calm: every answer 200).
pub fn wrk_rps(url: &str, seconds: u32) -> Result<f64, String> {
    let out = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), url])
        .output()
        .map_err(|e| format!("running wrk (./scripts/setup.sh installs it): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unexpected wrk output for {url}:\n{text}"))
}
