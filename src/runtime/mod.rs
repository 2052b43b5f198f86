//! The runtime: everything around the forwarding path that is not HTTP. `run` takes the validated
//! config snapshot, raises the open-file limit, makes sure no foreign socket holds a listener
//! address, then starts one OS thread per worker (`coregate-w{i}`, pinned to core `i` when
//! `pin = true`). Each worker builds its own monoio runtime (io_uring or epoll), binds its own
//! SO_REUSEPORT socket per listener and hands every accepted connection to
//! [`crate::proxy::serve_connection`] with an `Rc<WorkerCtx>`. SIGTERM/SIGINT/SIGQUIT start a graceful
//! shutdown: workers stop accepting, in-flight connections get up to `drain_timeout` to finish,
//! then `run` returns. No state is shared between workers apart from the read-only snapshot.

pub mod control;
mod listen;
mod signals;
mod sync;
mod worker;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Snapshot;

/// Returns the memory a worker thread's allocator holds free to the system; set once by the
/// binary, which knows its allocator (mimalloc keeps freed pages until asked). Workers call it
/// from their housekeeping tick after connections went idle and gave their buffers back, so
/// that idle connections cost their small state only.
pub static RELEASE_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("listener {name}: {source}")]
    AddressInUse {
        name: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Worker(String),
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the proxy until a graceful shutdown completes: after SIGTERM/SIGINT/SIGQUIT, or by itself after
/// `exit_after` when given.
pub fn run(
    snapshot: Snapshot,
    config_path: Option<std::path::PathBuf>,
    exit_after: Option<Duration>,
) -> Result<(), RuntimeError> {
    match listen::raise_nofile_limit() {
        Ok(n) => tracing::debug!("open-file limit {n}"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    for l in &snapshot.listeners {
        listen::probe_free(l.addr).map_err(|source| RuntimeError::AddressInUse {
            name: l.name.clone(),
            source,
        })?;
    }

    let snapshot = Arc::new(snapshot);
    let observe = Arc::new(crate::observe::Registry::default());
    // The process-wide parts: the backends' shared table, one health checker, the resolver of
    // backend names and the rate-limit coordinator, each on a control thread of its own.
    let parts = control::ProcessParts::build(snapshot.clone(), None, observe.clone())?;
    let shared = parts.shared.clone();
    if let Some(path) = &config_path {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        observe.loaded(control::hash(&text));
    }
    let rt = &snapshot.runtime;
    let cores = if rt.pin {
        let ids = core_affinity::get_core_ids().unwrap_or_default();
        if ids.is_empty() {
            tracing::warn!(
                "pin = true but the usable cores cannot be listed; workers are not pinned"
            );
        } else if rt.workers > ids.len() {
            tracing::warn!(
                "{} workers on {} usable cores: some cores run two workers",
                rt.workers,
                ids.len()
            );
        }
        ids
    } else {
        Vec::new()
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut install_txs = Vec::with_capacity(rt.workers);
    let mut install_rxs = Vec::with_capacity(rt.workers);
    for _ in 0..rt.workers {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        install_txs.push(tx);
        install_rxs.push(Some(rx));
    }
    let control = Arc::new(control::Control::new(
        config_path,
        parts,
        install_txs,
        observe.clone(),
    ));
    let signals = signals::Watcher::start(stop_tx.clone(), rt.drain_timeout, control.clone())?;
    if let Some(after) = exit_after {
        let stop = stop_tx.clone();
        std::thread::Builder::new()
            .name("coregate-exit-after".into())
            .spawn(move || {
                std::thread::sleep(after);
                tracing::info!(
                    "exit-after {after:?} reached: stopped accepting; draining connections"
                );
                let _ = stop.send(true);
            })?;
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(rt.workers);
    for index in 0..rt.workers {
        let spec = worker::WorkerSpec {
            index,
            snapshot: snapshot.clone(),
            shared: shared.clone(),
            installs: install_rxs[index]
                .take()
                .expect("one install channel per worker"),
            core: (!cores.is_empty()).then(|| cores[index % cores.len()]),
            shutdown: stop_rx.clone(),
            ready: ready_tx.clone(),
            exit_after,
        };
        let t = std::thread::Builder::new()
            .name(format!("coregate-w{index}"))
            .spawn(move || worker::run(spec))?;
        threads.push(t);
    }
    drop(ready_tx);
    drop(stop_rx);

    let mut started = Vec::with_capacity(rt.workers);
    let mut failure = None;
    for _ in 0..rt.workers {
        match ready_rx.recv() {
            Ok(Ok(s)) => started.push(s),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert_with(|| "a worker thread died while starting".to_string());
                break;
            }
        }
    }
    if let Some(e) = failure {
        let _ = stop_tx.send(true);
        for t in threads {
            let _ = t.join();
        }
        signals.stop();
        return Err(RuntimeError::Worker(e));
    }

    log_summary(&snapshot, &mut started);
    control
        .observe
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // The admin API, on its own thread (off when [admin] is absent).
    let _admin = match &snapshot.admin {
        Some(a) => match crate::observe::admin::Admin::start(a, control.clone()) {
            Ok(admin) => Some(admin),
            Err(e) => {
                tracing::error!("admin API on {}: {e}", a.addr);
                None
            }
        },
        None => None,
    };
    let mut panicked = 0;
    for t in threads {
        if t.join().is_err() {
            panicked += 1;
        }
    }
    signals.stop();
    // The workers sent their last access-log lines as they stopped: write them out.
    control.observe.logs.stop();
    if panicked > 0 {
        return Err(RuntimeError::Worker(format!(
            "{panicked} worker thread(s) panicked"
        )));
    }
    tracing::info!("shutdown complete");
    Ok(())
}

fn log_summary(s: &Snapshot, started: &mut [worker::Started]) {
    started.sort_by_key(|w| w.index);
    let rt = &s.runtime;
    tracing::info!(
        "coregate {} started: {} worker(s), ring_entries {}, ring_flags [{}], drain_timeout {:?}",
        env!("CARGO_PKG_VERSION"),
        started.len(),
        rt.ring_entries,
        rt.ring_flags.names().join(", "),
        rt.drain_timeout
    );
    for w in started.iter() {
        match w.core {
            Some(c) => tracing::info!(
                "worker {}: driver {}, pinned to core {c}",
                w.index,
                w.driver
            ),
            None => tracing::info!("worker {}: driver {}, not pinned", w.index, w.driver),
        }
    }
    for l in &s.listeners {
        let tls = if l.tls.is_some() { " (TLS)" } else { "" };
        if let Some(t) = &l.tcp {
            let u = &s.upstreams[t.upstream].name;
            tracing::info!(
                "listener {} on {}{tls}: tcp -> upstream {u}",
                l.name,
                l.addr
            );
            continue;
        }
        let names: Vec<&str> = l.routes.routes().iter().map(|r| &*r.name).collect();
        tracing::info!(
            "listener {} on {}{tls}: routes [{}]",
            l.name,
            l.addr,
            names.join(", ")
        );
    }
    for u in &s.upstreams {
        let b: Vec<String> = u
            .backends
            .iter()
            .map(|b| format!("{} (weight {})", b.addr, b.weight))
            .collect();
        tracing::info!(
            "upstream {} ({}): {}",
            u.name,
            u.describe_balancer(),
            b.join(", ")
        );
    }
    for r in &s.routes {
        tracing::info!("route {}", s.describe_route(r));
    }
}
