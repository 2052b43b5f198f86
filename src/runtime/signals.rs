//! Signal handling on a plain std thread. SIGTERM, SIGINT and SIGQUIT: the first one broadcasts
//! the graceful shutdown to every worker; a second one ends the process at once (exit status
//! 1). SIGHUP reloads the config (on this thread: the workers never wait on it). SIGUSR1 reopens
//! the access logs (logrotate's convention). SIGUSR2 is caught (its default action would kill
//! the process) and logged.

use std::thread::JoinHandle;
use std::time::Duration;

use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

use super::control::Control;
use signal_hook::iterator::{Handle, Signals};
use tokio::sync::watch;

pub struct Watcher {
    handle: Handle,
    thread: JoinHandle<()>,
}

impl Watcher {
    pub fn start(
        stop: watch::Sender<bool>,
        drain: Duration,
        control: Arc<Control>,
    ) -> std::io::Result<Self> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("coregate-signals".into())
            .spawn(move || {
                let mut seen = false;
                for sig in signals.forever() {
                    let name = match sig {
                        SIGTERM => "SIGTERM",
                        SIGINT => "SIGINT",
                        SIGQUIT => "SIGQUIT",
                        SIGHUP => "SIGHUP",
                        SIGUSR1 => "SIGUSR1",
                        _ => "SIGUSR2",
                    };
                    if sig == SIGHUP {
                        tracing::info!("SIGHUP: reloading the config");
                        let _ = control.reload();
                        continue;
                    }
                    if sig == SIGUSR1 {
                        tracing::info!("SIGUSR1: reopening the access logs");
                        control.reopen_logs();
                        continue;
                    }
                    if sig == SIGUSR2 {
                        tracing::info!("{name} received: ignored (no action is bound to it yet)");
                        continue;
                    }
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
