//! Reused memory for the one large future of the forwarding path.
//!
//! A connection's task holds only what an idle connection needs (`mod.rs`); the state of a
//! request in progress (every step's locals, several KiB) lives in a separate block, taken when
//! the connection has bytes to serve and given back when it goes idle or closes. Blocks are
//! kept per worker for reuse, so a new connection or a connection waking up allocates nothing
//! once the worker has seen as many busy connections at once.

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Blocks kept for reuse at most (beyond them a block is freed: memory held after a burst
/// of busy connections stays bounded).
const KEEP: usize = 64;

/// Blocks of one layout, for futures of one type (a future of another layout is allocated
/// and freed on its own).
#[derive(Default)]
pub struct Arena {
    layout: Cell<Option<Layout>>,
    free: RefCell<Vec<NonNull<u8>>>,
}

impl Arena {
    /// `fut` placed in a block of this arena.
    pub fn pin<F: Future>(&self, fut: F) -> InArena<'_, F> {
        let layout = Layout::new::<F>();
        let ptr = if layout.size() == 0 {
            NonNull::<F>::dangling().cast::<u8>()
        } else {
            let reused = match self.layout.get() {
                Some(l) if l == layout => self.free.borrow_mut().pop(),
                Some(_) => None,
                None => {
                    self.layout.set(Some(layout));
                    None
                }
            };
            reused.unwrap_or_else(|| {
                // SAFETY: `layout` has a non-zero size.
                let p = unsafe { std::alloc::alloc(layout) };
                NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
            })
        };
        let ptr = ptr.cast::<F>();
        // SAFETY: `ptr` is valid for writes of `F` (allocated with its layout, or dangling
        // for a zero-sized `F`), and holds no live value.
        unsafe { ptr.as_ptr().write(fut) };
        InArena { arena: self, ptr }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if let Some(layout) = self.layout.get() {
            for p in self.free.get_mut().drain(..) {
                // SAFETY: every kept block was allocated with `layout` and holds no value.
                unsafe { std::alloc::dealloc(p.as_ptr(), layout) };
            }
        }
    }
}

/// A future in a block of an [`Arena`]: it never moves, and its block goes back when it drops.
pub struct InArena<'a, F: Future> {
    arena: &'a Arena,
    ptr: NonNull<F>,
}

impl<F: Future> Future for InArena<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future lives at `ptr` until this guard drops and is never moved.
        unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) }.poll(cx)
    }
}

impl<F: Future> Drop for InArena<'_, F> {
    fn drop(&mut self) {
        let layout = Layout::new::<F>();
        // SAFETY: the block holds a live `F`, dropped exactly once here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        if layout.size() == 0 {
            return;
        }
        let block = self.ptr.cast::<u8>();
        let mut free = self.arena.free.borrow_mut();
        if self.arena.layout.get() == Some(layout) && free.len() < KEEP {
            free.push(block);
        } else {
            // SAFETY: the block was allocated with `layout` and its value is dropped.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn blocks_are_reused_and_values_dropped() {
        let arena = Arena::default();
        let dropped = Rc::new(Cell::new(0));
        let waker = crate::testing::counting_waker().0;
        let mut cx = Context::from_waker(&waker);
        let mut seen = std::collections::HashSet::new();
        for i in 0..10u64 {
            let d = dropped.clone();
            let big = [i; 64];
            let mut f = std::pin::pin!(arena.pin(async move {
                let _guard = DropCount(d);
                big.iter().sum::<u64>()
            }));
            seen.insert(f.ptr.as_ptr() as usize);
            assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(64 * i));
        }
        assert_eq!(
            seen.len(),
            1,
            "one block serves futures that do not overlap"
        );
        assert_eq!(dropped.get(), 10);
        // A pending future dropped before it ends drops its state too.
        let d = dropped.clone();
        let mut f = Box::pin(arena.pin(async move {
            let _guard = DropCount(d);
            std::future::pending::<()>().await;
        }));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        drop(f);
        assert_eq!(dropped.get(), 11);
        assert_eq!(arena.free.borrow().len(), 1);
    }

    struct DropCount(Rc<Cell<u32>>);

    impl Drop for DropCount {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
}
