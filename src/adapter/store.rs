//! `SharedStore` over the raw shared-data host calls.
//!
//! Only ever used once the root has decided a store exists (`budget.store`): on Kong a call
//! whose key resolves to no `shm_kv` zone traps instead of returning an error.

use super::abi::{self, CAS_MISMATCH};
use crate::store::{SharedStore, StoreError};

/// Proxy-wide shared data, as the host offers it.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        abi::get_shared_data(key).map_err(|s| StoreError::Unavailable {
            key: key.to_string(),
            reason: format!("get_shared_data returned status {}", s.0),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match abi::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(s) if s.0 == CAS_MISMATCH => Err(StoreError::CasMismatch {
                key: key.to_string(),
            }),
            Err(s) => Err(StoreError::Unavailable {
                key: key.to_string(),
                reason: format!("set_shared_data returned status {}", s.0),
            }),
        }
    }
}
