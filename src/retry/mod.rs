//! The retry decision and what it weighs: what an attempt's outcome was (`outcome`), whether
//! it may be retried (`policy`), how long to wait first (`backoff`, `retry_after`).

pub mod backoff;
pub mod outcome;
pub mod policy;
pub mod retry_after;
