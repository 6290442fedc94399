//! `cargo run -p kong-retry-bench [-- --requests N] [--wasm PATH] [--write docs/benchmarks.md]`:
//! measures the filter's cost per request on the test host (see `lib.rs`) and prints the
//! Markdown table; `--write` also rewrites the generated part of that file.
//!
//! Exit status: 0 done; 1 a scenario did not behave as expected (the message says how);
//! 2 bad arguments or the filter could not be loaded.

use kong_retry_bench as bench;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: kong-retry-bench [--requests N] [--wasm PATH] [--write FILE]
  --requests N   measured requests per row (default 1000)
  --wasm PATH    the filter to measure (default: $KONG_RETRY_WASM, else a fresh build of the workspace's filter)
  --write FILE   also rewrite the part of FILE between the kong-retry-bench markers (e.g. docs/benchmarks.md)";

struct Args {
    requests: usize,
    wasm: Option<PathBuf>,
    write: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: bench::DEFAULT_REQUESTS,
        wasm: None,
        write: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--requests" => {
                let v = value("--requests")?;
                args.requests = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--requests: {v:?} is not a positive number"))?;
            }
            "--wasm" => args.wasm = Some(PathBuf::from(value("--wasm")?)),
            "--write" => args.write = Some(PathBuf::from(value("--write")?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// The command line that reproduces this run.
fn command(args: &Args) -> String {
    let mut c = String::from("cargo run");
    if !cfg!(debug_assertions) {
        c.push_str(" --release");
    }
    c.push_str(" -p kong-retry-bench");
    let mut extra = Vec::new();
    if args.requests != bench::DEFAULT_REQUESTS {
        extra.push(format!("--requests {}", args.requests));
    }
    if let Some(w) = &args.wasm {
        extra.push(format!("--wasm {}", w.display()));
    }
    if let Some(w) = &args.write {
        extra.push(format!("--write {}", w.display()));
    }
    if !extra.is_empty() {
        c.push_str(" -- ");
        c.push_str(&extra.join(" "));
    }
    if args.wasm.is_none() {
        if let Some(env) = std::env::var_os("KONG_RETRY_WASM") {
            c = format!("KONG_RETRY_WASM={} {c}", env.to_string_lossy());
        }
    }
    c
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    format!(
        "{cores} cores, {cpu}, {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(bench::repo_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit, and whether the filter's sources differ from it.
fn revision() -> String {
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown (not a git checkout)".to_string();
    };
    let dirty = git(&["status", "--porcelain", "--", "src"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{commit} + uncommitted changes to the filter")
    } else {
        commit
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("kong-retry-bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (filters, filter) = match bench::load_filters(args.wasm.clone()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("kong-retry-bench: cannot load the filter: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("kong-retry-bench: measuring {filter}");
    let report = match bench::run_all(&filters, args.requests, |row| eprintln!("  {row}")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kong-retry-bench: {e}");
            return ExitCode::from(1);
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = bench::Header {
        command: command(&args),
        date: bench::utc_date(now),
        machine: machine(),
        filter,
        revision: revision(),
        requests: args.requests,
    };
    let section = bench::render(&report, &header);
    print!("{section}");
    if let Some(path) = &args.write {
        let result = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|doc| bench::replace_section(&doc, &section))
            .and_then(|doc| std::fs::write(path, doc).map_err(|e| e.to_string()));
        if let Err(e) = result {
            eprintln!("kong-retry-bench: --write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        eprintln!("kong-retry-bench: wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
