//! Noticing a client that leaves while its response head is awaited, without a system call per
//! request. An exchange registers its client socket for the duration of the wait (a slot in a
//! per-worker table, with the task's waker); the worker's housekeeping tick peeks — one
//! non-blocking `recv(MSG_PEEK)` — at the clients of exchanges that have waited longer than a
//! tick, and wakes those whose client has closed its side. The exchange then aborts (nginx's
//! 499). A response that arrives within a tick, which is nearly every one, costs a slot write
//! and nothing else.

use super::sys::{peek, Peek};
use std::cell::RefCell;
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often the clients of waiting exchanges are looked at, and how long an exchange waits
/// before its client is: a client that leaves is noticed within one to two of these.
pub const ABORT_CHECK: Duration = Duration::from_millis(200);

struct Entry {
    fd: RawFd,
    since: Instant,
    waker: Option<Waker>,
    aborted: bool,
    /// The client sent more bytes (a request it pipelines): a close behind them cannot be seen
    /// without reading them, so it is no longer looked at.
    given_up: bool,
}

/// The exchanges of one worker that await a response head.
#[derive(Default)]
pub struct AbortWatch {
    slots: RefCell<Vec<Option<Entry>>>,
    free: RefCell<Vec<usize>>,
}

impl AbortWatch {
    fn register(&self, fd: RawFd, since: Instant, waker: &Waker) -> usize {
        let entry = Entry {
            fd,
            since,
            waker: Some(waker.clone()),
            aborted: false,
            given_up: false,
        };
        let mut slots = self.slots.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i] = Some(entry);
                i
            }
            None => {
                slots.push(Some(entry));
                slots.len() - 1
            }
        }
    }

    fn unregister(&self, i: usize) {
        self.slots.borrow_mut()[i] = None;
        self.free.borrow_mut().push(i);
    }

    fn aborted(&self, i: usize) -> bool {
        self.slots.borrow()[i].as_ref().is_some_and(|e| e.aborted)
    }

    /// Housekeeping: looks at the client of every exchange waiting since before `older_than`
    /// and wakes those whose client closed. Returns how many were found.
    pub fn check(&self, older_than: Instant) -> usize {
        let mut found = 0;
        let mut slots = self.slots.borrow_mut();
        for e in slots.iter_mut().flatten() {
            if e.aborted || e.given_up || e.since > older_than {
                continue;
            }
            match peek(e.fd) {
                Peek::Closed => {
                    e.aborted = true;
                    found += 1;
                    if let Some(w) = e.waker.take() {
                        w.wake();
                    }
                }
                Peek::Data => e.given_up = true,
                Peek::Empty => {}
            }
        }
        found
    }

    /// Exchanges registered now (tests).
    pub fn waiting(&self) -> usize {
        self.slots.borrow().iter().flatten().count()
    }
}

/// The client left while `F` was awaited.
#[derive(Debug)]
pub struct ClientLeft;

/// `fut`, awaited while the client socket `fd` is watched through `watch`. Holds `fut` by a
/// pinned reference: nothing is moved.
pub struct Watched<'a, F> {
    watch: &'a AbortWatch,
    fd: RawFd,
    since: Instant,
    fut: Pin<&'a mut F>,
    slot: Option<usize>,
}

impl<'a, F: Future> Watched<'a, F> {
    /// `since`: when the wait began.
    pub fn new(watch: &'a AbortWatch, fd: RawFd, since: Instant, fut: Pin<&'a mut F>) -> Self {
        Watched {
            watch,
            fd,
            since,
            fut,
            slot: None,
        }
    }
}

impl<F: Future> Future for Watched<'_, F> {
    type Output = Result<F::Output, ClientLeft>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(i) = this.slot {
            if this.watch.aborted(i) {
                return Poll::Ready(Err(ClientLeft));
            }
        }
        match this.fut.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Ok(v)),
            Poll::Pending => {
                match this.slot {
                    None => this.slot = Some(this.watch.register(this.fd, this.since, cx.waker())),
                    Some(i) => {
                        let mut slots = this.watch.slots.borrow_mut();
                        if let Some(e) = slots[i].as_mut() {
                            if !e.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                                e.waker = Some(cx.waker().clone());
                            }
                        }
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<F> Drop for Watched<'_, F> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.watch.unregister(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::counting_waker;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_closed_client_wakes_and_aborts_the_wait_and_slots_are_reused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let watch = AbortWatch::default();
        let (waker, counter) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut never = std::future::pending::<()>();
        let t0 = Instant::now();
        {
            let mut w = Watched::new(&watch, server.as_raw_fd(), t0, Pin::new(&mut never));
            assert!(Pin::new(&mut w).poll(&mut cx).is_pending());
            assert_eq!(watch.waiting(), 1);
            // Open and quiet: nothing happens; too recent: not even looked at.
            assert_eq!(watch.check(t0 - Duration::from_secs(1)), 0);
            assert_eq!(watch.check(Instant::now()), 0);
            drop(client);
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(watch.check(Instant::now()), 1);
            assert_eq!(counter.wakes(), 1);
            assert!(matches!(
                Pin::new(&mut w).poll(&mut cx),
                Poll::Ready(Err(ClientLeft))
            ));
        }
        assert_eq!(watch.waiting(), 0);
        let mut ready = std::future::ready(7);
        let mut w = Watched::new(&watch, server.as_raw_fd(), t0, Pin::new(&mut ready));
        assert!(matches!(Pin::new(&mut w).poll(&mut cx), Poll::Ready(Ok(7))));
        assert_eq!(watch.slots.borrow().len(), 1);
    }
}
