//! State shared across requests, and the stores that keep it: the `store` trait (shared data
//! with compare-and-swap), the retry `budget`, adaptive mode's `protection` flag, and
//! gateway-side `idempotency` records (node shared data or etcd).

pub mod budget;
pub mod idempotency;
pub mod protection;
pub mod store;
