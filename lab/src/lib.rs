//! The rolling-upgrade lab: real gateways in front of real upstream processes that are
//! drained, killed and restarted while an open-loop client sends a mix of GET, keyed POST
//! and unkeyed POST; what the client saw and what the upstreams applied, per gateway.

#[cfg(feature = "kong-rows")]
pub mod delay;
#[cfg(feature = "kong-rows")]
pub mod forwarder;
pub mod gateways;
pub mod java;
pub mod load;
pub mod lost_answers;
pub mod machine;
pub mod nodes;
pub mod plot;
pub mod pool;
pub mod report;
pub mod run;
pub mod scenario;
#[cfg(feature = "kong-rows")]
pub mod test_host;

/// Why the lab could not run; says what to run or read next.
#[derive(Debug)]
pub struct LabError(pub String);

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabError {}

impl From<kong_retry_harness::HarnessError> for LabError {
    fn from(e: kong_retry_harness::HarnessError) -> Self {
        LabError(e.0)
    }
}

/// Shorthand for an error with a message.
pub fn err(message: impl Into<String>) -> LabError {
    LabError(message.into())
}
