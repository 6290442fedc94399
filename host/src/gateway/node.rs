//! State shared by all workers of one node: clock, shared data, metrics, logs.

use crate::http::CallId;
use std::collections::HashMap;

/// proxy-wasm log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub(crate) fn from_raw(raw: i32) -> LogLevel {
        match raw {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }
}

/// One log line: from `proxy_log`, the module's stdout/stderr, or the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub worker: usize,
    pub context_id: u32,
    pub level: LogLevel,
    pub message: String,
}

pub(crate) struct Metric {
    pub name: String,
    pub kind: u32,
    pub value: u64,
}

/// State shared by all workers of one gateway node.
pub(crate) struct Node {
    pub now_ms: u64,
    pub shared_data: HashMap<String, (Vec<u8>, u32)>,
    pub next_cas: u32,
    pub metrics: Vec<Metric>,
    pub logs: Vec<LogEntry>,
    pub next_call_id: u64,
}

impl Node {
    /// A node-wide id for a new upstream call.
    pub fn new_call_id(&mut self) -> CallId {
        self.next_call_id += 1;
        CallId(self.next_call_id)
    }

    /// Stores a shared-data value under a fresh (never zero) cas.
    pub fn put_shared_data(&mut self, key: String, value: Vec<u8>) {
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.shared_data.insert(key, (value, self.next_cas));
    }

    pub fn define_metric(&mut self, name: &str, kind: u32) -> u32 {
        if let Some(i) = self.metrics.iter().position(|m| m.name == name) {
            return i as u32;
        }
        self.metrics.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
        });
        (self.metrics.len() - 1) as u32
    }
}
