//! What an operator sees: per-core stats (`stats.rs`, written only by their worker), merged and
//! encoded for Prometheus on scrape (`metrics.rs`), served with the rest of the admin API by a
//! thread of its own, off the workers (`admin.rs`), and access logs (`access.rs`).
//!
//! In: each worker's [`WorkerStats`], registered at start; the process-wide tables (backend
//! health, reloads). Out: the text of `GET /metrics` and the admin endpoints.

pub mod access;
pub mod admin;
mod metrics;
mod stats;

pub use metrics::encode;
pub use stats::{
    Counter, Gauge, Histogram, WorkerStats, AUTH_DECISIONS, BUCKETS_US, CLASSES, ERROR_STATUSES,
};

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Every worker's stats and the process-wide figures, for the admin side.
#[derive(Default)]
pub struct Registry {
    workers: Mutex<Vec<Option<Arc<WorkerStats>>>>,
    /// Config reloads that took effect, and those refused.
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Hash of the config in force (hex), and when it was loaded (Unix seconds).
    pub config: Mutex<(String, u64)>,
    /// Every listener is bound and the workers serve.
    pub ready: std::sync::atomic::AtomicBool,
    /// The access-log writer (one per process, across reloads).
    pub logs: access::Writer,
}

impl Registry {
    /// Worker `worker` registers (or replaces) its stats.
    pub fn register(&self, worker: usize, stats: Arc<WorkerStats>) {
        let mut w = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() <= worker {
            w.resize(worker + 1, None);
        }
        w[worker] = Some(stats);
    }

    /// The registered workers' stats.
    pub fn workers(&self) -> Vec<Arc<WorkerStats>> {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Records the config now in force.
    pub fn loaded(&self, hash: String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = (hash, now);
    }

    pub fn reload_failed(&self) {
        self.reloads_failed.fetch_add(1, Relaxed);
    }

    pub fn reload_ok(&self, hash: String) {
        self.reloads_ok.fetch_add(1, Relaxed);
        self.loaded(hash);
    }
}
