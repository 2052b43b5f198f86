//! Listening sockets and the accept loop: the first step of the forwarding path. Each worker
//! binds its own SO_REUSEPORT socket per configured listener (the kernel spreads connections over
//! them), accepts, sets TCP_NODELAY and spawns `proxy::serve_connection` for the connection on
//! its own thread. Stops accepting when the worker's shutdown signal fires.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener};

use crate::proxy::WorkerCtx;

/// Listen backlog of each worker's socket.
const BACKLOG: i32 = 4096;
/// Pause after an accept failure caused by exhausted resources (EMFILE and kin).
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(100);
/// Pause after any other unexpected accept failure.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Fails if some socket — another process, or a stale coregate — already listens on `addr`.
/// The probe binds *without* SO_REUSEPORT, which the kernel refuses while any socket is bound
/// there; our own workers bind only after this check.
pub fn probe_free(addr: SocketAddr) -> io::Result<()> {
    std::net::TcpListener::bind(addr).map(drop).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already in use by another socket (another process or a running coregate?)"),
            )
        } else {
            io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"))
        }
    })
}

/// Binds this worker's SO_REUSEPORT listener. Call inside the worker's runtime.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(BACKLOG);
    TcpListener::bind_with_config(addr, &opts)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))
}

fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::EPROTO | libc::EPERM)
    )
}

/// Tells one accept loop to stop (its listener left the config); one worker's, so a `Cell`.
#[derive(Default)]
pub struct Stop {
    stopped: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Stop {
    pub fn stop(&self) {
        self.stopped.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Completes once [`Stop::stop`] was called.
    pub fn wait(&self) -> StopWait<'_> {
        StopWait(self)
    }
}

pub struct StopWait<'a>(&'a Stop);

impl Future for StopWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.stopped.get() {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Accepts on one listener until shutdown or `stop`; the listener is dropped (closed) on
/// return, and the connections it accepted go on.
pub async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    ctx: Rc<WorkerCtx>,
    stop: Rc<Stop>,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = ctx.shutdown_signal() => break,
            _ = stop.wait() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tracing::trace!(
                    target: "coregate::accept",
                    worker = ctx.index,
                    listener = %addr,
                    %peer,
                    "accepted"
                );
                let live = ctx.track_connection();
                let fut = crate::proxy::serve_connection(stream, peer, addr, live);
                monoio::spawn(fut);
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                let exhausted = is_exhaustion(&e);
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    tracing::warn!(
                        worker = ctx.index,
                        listener = %addr,
                        "accept failed: {e}{}",
                        if exhausted {
                            " (out of file descriptors or memory; backing off)"
                        } else {
                            ""
                        }
                    );
                    last_warning = Some(Instant::now());
                }
                let pause = if exhausted {
                    EXHAUSTED_BACKOFF
                } else {
                    ERROR_BACKOFF
                };
                monoio::select! {
                    _ = monoio::time::sleep(pause) => {},
                    _ = ctx.shutdown_signal() => break,
                }
            }
        }
    }
}

/// Raises the soft open-file limit to the hard limit; returns the limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(raised.rlim_cur);
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_detects_a_foreign_listener_even_with_reuse_port() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = probe_free(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("already in use"), "{e}");
        drop(taken);
        probe_free(addr).unwrap();
    }

    #[test]
    fn nofile_limit_is_raised_to_hard() {
        let now = raise_nofile_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(now, lim.rlim_cur);
    }

    #[test]
    fn error_classes() {
        assert!(is_exhaustion(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        assert!(is_transient(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
