//! N upstream processes on fixed loopback ports, each appending the requests it received to
//! its own journal, so that a rollout can drain, kill and restart them where the gateway
//! expects them, and effects are counted across restarts and SIGKILLs.

use crate::scenario::Action;
use crate::{err, LabError};
use kong_retry_harness::ports::{free_port, loopback};
use kong_retry_harness::upstream::{StartOptions, Upstream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the pool's processes are started: which program, and the arguments before the
/// server's own (the lab binary serves as the upstream on `--as-upstream`).
#[derive(Debug, Clone)]
pub struct UpstreamProgram {
    pub bin: PathBuf,
    pub leading_args: Vec<String>,
}

impl UpstreamProgram {
    /// This very program, re-run with `--as-upstream`.
    pub fn this_program() -> Result<Self, LabError> {
        let bin = std::env::current_exe().map_err(|e| err(format!("current_exe: {e}")))?;
        Ok(UpstreamProgram {
            bin,
            leading_args: vec!["--as-upstream".into()],
        })
    }
}

struct Slot {
    port: u16,
    journal: PathBuf,
    running: Option<Upstream>,
}

/// The upstream instances behind one gateway.
pub struct Pool {
    program: UpstreamProgram,
    slots: Vec<Slot>,
}

/// One request as an upstream received it (a line of its journal).
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub method: String,
    pub id: String,
    pub key: Option<String>,
}

impl Pool {
    /// Starts `n` instances, journals under `dir`.
    pub fn start(program: &UpstreamProgram, n: usize, dir: &Path) -> Result<Pool, LabError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        let mut pool = Pool {
            program: program.clone(),
            slots: Vec::new(),
        };
        for i in 0..n {
            let port = free_port().map_err(|e| err(format!("free port: {e}")))?;
            let journal = dir.join(format!("upstream-{i}.journal"));
            let _ = std::fs::remove_file(&journal);
            pool.slots.push(Slot {
                port,
                journal,
                running: None,
            });
            pool.restart(i)?;
        }
        Ok(pool)
    }

    /// The instances' addresses (stable across restarts).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.slots.iter().map(|s| loopback(s.port)).collect()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Graceful stop of instance `i`: stop accepting, finish what is in flight, exit.
    pub fn drain(&mut self, i: usize) {
        if let Some(mut u) = self.slots.get_mut(i).and_then(|s| s.running.take()) {
            if !u.drain(Duration::from_secs(6)) {
                u.kill();
            }
        }
    }

    /// Abrupt stop of instance `i`: SIGKILL with its connections open.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut u) = self.slots.get_mut(i).and_then(|s| s.running.take()) {
            u.kill();
        }
    }

    /// (Re)starts instance `i` on its port (a no-op while it runs).
    pub fn restart(&mut self, i: usize) -> Result<(), LabError> {
        let slot = self
            .slots
            .get_mut(i)
            .ok_or_else(|| err(format!("no upstream {i}")))?;
        if slot.running.is_some() {
            return Ok(());
        }
        let options = StartOptions {
            port: Some(slot.port),
            journal: Some(slot.journal.clone()),
            graceful: true,
            leading_args: self.program.leading_args.clone(),
        };
        // The port was just released by the previous instance; binding may race its exit.
        let mut last = None;
        for _ in 0..50 {
            match Upstream::start_with(&self.program.bin, &options) {
                Ok(u) => {
                    slot.running = Some(u);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(err(format!(
            "upstream {i} on port {} did not restart: {}",
            slot.port,
            last.map(|e| e.0).unwrap_or_default()
        )))
    }

    /// Does `action` (an action on the upstreams).
    pub fn act(&mut self, action: Action) -> Result<(), LabError> {
        match action {
            Action::Drain(i) => self.drain(i),
            Action::Kill(i) => self.kill(i),
            Action::KillAll => (0..self.len()).for_each(|i| self.kill(i)),
            Action::Restart(i) => self.restart(i)?,
            Action::RestartAll => {
                for i in 0..self.len() {
                    self.restart(i)?;
                }
            }
            other => {
                return Err(err(format!(
                    "{} is not an action on the upstreams",
                    other.label()
                )))
            }
        }
        Ok(())
    }

    /// Every request received so far, over all instances and restarts.
    pub fn received(&self) -> Vec<Received> {
        let mut all = Vec::new();
        for s in &self.slots {
            let text = std::fs::read_to_string(&s.journal).unwrap_or_default();
            all.extend(text.lines().filter_map(parse_line));
        }
        all
    }

    /// How many times each request id was received.
    pub fn deliveries(&self) -> HashMap<String, u32> {
        let mut m = HashMap::new();
        for r in self.received() {
            *m.entry(r.id).or_insert(0) += 1;
        }
        m
    }
}

/// `<ms> <method> <id> <key or -> ...`
fn parse_line(line: &str) -> Option<Received> {
    let mut f = line.split_whitespace();
    let _ms = f.next()?;
    let method = f.next()?.to_string();
    let id = f.next()?.to_string();
    let key = f.next().filter(|k| *k != "-").map(str::to_string);
    Some(Received { method, id, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_are_read() {
        let r = parse_line("12.5 POST r7 k-r7 - -").unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.id, "r7");
        assert_eq!(r.key.as_deref(), Some("k-r7"));
        assert_eq!(parse_line("1.0 GET r1 - - -").unwrap().key, None);
        assert!(parse_line("").is_none());
    }
}
