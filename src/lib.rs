//! coregate: a thread-per-core edge proxy, load balancer and API gateway.
//!
//! Linux only: the runtime relies on io_uring (with an epoll fallback), SO_REUSEPORT and
//! per-core pinning.

pub mod config;
pub mod http1;
pub mod proxy;
pub mod route;
pub mod runtime;
pub mod upstream;
