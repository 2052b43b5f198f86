//! One deadline per connection instead of a timer per I/O step.
//!
//! Every connection (and every concurrent part of one: an aggregation part, a tunnel
//! direction) holds a slot in its worker's [`Deadlines`]: the instant its current step must end
//! by, and the waker of its task. A step moves the deadline with a store (header, idle,
//! upstream head, body gaps); nothing is allocated and the timer wheel is not touched. The
//! worker's one sweeper task sleeps on one monoio timer until the earliest queued deadline,
//! then marks the slots that are past theirs and wakes their tasks.
//!
//! A slot is queued (in a min-heap) at most once at a time for each deadline it had that was
//! earlier than the queued one: moving a deadline later, the common case (each step of a
//! request ends later than the one before), costs no queue operation; the sweeper finds the
//! entry early, sees the later deadline and queues it again ("re-armed, not re-created").
//!
//! The same slot carries the keep-alive *grace*: after a response a plain connection waits for
//! its next request with its buffer posted for [`GRACE`]; when that passes without a byte it
//! gives its buffers back and waits without any (see `client.rs`). Grace waits are queued in
//! arrival order, so a FIFO serves them. A graceful shutdown reaches a connection in its grace
//! when the grace ends (within [`GRACE`] and [`SWEEP_BATCH`]), then closes it at once.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long a keep-alive connection keeps its buffers after a response before it waits
/// without them (up to [`SWEEP_BATCH`] more).
pub const GRACE: Duration = Duration::from_millis(250);
/// The sweeper wakes at most this often for grace waits alone (they end in batches).
const SWEEP_BATCH: Duration = Duration::from_millis(10);
/// How long the sweeper sleeps when nothing is queued (a new entry wakes it).
const IDLE_SWEEP: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Slot {
    /// The current deadline (meaningless while `open` is false).
    at: Option<Instant>,
    /// The earliest queued heap entry of this slot.
    armed: Option<Instant>,
    /// The deadline passed (cleared when a new one is set).
    expired: bool,
    /// The current grace wait ended.
    graced: bool,
    /// Counts grace waits (of every owner of the slot), so that the entries of earlier ones
    /// are recognised.
    grace_seq: u32,
    open: bool,
    waker: Option<Waker>,
}

impl Slot {
    /// The deadline passed, or with `grace` the grace wait begun last ended.
    fn ended(&self, grace: bool) -> bool {
        self.expired || (grace && self.graced)
    }
}

#[derive(Default)]
struct Inner {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// (deadline, slot). A slot's queued entry outlives its owner: the next owner's deadline
    /// is checked when it comes due (so connections that come and go leave no entries behind).
    heap: BinaryHeap<Reverse<(Instant, u32)>>,
    /// (start, slot, grace_seq), in start order.
    grace: VecDeque<(Instant, u32, u32)>,
    /// What the sweeper sleeps until, and its waker.
    target: Option<Instant>,
    sweeper: Option<Waker>,
}

impl Inner {
    /// Something comes due at `at`: the sweeper is woken when it sleeps past it.
    fn due(&mut self, at: Instant) {
        if self.target.is_none_or(|t| at < t) {
            self.target = Some(at);
            if let Some(w) = self.sweeper.take() {
                w.wake();
            }
        }
    }
}

/// The deadlines of one worker's connections (see the module docs).
#[derive(Default)]
pub struct Deadlines {
    inner: RefCell<Inner>,
}

/// A view of one slot: what I/O steps take to bound themselves.
#[derive(Clone, Copy)]
pub struct Timer<'a> {
    clock: &'a Deadlines,
    slot: u32,
}

/// A slot opened for a part of a connection, closed when dropped.
pub struct OwnedTimer<'a>(Timer<'a>);

impl Drop for OwnedTimer<'_> {
    fn drop(&mut self) {
        self.0.clock.close(self.0.slot);
    }
}

impl<'a> OwnedTimer<'a> {
    pub fn timer(&self) -> Timer<'a> {
        self.0
    }
}

impl Deadlines {
    /// A slot for a new connection (no deadline yet).
    pub fn open(&self) -> u32 {
        let mut inner = self.inner.borrow_mut();
        let i = match inner.free.pop() {
            Some(i) => i,
            None => {
                inner.slots.push(Slot::default());
                (inner.slots.len() - 1) as u32
            }
        };
        let s = &mut inner.slots[i as usize];
        s.open = true;
        s.at = None;
        s.expired = false;
        s.graced = false;
        i
    }

    /// A slot that closes itself when dropped.
    pub fn open_owned(&self) -> OwnedTimer<'_> {
        OwnedTimer(self.timer(self.open()))
    }

    /// Gives slot `i` back. Its queued entry stays: it serves the slot's next owner, or is
    /// dropped when it comes due with the slot closed.
    pub fn close(&self, i: u32) {
        let mut inner = self.inner.borrow_mut();
        let s = &mut inner.slots[i as usize];
        s.open = false;
        s.at = None;
        s.waker = None;
        s.grace_seq = s.grace_seq.wrapping_add(1);
        inner.free.push(i);
    }

    pub fn timer(&self, slot: u32) -> Timer<'_> {
        Timer { clock: self, slot }
    }

    /// Slots in use.
    #[cfg(test)]
    fn open_slots(&self) -> usize {
        let inner = self.inner.borrow();
        inner.slots.len() - inner.free.len()
    }

    fn set(&self, i: u32, at: Instant) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let s = &mut inner.slots[i as usize];
        s.at = Some(at);
        s.expired = false;
        if s.armed.is_some_and(|a| a <= at) {
            return;
        }
        s.armed = Some(at);
        inner.heap.push(Reverse((at, i)));
        inner.due(at);
    }

    /// True when slot `i`'s deadline passed; else the task behind `cx` is woken when it does.
    fn poll_expired(&self, i: u32, cx: &Context<'_>, grace: bool) -> bool {
        let mut inner = self.inner.borrow_mut();
        let s = &mut inner.slots[i as usize];
        if s.ended(grace) {
            return true;
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        false
    }

    fn begin_grace(&self, i: u32, now: Instant) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let s = &mut inner.slots[i as usize];
        s.grace_seq = s.grace_seq.wrapping_add(1);
        s.graced = false;
        let entry = (now, i, s.grace_seq);
        inner.grace.push_back(entry);
        if inner.grace.len() == 1 {
            inner.due(now + GRACE);
        }
    }

    /// Marks the slots whose deadline or grace ended by `now` and wakes their tasks; returns
    /// when to look again (`None`: nothing is queued).
    pub fn sweep(&self, now: Instant) -> Option<Instant> {
        let mut wake = Vec::new();
        let next = {
            let mut guard = self.inner.borrow_mut();
            let inner = &mut *guard;
            while let Some(&Reverse((at, i))) = inner.heap.peek() {
                if at > now {
                    break;
                }
                inner.heap.pop();
                let s = &mut inner.slots[i as usize];
                if s.armed != Some(at) {
                    continue; // a later duplicate of an entry queued again earlier
                }
                s.armed = None;
                if !s.open {
                    continue;
                }
                match s.at {
                    Some(d) if d <= now => {
                        s.expired = true;
                        if let Some(w) = &s.waker {
                            wake.push(w.clone());
                        }
                    }
                    Some(d) => {
                        s.armed = Some(d);
                        inner.heap.push(Reverse((d, i)));
                    }
                    None => {}
                }
            }
            while let Some(&(start, i, seq)) = inner.grace.front() {
                if start + GRACE > now {
                    break;
                }
                inner.grace.pop_front();
                let s = &mut inner.slots[i as usize];
                if s.open && s.grace_seq == seq {
                    s.graced = true;
                    if let Some(w) = &s.waker {
                        wake.push(w.clone());
                    }
                }
            }
            let heap = inner.heap.peek().map(|Reverse((at, _))| *at);
            let grace = inner
                .grace
                .front()
                .map(|(start, ..)| (*start + GRACE).max(now + SWEEP_BATCH));
            let next = match (heap, grace) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            inner.target = next;
            next
        };
        for w in wake {
            w.wake();
        }
        next
    }

    /// The sweeper: one task per worker, on one timer that is reset, never re-created.
    pub async fn run_sweeper(&self) {
        let sleep = monoio::time::sleep(IDLE_SWEEP);
        let mut sleep = std::pin::pin!(sleep);
        loop {
            let now = Instant::now();
            let next = self.sweep(now).unwrap_or(now + IDLE_SWEEP);
            // The timer's resolution is a millisecond: an entry due sooner waits for it.
            let wake = next.max(now + Duration::from_millis(1));
            sleep.as_mut().reset(monoio::time::Instant::from_std(wake));
            SweeperWait {
                clock: self,
                sleep: sleep.as_mut(),
                at: next,
            }
            .await;
        }
    }
}

/// Waits for the sweeper's timer, or for an entry earlier than the one it sleeps until.
struct SweeperWait<'a, 'b> {
    clock: &'a Deadlines,
    sleep: Pin<&'b mut monoio::time::Sleep>,
    at: Instant,
}

impl Future for SweeperWait<'_, '_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let mut inner = self.clock.inner.borrow_mut();
        if inner.target.is_some_and(|t| t < self.at) {
            return Poll::Ready(());
        }
        inner.sweeper = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<'a> Timer<'a> {
    /// The slot this timer is a view of.
    pub fn slot(self) -> u32 {
        self.slot
    }

    /// Sets the slot's deadline.
    pub fn set(self, at: Instant) {
        self.clock.set(self.slot, at);
    }

    /// Runs `fut` until it ends or `timeout` from now passes (`None`).
    pub fn within<F: Future>(self, timeout: Duration, fut: F) -> Within<'a, F> {
        self.until(Instant::now() + timeout, fut)
    }

    /// Runs `fut` until it ends or `deadline` passes (`None`).
    pub fn until<F: Future>(self, deadline: Instant, fut: F) -> Within<'a, F> {
        self.clock.set(self.slot, deadline);
        self.current(fut)
    }

    /// Runs `fut` under the deadline already set.
    pub fn current<F: Future>(self, fut: F) -> Within<'a, F> {
        Within { fut, timer: self }
    }

    /// Begins a grace wait (see the module docs): [`Self::poll_graced`] tells when it ends.
    pub fn begin_grace(self) {
        self.clock.begin_grace(self.slot, Instant::now());
    }

    /// True when the grace wait begun last (or the deadline) ended; else the task behind `cx`
    /// is woken when it does.
    pub fn poll_graced(self, cx: &Context<'_>) -> bool {
        self.clock.poll_expired(self.slot, cx, true)
    }

    /// The grace wait (or the deadline) ended.
    #[cfg(test)]
    fn graced(self) -> bool {
        self.clock.inner.borrow().slots[self.slot as usize].ended(true)
    }

    /// The deadline passed.
    pub fn expired(self) -> bool {
        self.clock.inner.borrow().slots[self.slot as usize].ended(false)
    }
}

/// See [`Timer::within`].
pub struct Within<'a, F> {
    fut: F,
    timer: Timer<'a>,
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is structurally pinned: it is never moved out of `self`, and `self`
        // has no Drop impl or Unpin impl that would move it.
        let this = unsafe { self.get_unchecked_mut() };
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        if let Poll::Ready(v) = fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        let t = this.timer;
        if t.clock.poll_expired(t.slot, cx, false) {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::counting_waker;

    #[test]
    fn later_deadlines_are_not_queued_again_and_the_sweep_fires_at_the_current_one() {
        let d = Deadlines::default();
        let s = d.open();
        let t0 = Instant::now();
        d.set(s, t0 + Duration::from_secs(10));
        for k in 11..100 {
            d.set(s, t0 + Duration::from_secs(k));
        }
        assert_eq!(
            d.inner.borrow().heap.len(),
            1,
            "later deadlines cost no queue entry"
        );
        // The queued entry comes due: the slot is not expired, it is queued at its deadline.
        assert_eq!(
            d.sweep(t0 + Duration::from_secs(10)),
            Some(t0 + Duration::from_secs(99))
        );
        assert!(!d.timer(s).expired());
        let (waker, count) = counting_waker();
        assert!(!d.poll_expired(s, &Context::from_waker(&waker), false));
        d.sweep(t0 + Duration::from_secs(99));
        assert!(d.timer(s).expired());
        assert_eq!(count.wakes(), 1);
        // An earlier deadline is queued at once and clears the mark.
        d.set(s, t0 + Duration::from_secs(5));
        assert!(!d.timer(s).expired());
        assert_eq!(d.sweep(t0), Some(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn closed_and_reused_slots_ignore_old_entries() {
        let d = Deadlines::default();
        let t0 = Instant::now();
        let a = d.open();
        d.set(a, t0 + Duration::from_secs(1));
        d.close(a);
        let b = d.open();
        assert_eq!(a, b, "the slot is reused");
        d.set(b, t0 + Duration::from_secs(30));
        assert_eq!(
            d.inner.borrow().heap.len(),
            1,
            "the old owner's entry serves the new one"
        );
        d.sweep(t0 + Duration::from_secs(2));
        assert!(!d.timer(b).expired(), "the old owner's entry must not fire");
        assert_eq!(d.inner.borrow().heap.len(), 1, "queued again at 30 s");
        // Connections that come and go leave at most one entry per slot behind.
        for _ in 0..1000 {
            let s = d.open();
            d.set(s, t0 + Duration::from_secs(60));
            d.close(s);
        }
        assert!(d.inner.borrow().heap.len() <= 2);
        assert_eq!(d.open_slots(), 1);
        let owned = d.open_owned();
        assert_eq!(d.open_slots(), 2);
        drop(owned);
        assert_eq!(d.open_slots(), 1);
    }

    #[test]
    fn grace_ends_after_its_period_and_a_new_wait_forgets_the_old_one() {
        let d = Deadlines::default();
        let s = d.open();
        let t0 = Instant::now();
        d.set(s, t0 + Duration::from_secs(60));
        d.begin_grace(s, t0);
        assert!(!d.timer(s).graced());
        d.sweep(t0 + GRACE / 2);
        assert!(!d.timer(s).graced());
        // A second wait before the first ends: only the second counts.
        d.begin_grace(s, t0 + GRACE / 2);
        d.sweep(t0 + GRACE);
        assert!(!d.timer(s).graced(), "the first wait's entry is stale");
        d.sweep(t0 + GRACE / 2 + GRACE);
        assert!(d.timer(s).graced());
        assert!(!d.timer(s).expired());
    }
}
