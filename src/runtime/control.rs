//! Hot reload: the control side of a config change, off the workers. On `SIGHUP` or
//! `POST /reload` the config file is read and validated on the calling control thread; an
//! invalid one is logged (`file:line:col` per error), counted, and changes nothing. A valid one
//! gets its process-wide parts built — the backends' shared table (health and ejections of
//! backends that stay carried over), a health checker, a resolver and a rate-limit coordinator
//! for it — and is sent to every worker, which installs it between requests: new connections
//! and the next request of each keep-alive connection use it, requests in flight finish on the
//! old one. Listeners that appear are bound by every worker; those that go stop accepting and
//! their connections drain. The previous process-wide parts stop once every worker has moved.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::config::Snapshot;
use crate::observe::Registry;
use crate::policy::ratelimit::sync::Coordinator;
use crate::upstream::{Checker, Resolver};

/// A new generation for a worker.
pub struct Install {
    pub snapshot: Arc<Snapshot>,
    pub shared: Arc<crate::proxy::Shared>,
    /// Answered with the worker's index once it has installed it.
    pub done: mpsc::Sender<usize>,
}

/// The process-wide parts of one generation (stopped when dropped).
pub struct ProcessParts {
    pub snapshot: Arc<Snapshot>,
    pub shared: Arc<crate::proxy::Shared>,
    pub checker: Option<Checker>,
    pub resolver: Option<Resolver>,
    pub coordinator: Option<Coordinator>,
}

impl ProcessParts {
    /// Builds the process-wide parts of `snapshot`; `previous`'s backends' health and
    /// ejections carry over, as does the registry of stats.
    pub fn build(
        snapshot: Arc<Snapshot>,
        previous: Option<&ProcessParts>,
        observe: Arc<Registry>,
    ) -> std::io::Result<ProcessParts> {
        observe.logs.check(&snapshot.access_logs)?;
        let backends = Arc::new(match previous {
            Some(p) => {
                crate::upstream::Shared::carry_over(&snapshot, &p.snapshot, &p.shared.upstreams)
            }
            None => crate::upstream::Shared::new(&snapshot),
        });
        let checker = Checker::start(snapshot.clone(), backends.clone())?;
        let resolver = Resolver::start(&snapshot, backends.clone())?;
        let limits = Arc::new(crate::policy::ratelimit::Shared::new(&snapshot));
        let (coordinator, links) = Coordinator::start(snapshot.clone(), limits.clone())?;
        let shared = Arc::new(crate::proxy::Shared {
            upstreams: backends,
            limits,
            links: Mutex::new(links),
            observe,
        });
        Ok(ProcessParts {
            snapshot,
            shared,
            checker,
            resolver,
            coordinator,
        })
    }
}

/// What reloads need: the config file, the parts in force, the workers' install channels.
pub struct Control {
    path: Option<PathBuf>,
    parts: Mutex<Option<ProcessParts>>,
    workers: Vec<tokio::sync::mpsc::UnboundedSender<Install>>,
    pub observe: Arc<Registry>,
}

impl Control {
    pub fn new(
        path: Option<PathBuf>,
        parts: ProcessParts,
        workers: Vec<tokio::sync::mpsc::UnboundedSender<Install>>,
        observe: Arc<Registry>,
    ) -> Control {
        Control {
            path,
            parts: Mutex::new(Some(parts)),
            workers,
            observe,
        }
    }

    /// The snapshot in force and the backends' shared table (for the admin side).
    pub fn current(&self) -> (Arc<Snapshot>, Arc<crate::upstream::Shared>) {
        let p = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let p = p
            .as_ref()
            .expect("parts are always present outside a reload");
        (p.snapshot.clone(), p.shared.upstreams.clone())
    }

    /// Reads, validates and installs the config file again. `Err`: the errors, one per line;
    /// the config in force is unchanged.
    pub fn reload(&self) -> Result<String, String> {
        let Some(path) = &self.path else {
            return Err("no config file to reload".into());
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("cannot read {}: {e}", path.display());
                return Err(self.refused(msg));
            }
        };
        let snapshot = match crate::config::parse(&path.display().to_string(), &text) {
            Ok(s) => Arc::new(s),
            Err(e) => return Err(self.refused(e.to_string())),
        };
        self.install(snapshot, hash(&text))
    }

    /// Installs a validated snapshot (a reload, or a runtime change from the admin API).
    pub fn install(&self, snapshot: Arc<Snapshot>, hash: String) -> Result<String, String> {
        let mut guard = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let previous = guard.take();
        let Some(previous) = previous else {
            return Err("no config in force".into());
        };
        // New listeners must be free (another process, or a coregate, would share them).
        let new_addrs: Vec<SocketAddr> = snapshot
            .listeners
            .iter()
            .map(|l| l.addr)
            .filter(|a| !previous.snapshot.listeners.iter().any(|o| o.addr == *a))
            .collect();
        for a in &new_addrs {
            if let Err(e) = super::listen::probe_free(*a) {
                *guard = Some(previous);
                return Err(self.refused(format!("listener {a}: {e}")));
            }
        }
        if snapshot.runtime.workers != previous.snapshot.runtime.workers {
            tracing::warn!(
                "reload: [runtime] workers changed from {} to {}; takes effect at the next restart",
                previous.snapshot.runtime.workers,
                snapshot.runtime.workers
            );
        }
        let parts =
            match ProcessParts::build(snapshot.clone(), Some(&previous), self.observe.clone()) {
                Ok(p) => p,
                Err(e) => {
                    *guard = Some(previous);
                    return Err(self.refused(format!("cannot start: {e}")));
                }
            };
        let (done_tx, done_rx) = mpsc::channel();
        let mut sent = 0;
        for tx in &self.workers {
            let msg = Install {
                snapshot: snapshot.clone(),
                shared: parts.shared.clone(),
                done: done_tx.clone(),
            };
            if tx.send(msg).is_ok() {
                sent += 1;
            }
        }
        drop(done_tx);
        let mut installed = 0;
        while installed < sent {
            match done_rx.recv_timeout(Duration::from_secs(5)) {
                Ok(_) => installed += 1,
                Err(_) => break,
            }
        }
        *guard = Some(parts);
        drop(guard);
        // The previous generation's checker, resolver and coordinator stop here.
        drop(previous);
        self.observe.reload_ok(hash.clone());
        tracing::info!(
            "config reloaded ({installed}/{sent} workers, hash {hash}): {} listener(s), {} upstream(s), {} route(s)",
            snapshot.listeners.len(),
            snapshot.upstreams.len(),
            snapshot.routes.len()
        );
        Ok(hash)
    }

    fn refused(&self, errors: String) -> String {
        self.observe.reload_failed();
        for line in errors.lines() {
            tracing::error!("reload refused, the config in force stays: {line}");
        }
        errors
    }

    /// Reopens the access logs (`SIGUSR1`).
    pub fn reopen_logs(&self) {
        self.observe.logs.reopen();
    }

    /// Stops the process-wide parts (at shutdown).
    pub fn stop(&self) {
        self.parts.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The hash a config is known by (`coregate_config_info`): xxh3 of its text, in hex.
pub fn hash(text: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

impl crate::observe::admin::ControlPlane for Control {
    fn current(&self) -> (Arc<Snapshot>, Arc<crate::upstream::Shared>) {
        Control::current(self)
    }

    fn reload(&self) -> Result<String, String> {
        tracing::info!("admin: reloading the config");
        Control::reload(self)
    }

    fn install(&self, snapshot: Snapshot, hash: String) -> Result<String, String> {
        Control::install(self, Arc::new(snapshot), hash)
    }

    fn registry(&self) -> &Registry {
        &self.observe
    }

    fn ready(&self) -> bool {
        self.observe
            .ready
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
