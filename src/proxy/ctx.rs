//! The per-worker context every connection task holds (`Rc<WorkerCtx>`): which worker this is,
//! the config generation in force, the live-connection count and the worker-local shutdown
//! signal. All of it is thread-local state (`Cell`/`RefCell`): reading it costs no atomic.
//! `crate::runtime` builds one per worker and hands it to [`super::serve_connection`]; it is
//! defined here, with the path that receives it, so that `proxy` never imports `runtime`.
//!
//! A [`Generation`] is one config snapshot with everything a worker built from it (balancers,
//! pools, limiters, stats). A reload installs a new one: new connections, and the next request
//! of each keep-alive connection, use it; requests in flight finish on the one they started
//! with, which goes away with its last user.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::config::Snapshot;

/// A config snapshot and this worker's state built from it.
pub struct Generation {
    /// Counts installs on this worker (0 for the config it started with).
    pub id: u64,
    pub snapshot: Arc<Snapshot>,
    /// The forwarding path's per-worker state: upstream pools, balancers, limiters, counters.
    pub proxy: super::WorkerState,
}

/// State shared by the tasks of one worker thread.
pub struct WorkerCtx {
    /// Worker number, 0-based (thread name `coregate-w{index}`).
    pub index: usize,
    current: RefCell<Rc<Generation>>,
    current_id: Cell<u64>,
    /// Exchanges awaiting a response head, watched for clients that leave (whatever their
    /// generation).
    pub aborts: super::abort::AbortWatch,
    /// This worker's access-log buffers (they outlive generations).
    pub logs: crate::observe::access::LogBuffers,
    /// Spare response buffers (leased per request, returned after).
    spare: RefCell<Vec<Vec<u8>>>,
    /// The deadline of every connection (and of the parts of one that run at once).
    pub deadlines: super::deadline::Deadlines,
    /// Blocks for the state of connections serving requests (see `arena.rs`).
    pub(super) busy: super::arena::Arena,
    /// Spare connection buffers (a connection takes one when it has bytes to serve).
    workspaces: RefCell<Vec<super::client::Workspace>>,
    released: Cell<u64>,
    live: Cell<usize>,
    /// Connections accepted so far: each gets the next number (never 0), unique on this worker
    /// for its lifetime (upstream connections kept for one client are tagged with it).
    accepted: Cell<u64>,
    shutting_down: Cell<bool>,
    waiters: RefCell<Waiters>,
    /// Open connections of each TCP listener on this worker (few listeners: a list).
    tcp_open: RefCell<Vec<(std::net::SocketAddr, u32)>>,
}

#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl WorkerCtx {
    /// Counts a new connection of the TCP listener at `addr`; false (nothing counted) when it
    /// has `max` open already.
    pub fn tcp_enter(&self, addr: std::net::SocketAddr, max: u32) -> bool {
        let mut open = self.tcp_open.borrow_mut();
        let i = match open.iter().position(|(a, _)| *a == addr) {
            Some(i) => i,
            None => {
                open.push((addr, 0));
                open.len() - 1
            }
        };
        if open[i].1 >= max {
            return false;
        }
        open[i].1 += 1;
        true
    }

    pub fn tcp_leave(&self, addr: std::net::SocketAddr) {
        if let Some(e) = self
            .tcp_open
            .borrow_mut()
            .iter_mut()
            .find(|(a, _)| *a == addr)
        {
            e.1 = e.1.saturating_sub(1);
        }
    }

    pub fn new(index: usize, snapshot: Arc<Snapshot>, shared: &super::Shared) -> Rc<Self> {
        let mut proxy = super::WorkerState::new(&snapshot, index, shared);
        let logs = shared.observe.logs.buffers(index);
        proxy.log_slots = logs.slots_for(&shared.observe.logs, &snapshot.access_logs);
        Rc::new(WorkerCtx {
            index,
            logs,
            current: RefCell::new(Rc::new(Generation {
                id: 0,
                snapshot,
                proxy,
            })),
            current_id: Cell::new(0),
            aborts: super::abort::AbortWatch::default(),
            spare: RefCell::new(Vec::new()),
            deadlines: super::deadline::Deadlines::default(),
            busy: super::arena::Arena::default(),
            workspaces: RefCell::new(Vec::new()),
            released: Cell::new(0),
            live: Cell::new(0),
            accepted: Cell::new(0),
            shutting_down: Cell::new(false),
            waiters: RefCell::new(Waiters::default()),
            tcp_open: RefCell::new(Vec::new()),
        })
    }

    /// The generation in force (one `Rc` clone: per request, not per byte).
    pub fn current(&self) -> Rc<Generation> {
        self.current.borrow().clone()
    }

    /// The id of the generation in force (one `Cell` read).
    #[inline]
    pub fn current_id(&self) -> u64 {
        self.current_id.get()
    }

    /// The generation in force has a listener on `addr`.
    pub fn current_has_listener(&self, addr: std::net::SocketAddr) -> bool {
        self.current
            .borrow()
            .snapshot
            .listeners
            .iter()
            .any(|l| l.addr == addr)
    }

    /// Installs a new snapshot: built here from what the process shares for it, with the
    /// idle pooled connections of backends that stay carried over. Returns the new generation.
    pub fn install(&self, snapshot: Arc<Snapshot>, shared: &super::Shared) -> Rc<Generation> {
        let old = self.current();
        let mut proxy = super::WorkerState::new(&snapshot, self.index, shared);
        proxy.log_slots = self
            .logs
            .slots_for(&shared.observe.logs, &snapshot.access_logs);
        proxy
            .upstreams
            .adopt(&snapshot, &old.proxy.upstreams, &old.snapshot);
        proxy
            .stats
            .carry_from(&snapshot, &old.proxy.stats, &old.snapshot);
        let id = old.id + 1;
        let g = Rc::new(Generation {
            id,
            snapshot,
            proxy,
        });
        *self.current.borrow_mut() = g.clone();
        self.current_id.set(id);
        g
    }

    /// Every [`super::ABORT_CHECK`]: wakes the exchanges whose client left while they waited
    /// for a response head longer than that (on the worker's own timer, never on a request).
    pub fn check_aborts(&self, now: std::time::Instant) {
        self.aborts.check(now - super::ABORT_CHECK);
    }

    pub(super) fn lease(&self) -> Vec<u8> {
        self.spare
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(super::body::RESPONSE_BUF))
    }

    pub(super) fn give_back(&self, mut buf: Vec<u8>) {
        let mut spare = self.spare.borrow_mut();
        if buf.capacity() >= super::body::RESPONSE_BUF && spare.len() < 64 {
            buf.clear();
            spare.push(buf);
        }
    }

    /// Buffers for a connection of `snap` that has bytes to serve.
    pub(super) fn workspace(&self, snap: &Snapshot) -> super::client::Workspace {
        match self.workspaces.borrow_mut().pop() {
            Some(mut ws) => {
                ws.reset(snap);
                ws
            }
            None => super::client::Workspace::new(snap),
        }
    }

    /// Takes back the buffers of a connection that went idle or closed.
    pub(super) fn give_workspace(&self, mut ws: super::client::Workspace) {
        ws.release();
        let mut spare = self.workspaces.borrow_mut();
        if spare.len() < SPARE_WORKSPACES {
            spare.push(ws);
        } else {
            self.released.set(self.released.get() + 1);
        }
    }

    /// Connection buffers freed (beyond the spares) since the last call: memory the allocator
    /// may give back to the system.
    pub fn take_released(&self) -> u64 {
        self.released.replace(0)
    }

    /// True once a graceful shutdown began: finish the current request, answer it with
    /// `Connection: close`, and do not wait for another one. One `Cell` read.
    #[inline]
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// A future that completes when a graceful shutdown begins (at once if it already has).
    /// Race it against an idle keep-alive read so idle connections close promptly.
    pub fn shutdown_signal(&self) -> ShutdownSignal<'_> {
        ShutdownSignal {
            ctx: self,
            slot: None,
        }
    }

    /// Connections currently served by this worker.
    pub fn live_connections(&self) -> usize {
        self.live.get()
    }

    /// Begins the graceful shutdown of this worker: wakes every [`ShutdownSignal`].
    pub fn begin_shutdown(&self) {
        if self.shutting_down.replace(true) {
            return;
        }
        let wakers: Vec<Waker> = {
            let mut w = self.waiters.borrow_mut();
            w.free.clear();
            w.slots.drain(..).flatten().collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// A new connection's number on this worker (1, 2, ...).
    pub fn next_connection_id(&self) -> u64 {
        self.accepted.set(self.accepted.get() + 1);
        self.accepted.get()
    }

    /// Counts a connection as live until the guard drops.
    pub fn track_connection(self: &Rc<Self>) -> LiveGuard {
        self.live.set(self.live.get() + 1);
        LiveGuard { ctx: self.clone() }
    }
}

/// Connection buffers kept for reuse at most: connections beyond this many busy at once
/// allocate their own, freed when they go idle.
const SPARE_WORKSPACES: usize = 64;

/// Decrements the worker's live-connection count when dropped.
pub struct LiveGuard {
    ctx: Rc<WorkerCtx>,
}

impl LiveGuard {
    /// The worker the connection is counted on.
    pub fn ctx(&self) -> &WorkerCtx {
        &self.ctx
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.ctx.live.set(self.ctx.live.get() - 1);
    }
}

/// See [`WorkerCtx::shutdown_signal`].
pub struct ShutdownSignal<'a> {
    ctx: &'a WorkerCtx,
    slot: Option<usize>,
}

impl Future for ShutdownSignal<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.ctx.shutting_down.get() {
            self.slot = None;
            return Poll::Ready(());
        }
        let mut w = self.ctx.waiters.borrow_mut();
        match self.slot {
            Some(i) => match &mut w.slots[i] {
                Some(old) if old.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            },
            None => {
                let i = match w.free.pop() {
                    Some(i) => {
                        w.slots[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        w.slots.push(Some(cx.waker().clone()));
                        w.slots.len() - 1
                    }
                };
                drop(w);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for ShutdownSignal<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if self.ctx.shutting_down.get() {
                return; // slots were drained by begin_shutdown
            }
            let mut w = self.ctx.waiters.borrow_mut();
            w.slots[i] = None;
            w.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::counting_waker;

    fn snapshot() -> Arc<Snapshot> {
        let src = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"u\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n";
        Arc::new(crate::config::parse("t", src).unwrap())
    }

    #[test]
    fn shutdown_wakes_pending_signals_and_reuses_slots() {
        let s = snapshot();
        let ctx = WorkerCtx::new(0, s.clone(), &crate::proxy::Shared::standalone(&s));
        let (waker, counter) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            let mut s = Box::pin(ctx.shutdown_signal());
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            ctx.waiters.borrow().slots.len(),
            1,
            "dropped signals must free their slot"
        );
        let mut a = Box::pin(ctx.shutdown_signal());
        let mut b = Box::pin(ctx.shutdown_signal());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert!(!ctx.shutting_down());
        ctx.begin_shutdown();
        assert!(ctx.shutting_down());
        assert_eq!(counter.wakes(), 2);
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(b.as_mut().poll(&mut cx).is_ready());
        assert!(Box::pin(ctx.shutdown_signal())
            .as_mut()
            .poll(&mut cx)
            .is_ready());
        ctx.begin_shutdown(); // idempotent
        assert_eq!(counter.wakes(), 2);
    }

    #[test]
    fn live_guard_counts() {
        let s = snapshot();
        let ctx = WorkerCtx::new(1, s.clone(), &crate::proxy::Shared::standalone(&s));
        let a = ctx.track_connection();
        let b = ctx.track_connection();
        assert_eq!(ctx.live_connections(), 2);
        drop(a);
        assert_eq!(ctx.live_connections(), 1);
        drop(b);
        assert_eq!(ctx.live_connections(), 0);
    }
}
