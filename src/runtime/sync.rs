//! The sync tick (DESIGN.md §3): every `sync_interval` (default 50 ms) each worker takes in what
//! crosses cores — the health checker's verdicts and the ejections other workers decided,
//! published in `crate::upstream::Shared` — and folds it into its own per-core view, where the
//! request path reads it without touching an atomic. A worker's own ejections are published the
//! moment it decides them, so every core knows within one tick. The same tick moves the rate
//! limiters' coarse clock and publishes the gauges the admin side reads (its period is the
//! shortest of `runtime.sync_interval` and the limits' `sync_interval`); the limiters' rounds
//! with the coordinator run in a task of their own per generation, woken when a round arrives
//! (`crate::policy::ratelimit::sync`).

use std::rc::Rc;
use std::time::Instant;

use crate::proxy::{Generation, WorkerCtx};

/// Starts `ctx`'s sync tick on its worker's event loop (it runs until the worker ends; each
/// tick works on the generation in force).
pub fn spawn(ctx: Rc<WorkerCtx>) {
    spawn_rounds(&ctx.current());
    monoio::spawn(async move {
        let mut every = crate::policy::ratelimit::tick_period(&ctx.current().snapshot);
        let mut tick = monoio::time::interval(every);
        loop {
            tick.tick().await;
            let g = ctx.current();
            g.proxy.upstreams.sync(&g.snapshot, Instant::now());
            g.proxy.limits.tick();
            g.proxy.publish(ctx.live_connections());
            let want = crate::policy::ratelimit::tick_period(&g.snapshot);
            if want != every {
                every = want;
                tick = monoio::time::interval(every);
            }
        }
    });
}

/// Serves the rate-limit coordinator's rounds for `gen`'s limiters (until that coordinator
/// stops, when a newer generation has replaced it).
pub fn spawn_rounds(gen: &Rc<Generation>) {
    if let Some(rounds) = gen.proxy.limits.take_rounds() {
        let gen = gen.clone();
        monoio::spawn(async move {
            gen.proxy.limits.serve_rounds(rounds, &gen.snapshot).await;
        });
    }
}
