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
    /// What was spent since `earlier` (a snapshot of the same running total).
    pub fn since(&self, earlier: &RequestStats) -> RequestStats {
        RequestStats {
            fuel: self.fuel.saturating_sub(earlier.fuel),
            callbacks: self.callbacks.saturating_sub(earlier.callbacks),
            host_calls: self.host_calls.saturating_sub(earlier.host_calls),
            bytes_to_guest: self.bytes_to_guest.saturating_sub(earlier.bytes_to_guest),
            bytes_from_guest: self
                .bytes_from_guest
                .saturating_sub(earlier.bytes_from_guest),
            shared_data_gets: self
                .shared_data_gets
                .saturating_sub(earlier.shared_data_gets),
            shared_data_sets: self
                .shared_data_sets
                .saturating_sub(earlier.shared_data_sets),
        }
    }

    /// Adds another callback's (or request's) cost to this one.
    pub fn add(&mut self, other: &RequestStats) {
        self.fuel += other.fuel;
        self.callbacks += other.callbacks;
        self.host_calls += other.host_calls;
        self.bytes_to_guest += other.bytes_to_guest;
        self.bytes_from_guest += other.bytes_from_guest;
        self.shared_data_gets += other.shared_data_gets;
        self.shared_data_sets += other.shared_data_sets;
    }
}
