//! The bounded index of the `shared` store: which records exist, how big each is, and in
//! which order they came, so that record count and bytes stay within `shared.max_records`
//! and `shared.max_bytes`, oldest first out.
//!
//! The index is one shared-data value. Every claim rewrites it with compare-and-swap, and
//! that write is what makes a claim atomic on both hosts: on Envoy `cas = 0` is an
//! unconditional write, so a record key alone cannot be created exactly once, but the
//! index key, once it exists, has a cas that every claimer must match.
//!
//! Eviction never removes a live lock (an in-flight entry before its deadline): dropping
//! it would let a duplicate run. When only live locks are left the index is full and the
//! claim fails ([`Full`]); the adapter then applies `on_store_unavailable`.
//!
//! Layout, version 1, little-endian: magic `KRX`, version (1), entry count (u32), then
//! per entry 32 bytes, oldest first: record id (16), bytes (u32), state (1 in flight,
//! 2 completed), 3 zero bytes, deadline or expiry in host ms (u64).

use super::fingerprint::{RecordId, RECORD_ID_LEN};
use crate::config::SharedBounds;

const MAGIC: &[u8; 3] = b"KRX";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
/// Bytes one entry takes in the index value.
pub const ENTRY_LEN: usize = 32;

/// Whether an entry is a lock or a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    InFlight,
    Completed,
}

/// One record as the index knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: RecordId,
    /// Key plus value bytes of the record.
    pub bytes: u32,
    pub state: EntryState,
    /// In flight: the lock deadline; completed: the expiry (host ms).
    pub until_ms: u64,
}

impl Entry {
    /// A lock that still holds at `now_ms`: never evicted.
    pub fn is_live_lock(&self, now_ms: u64) -> bool {
        self.state == EntryState::InFlight && self.until_ms > now_ms
    }
}

/// The index could not make room without evicting a live lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// The records of one store, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    entries: Vec<Entry>,
}

impl Index {
    /// The entries, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Sum of the entries' bytes.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.bytes)).sum()
    }

    /// The entry of `id`, if any.
    pub fn get(&self, id: &RecordId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == *id)
    }

    /// Removes the entry of `id`; whether there was one.
    pub fn remove(&mut self, id: &RecordId) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != *id);
        self.entries.len() != before
    }

    /// Puts `entry` in as the newest (replacing an entry of the same id), then evicts the
    /// oldest entries that are not live locks until `bounds` hold. Returns the evicted ids
    /// (their records are to be blanked), or [`Full`] with the index unchanged.
    pub fn admit(
        &mut self,
        entry: Entry,
        bounds: &SharedBounds,
        now_ms: u64,
    ) -> Result<Vec<RecordId>, Full> {
        let mut next = self.clone();
        next.remove(&entry.id);
        next.entries.push(entry);
        let mut evicted = Vec::new();
        let mut total = next.total_bytes();
        while next.entries.len() > bounds.max_records as usize || total > bounds.max_bytes {
            let victim = next
                .entries
                .iter()
                .position(|e| e.id != entry.id && !e.is_live_lock(now_ms))
                .ok_or(Full)?;
            let gone = next.entries.remove(victim);
            total -= u64::from(gone.bytes);
            evicted.push(gone.id);
        }
        *self = next;
        Ok(evicted)
    }

    /// The value bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.entries.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.id.0);
            out.extend_from_slice(&e.bytes.to_le_bytes());
            out.push(match e.state {
                EntryState::InFlight => 1,
                EntryState::Completed => 2,
            });
            out.extend_from_slice(&[0, 0, 0]);
            out.extend_from_slice(&e.until_ms.to_le_bytes());
        }
        out
    }

    /// Reads an index; `None` for anything but a whole version-1 index.
    pub fn decode(bytes: &[u8]) -> Option<Index> {
        if bytes.get(..3)? != MAGIC || *bytes.get(3)? != VERSION {
            return None;
        }
        let count = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?) as usize;
        let body = bytes.get(HEADER_LEN..)?;
        if body.len() != count.checked_mul(ENTRY_LEN)? {
            return None;
        }
        let mut entries = Vec::with_capacity(count);
        for chunk in body.chunks_exact(ENTRY_LEN) {
            let mut id = [0u8; RECORD_ID_LEN];
            id.copy_from_slice(chunk.get(..16)?);
            let state = match chunk.get(20)? {
                1 => EntryState::InFlight,
                2 => EntryState::Completed,
                _ => return None,
            };
            entries.push(Entry {
                id: RecordId(id),
                bytes: u32::from_le_bytes(chunk.get(16..20)?.try_into().ok()?),
                state,
                until_ms: u64::from_le_bytes(chunk.get(24..32)?.try_into().ok()?),
            });
        }
        Some(Index { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> RecordId {
        RecordId([n; 16])
    }

    fn entry(n: u8, bytes: u32, state: EntryState, until_ms: u64) -> Entry {
        Entry {
            id: id(n),
            bytes,
            state,
            until_ms,
        }
    }

    fn bounds(max_records: u32, max_bytes: u64) -> SharedBounds {
        SharedBounds {
            max_records,
            max_bytes,
        }
    }

    #[test]
    fn oldest_finished_records_go_first_by_count_and_by_bytes() {
        let mut idx = Index::default();
        let b = bounds(3, 1_000);
        for n in 1..=3 {
            assert_eq!(
                idx.admit(entry(n, 100, EntryState::Completed, 99), &b, 0),
                Ok(vec![])
            );
        }
        assert_eq!(
            idx.admit(entry(4, 100, EntryState::InFlight, 99), &b, 0),
            Ok(vec![id(1)])
        );
        // 700 more bytes: 2 and 3 must go (the 4th entry is a live lock and stays).
        assert_eq!(
            idx.admit(entry(5, 700, EntryState::Completed, 99), &b, 0),
            Ok(vec![id(2)])
        );
        assert_eq!(idx.total_bytes(), 900);
        assert_eq!(
            idx.admit(entry(6, 300, EntryState::Completed, 99), &b, 0),
            Ok(vec![id(3), id(5)])
        );
        let ids: Vec<RecordId> = idx.entries().iter().map(|e| e.id).collect();
        assert_eq!(ids, [id(4), id(6)]);
    }

    #[test]
    fn live_locks_are_never_evicted_and_a_full_index_is_unchanged() {
        let mut idx = Index::default();
        let b = bounds(2, 1_000);
        idx.admit(entry(1, 10, EntryState::InFlight, 50), &b, 0)
            .unwrap();
        idx.admit(entry(2, 10, EntryState::InFlight, 50), &b, 0)
            .unwrap();
        let before = idx.clone();
        assert_eq!(
            idx.admit(entry(3, 10, EntryState::InFlight, 50), &b, 10),
            Err(Full)
        );
        assert_eq!(idx, before);
        // Once the first lock has expired it can go.
        assert_eq!(
            idx.admit(entry(3, 10, EntryState::InFlight, 90), &b, 50),
            Ok(vec![id(1)])
        );
    }

    #[test]
    fn readmitting_an_id_replaces_its_entry_as_newest() {
        let mut idx = Index::default();
        let b = bounds(10, 1_000);
        idx.admit(entry(1, 10, EntryState::InFlight, 50), &b, 0)
            .unwrap();
        idx.admit(entry(2, 10, EntryState::InFlight, 50), &b, 0)
            .unwrap();
        idx.admit(entry(1, 300, EntryState::Completed, 900), &b, 0)
            .unwrap();
        assert_eq!(idx.entries().len(), 2);
        assert_eq!(idx.entries()[1], entry(1, 300, EntryState::Completed, 900));
        assert!(idx.remove(&id(2)));
        assert!(!idx.remove(&id(2)));
    }

    #[test]
    fn codec_round_trips_and_rejects_garbage() {
        let mut idx = Index::default();
        let b = bounds(10, 1_000);
        idx.admit(entry(1, 10, EntryState::InFlight, 50), &b, 0)
            .unwrap();
        idx.admit(entry(2, 20, EntryState::Completed, u64::MAX), &b, 0)
            .unwrap();
        let bytes = idx.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 2 * ENTRY_LEN);
        assert_eq!(Index::decode(&bytes), Some(idx));
        for cut in 0..bytes.len() {
            assert_eq!(Index::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut bad_state = bytes.clone();
        bad_state[HEADER_LEN + 20] = 7;
        assert_eq!(Index::decode(&bad_state), None);
        let mut huge_count = bytes;
        huge_count[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Index::decode(&huge_count), None);
        assert_eq!(
            Index::decode(&Index::default().encode()),
            Some(Index::default())
        );
    }
}
