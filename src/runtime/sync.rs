//! The sync tick (DESIGN.md §3): every `sync_interval` (default 50 ms) each worker takes in what
//! crosses cores — the health checker's verdicts and the ejections other workers decided,
//! published in `crate::upstream::Shared` — and folds it into its own per-core view, where the
//! request path reads it without touching an atomic. A worker's own ejections are published the
//! moment it decides them, so every core knows within one tick. The same tick moves the rate
//! limiters' coarse clock (its period is the shortest of `runtime.sync_interval` and the limits'
//! `sync_interval`); their rounds with the coordinator run in a task of their own that wakes
//! when a round arrives (`crate::policy::ratelimit::sync`).

use std::rc::Rc;
use std::time::Instant;

use crate::proxy::WorkerCtx;

/// Starts `ctx`'s sync tick on its worker's event loop (it runs until the worker ends).
pub fn spawn(ctx: Rc<WorkerCtx>) {
    let every = crate::policy::ratelimit::tick_period(&ctx.snapshot);
    if let Some(rounds) = ctx.proxy.limits.take_rounds() {
        let ctx = ctx.clone();
        monoio::spawn(async move {
            ctx.proxy.limits.serve_rounds(rounds, &ctx.snapshot).await;
        });
    }
    monoio::spawn(async move {
        let mut tick = monoio::time::interval(every);
        loop {
            tick.tick().await;
            ctx.proxy.upstreams.sync(&ctx.snapshot, Instant::now());
            ctx.proxy.limits.tick();
            ctx.proxy.publish();
        }
    });
}
