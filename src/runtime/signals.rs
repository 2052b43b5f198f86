//! SIGTERM/SIGINT handling on a plain std thread: the first signal broadcasts the graceful
//! shutdown to every worker; a second one ends the process at once (exit status 1).

use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use tokio::sync::watch;

pub struct Watcher {
    handle: Handle,
    thread: JoinHandle<()>,
}

impl Watcher {
    pub fn start(stop: watch::Sender<bool>, drain: Duration) -> std::io::Result<Self> {
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("coregate-signals".into())
            .spawn(move || {
                let mut seen = false;
                for sig in signals.forever() {
                    let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                    if seen {
                        tracing::warn!("{name} again: exiting without waiting for connections");
                        std::process::exit(1);
                    }
                    seen = true;
                    tracing::info!(
                        "{name}: stopped accepting; draining connections for up to {drain:?}"
                    );
                    let _ = stop.send(true);
                }
            })?;
        Ok(Watcher { handle, thread })
    }

    /// Stops the watcher thread and waits for it.
    pub fn stop(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}
