//! What one request (or root-context work) cost the filter.

/// Cost of one request (or of root-context work): wasm fuel (≈ instructions),
/// host calls and bytes copied across the boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub fuel: u64,
    pub callbacks: u64,
    pub host_calls: u64,
    pub bytes_to_guest: u64,
    pub bytes_from_guest: u64,
    /// `proxy_get_shared_data` calls (included in `host_calls`).
    pub shared_data_gets: u64,
    /// `proxy_set_shared_data` calls (included in `host_calls`).
    pub shared_data_sets: u64,
}

impl RequestStats {
    /// Adds another callback's cost to this one.
    pub(crate) fn add(&mut self, other: &RequestStats) {
        self.fuel += other.fuel;
        self.callbacks += other.callbacks;
        self.host_calls += other.host_calls;
        self.bytes_to_guest += other.bytes_to_guest;
        self.bytes_from_guest += other.bytes_from_guest;
        self.shared_data_gets += other.shared_data_gets;
        self.shared_data_sets += other.shared_data_sets;
    }
}
