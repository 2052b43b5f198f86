//! coregate: a thread-per-core edge proxy, load balancer and API gateway.
//!
//! Linux only: the runtime relies on io_uring (with an epoll fallback), SO_REUSEPORT and
//! per-core pinning.

pub mod config;
pub mod http1;
pub mod observe;
pub mod policy;
pub mod proxy;
pub mod route;
pub mod runtime;
pub mod tls;
pub mod upstream;

/// Helpers shared by unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// A waker that counts its wakes.
    pub struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        pub fn wakes(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A counting waker and the counter behind it.
    pub fn counting_waker() -> (Waker, Arc<Count>) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Waker::from(count.clone()), count)
    }
}
