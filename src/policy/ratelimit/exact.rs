//! `exact` mode: one GCRA state per key, shared by every worker (an `AtomicU64` each). A
//! worker finds a key's state once (a sharded map behind mutexes: the first request of a key on
//! a worker) and keeps it; every request after that costs one compare-and-swap on a cache line
//! other cores also write — the price of exactness this mode exists to show.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

#[derive(Default)]
pub struct ExactTable {
    shards: [Mutex<HashMap<u64, Arc<AtomicU64>>>; SHARDS],
}

impl ExactTable {
    pub fn new() -> ExactTable {
        ExactTable::default()
    }

    /// The shared state of `key` (created on first use).
    pub fn state(&self, key: u64) -> Arc<AtomicU64> {
        let shard = &self.shards[(key >> 60) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone()
    }

    /// Drops the states no worker holds any more and that are idle (their TAT is behind
    /// `now_ns`): called by the coordinator, never on a request.
    pub fn collect(&self, now_ns: u64) {
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, s| {
                Arc::strong_count(s) > 1 || s.load(std::sync::atomic::Ordering::Relaxed) > now_ns
            });
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
