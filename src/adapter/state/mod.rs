//! The VM's view of the shared state on the host: may this VM use shared data at all
//! (`store`), and the retry budget, adaptive protection and idempotency records kept there.

pub mod budget;
pub mod idempotency;
pub mod protection;
pub mod store;
