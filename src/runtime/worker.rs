//! One worker: an OS thread, optionally pinned to a core, running its own monoio runtime
//! (io_uring with the configured ring, or epoll), its own listeners and every connection it
//! accepts, until the shutdown broadcast arrives and its connections have drained.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, Runtime, RuntimeBuilder};
use tokio::sync::watch;

use super::listen;
use crate::config::{DriverKind, RingFlags, RuntimeSettings, Snapshot};
use crate::proxy::WorkerCtx;

/// Idle time of the kernel's submission-queue polling thread when `sqpoll` is on.
const SQPOLL_IDLE_MS: u32 = 2000;

/// What a worker reports once it is serving (or why it could not start).
pub struct Started {
    pub index: usize,
    pub driver: &'static str,
    pub core: Option<usize>,
}

pub struct WorkerSpec {
    pub index: usize,
    pub snapshot: Arc<Snapshot>,
    /// What the workers share (backends' health and ejections, rate limits).
    pub shared: Arc<crate::proxy::Shared>,
    /// New generations (reloads), from the control side.
    pub installs: tokio::sync::mpsc::UnboundedReceiver<super::control::Install>,
    pub core: Option<core_affinity::CoreId>,
    pub shutdown: watch::Receiver<bool>,
    pub ready: mpsc::Sender<Result<Started, String>>,
    /// Begin the graceful shutdown after this long (a timer on this worker's own loop, so it
    /// works where cross-thread wakes do not, e.g. under valgrind).
    pub exit_after: Option<Duration>,
}

enum Rt {
    Uring(Runtime<TimeDriver<IoUringDriver>>),
    Legacy(Runtime<TimeDriver<LegacyDriver>>),
}

fn uring_runtime(rt: &RuntimeSettings) -> io::Result<Runtime<TimeDriver<IoUringDriver>>> {
    let mut urb = io_uring::IoUring::builder();
    let RingFlags {
        coop_taskrun,
        single_issuer,
        defer_taskrun,
        sqpoll,
    } = rt.ring_flags;
    if coop_taskrun {
        urb.setup_coop_taskrun();
    }
    if single_issuer {
        urb.setup_single_issuer();
    }
    if defer_taskrun {
        urb.setup_defer_taskrun();
    }
    if sqpoll {
        urb.setup_sqpoll(SQPOLL_IDLE_MS);
    }
    RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(rt.ring_entries)
        .uring_builder(urb)
        .enable_timer()
        .build()
}

fn legacy_runtime() -> io::Result<Runtime<TimeDriver<LegacyDriver>>> {
    RuntimeBuilder::<LegacyDriver>::new().enable_timer().build()
}

/// Builds the runtime the config asks for, falling back to epoll for `driver = "auto"`.
fn build_runtime(index: usize, rt: &RuntimeSettings) -> Result<Rt, String> {
    let legacy = || {
        legacy_runtime()
            .map(Rt::Legacy)
            .map_err(|e| format!("worker {index}: cannot start the epoll driver: {e}"))
    };
    match rt.driver {
        DriverKind::Epoll => legacy(),
        DriverKind::IoUring => {
            if !monoio::utils::detect_uring() {
                return Err(format!(
                    "worker {index}: driver = \"io_uring\" but io_uring is not available on this kernel (use driver = \"auto\" or \"epoll\")"
                ));
            }
            uring_runtime(rt).map(Rt::Uring).map_err(|e| {
                format!(
                    "worker {index}: cannot create an io_uring with {} entries and flags [{}]: {e}",
                    rt.ring_entries,
                    rt.ring_flags.names().join(", ")
                )
            })
        }
        DriverKind::Auto => {
            if !monoio::utils::detect_uring() {
                tracing::warn!(
                    worker = index,
                    "io_uring is not available; falling back to epoll"
                );
                return legacy();
            }
            match uring_runtime(rt) {
                Ok(r) => Ok(Rt::Uring(r)),
                Err(e) => {
                    tracing::warn!(
                        worker = index,
                        "cannot create an io_uring with {} entries and flags [{}]: {e}; falling back to epoll",
                        rt.ring_entries,
                        rt.ring_flags.names().join(", ")
                    );
                    legacy()
                }
            }
        }
    }
}

/// The body of a worker thread.
pub fn run(spec: WorkerSpec) {
    let mut pinned = None;
    if let Some(core) = spec.core {
        if core_affinity::set_for_current(core) {
            pinned = Some(core.id);
        } else {
            tracing::warn!(
                worker = spec.index,
                core = core.id,
                "could not pin the worker to its core"
            );
        }
    }
    let rt = match build_runtime(spec.index, &spec.snapshot.runtime) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = spec.ready.send(Err(e));
            return;
        }
    };
    match rt {
        Rt::Uring(mut rt) => rt.block_on(serve(spec, "io_uring", pinned)),
        Rt::Legacy(mut rt) => rt.block_on(serve(spec, "epoll", pinned)),
    }
}

async fn serve(spec: WorkerSpec, driver: &'static str, core: Option<usize>) {
    let WorkerSpec {
        index,
        snapshot,
        shared,
        mut installs,
        core: _,
        mut shutdown,
        ready,
        exit_after,
    } = spec;
    let drain_timeout = snapshot.runtime.drain_timeout;
    let mut listeners = Vec::with_capacity(snapshot.listeners.len());
    for l in &snapshot.listeners {
        match listen::bind(l.addr) {
            Ok(sock) => listeners.push(sock),
            Err(e) => {
                let _ = ready.send(Err(format!("worker {index}: listener {}: {e}", l.name)));
                return;
            }
        }
    }
    let ctx = WorkerCtx::new(index, snapshot, &shared);
    super::sync::spawn(ctx.clone());
    // The one timer behind every connection's deadline.
    let sweep_ctx = ctx.clone();
    monoio::spawn(async move { sweep_ctx.deadlines.run_sweeper().await });

    // Relay the process-wide shutdown broadcast into this worker's local signal.
    let relay_ctx = ctx.clone();
    monoio::spawn(async move {
        // An error means the sender is gone (the main thread ended): shut down as well.
        let _ = shutdown.wait_for(|stop| *stop).await;
        relay_ctx.begin_shutdown();
    });
    if let Some(after) = exit_after {
        let timer_ctx = ctx.clone();
        monoio::spawn(async move {
            monoio::time::sleep(after).await;
            tracing::info!("worker {index}: exit-after {after:?} reached: draining");
            timer_ctx.begin_shutdown();
        });
    }

    // This worker's accept loops, by address (a reload adds and stops some).
    let accepting: Rc<RefCell<HashMap<SocketAddr, Rc<listen::Stop>>>> = Rc::default();
    for (sock, l) in listeners.into_iter().zip(&ctx.current().snapshot.listeners) {
        let stop = Rc::new(listen::Stop::default());
        monoio::spawn(listen::accept_loop(sock, l.addr, ctx.clone(), stop.clone()));
        accepting.borrow_mut().insert(l.addr, stop);
    }
    // Reloads: install each new generation between requests, then follow its listeners.
    let install_ctx = ctx.clone();
    monoio::spawn(async move {
        while let Some(inst) = installs.recv().await {
            let g = install_ctx.install(inst.snapshot, &inst.shared);
            super::sync::spawn_rounds(&g);
            let mut acc = accepting.borrow_mut();
            acc.retain(|addr, stop| {
                let keep = g.snapshot.listeners.iter().any(|l| l.addr == *addr);
                if !keep {
                    stop.stop();
                }
                keep
            });
            for l in &g.snapshot.listeners {
                if acc.contains_key(&l.addr) {
                    continue;
                }
                match listen::bind(l.addr) {
                    Ok(sock) => {
                        let stop = Rc::new(listen::Stop::default());
                        monoio::spawn(listen::accept_loop(
                            sock,
                            l.addr,
                            install_ctx.clone(),
                            stop.clone(),
                        ));
                        acc.insert(l.addr, stop);
                    }
                    Err(e) => tracing::error!("worker {index}: listener {}: {e}", l.name),
                }
            }
            let _ = inst.done.send(index);
        }
    });
    // Housekeeping on this worker's own timer, off the request path: every ABORT_CHECK the
    // clients of exchanges that wait for a response head are looked at and access-log buffers
    // whose oldest line reached its `flush` age are sent to the writer; every `period`,
    // pooled connections that expired or that their backend closed are closed and counted
    // failures are logged.
    let hk_ctx = ctx.clone();
    let period = housekeeping_period(&hk_ctx.current().snapshot);
    monoio::spawn(async move {
        let mut tick = monoio::time::interval(crate::proxy::ABORT_CHECK);
        tick.tick().await;
        let mut next = Instant::now() + period;
        // Memory goes back to the system at most every 500 ms (a collection walks the heap),
        // after connections gave their buffers back.
        let mut next_release = Instant::now();
        loop {
            tick.tick().await;
            let now = Instant::now();
            hk_ctx.check_aborts(now);
            if now >= next_release && hk_ctx.take_released() > 0 {
                if let Some(release) = super::RELEASE_MEMORY.get() {
                    release();
                }
                next_release = now + Duration::from_millis(500);
            }
            hk_ctx.logs.flush_due(now);
            if now >= next {
                let g = hk_ctx.current();
                g.proxy.housekeeping(now, &g.snapshot);
                next = now + period;
            }
        }
    });
    if ready
        .send(Ok(Started {
            index,
            driver,
            core,
        }))
        .is_err()
    {
        ctx.begin_shutdown();
    }
    drop(ready);

    ctx.shutdown_signal().await;
    let deadline = Instant::now() + drain_timeout;
    while ctx.live_connections() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5).min(deadline - Instant::now())).await;
    }
    let left = ctx.live_connections();
    if left > 0 {
        tracing::warn!("worker {index}: drain timeout reached; closing {left} connection(s)");
    } else {
        tracing::debug!(worker = index, "drained");
    }
    ctx.logs.flush_all();
    let g = ctx.current();
    tracing::info!("worker {index}: {}", g.proxy.summary(&g.snapshot));
}

/// How often a worker does its housekeeping: half the shortest pool `idle_timeout` (so an idle
/// connection is closed at most half its timeout late), between 50 ms and 1 s.
fn housekeeping_period(snapshot: &Snapshot) -> Duration {
    crate::upstream::Upstreams::shortest_idle_timeout(snapshot)
        .map_or(MAX_HOUSEKEEPING, |t| t / 2)
        .clamp(Duration::from_millis(50), MAX_HOUSEKEEPING)
}

const MAX_HOUSEKEEPING: Duration = Duration::from_secs(1);
