//! Child processes that are stopped by their pid when dropped, with their output in files.

use crate::HarnessError;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A fresh directory for one instance's files: `target/harness-runs/<label>-<pid>-<n>`.
/// Kept after the run, so that a failed test's logs can be read.
pub fn run_dir(label: &str) -> Result<PathBuf, HarnessError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = proxy_wasm_test_host::build::target_root()
        .join("harness-runs")
        .join(format!("{label}-{}-{n}", std::process::id()));
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| HarnessError::new(format!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}

/// A running child process; dropping it stops it (SIGTERM, then SIGKILL after 2 s).
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdin empty and stdout and stderr both appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Process, HarnessError> {
        let out = File::create(log)
            .map_err(|e| HarnessError::new(format!("creating {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::new(format!("{}: {e}", log.display())))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| HarnessError::new(format!("starting {name} ({command:?}): {e}")))?;
        Ok(Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its output so far (lossy UTF-8).
    pub fn output(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`, `libc::SIGKILL`) unless it has exited.
    pub fn signal(&mut self, signal: i32) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; it has not been reaped (try_wait above).
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Waits up to `limit` for it to exit; true when it has.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            if self.exited().is_some() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// `Some(exit status)` once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// An error naming the process, its log and the log's last lines.
    pub fn failure(&self, what: &str) -> HarnessError {
        let output = self.output();
        let tail: Vec<&str> = output.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        HarnessError::new(format!(
            "{} (pid {}): {what}; log {}:\n{}",
            self.name,
            self.pid(),
            self.log.display(),
            tail.join("\n")
        ))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; it has not been reaped (try_wait above).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
