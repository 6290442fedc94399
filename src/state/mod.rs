//! State shared across requests, and the stores that keep it: the `store` trait (shared data
//! with compare-and-swap), the retry `budget`, and adaptive mode's `protection` flag.

pub mod budget;
pub mod protection;
pub mod store;
