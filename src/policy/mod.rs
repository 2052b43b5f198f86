//! Policies a route names, applied between routing and balancing (DESIGN.md §1: policy is one
//! step of the path, not a middleware tower): authentication ([`auth`]: who the client is, from
//! the request head; 401/403 or an identity to forward), rate limits ([`ratelimit`]) and
//! transforms. A route that names no policy pays one empty-slice check.

pub mod auth;
pub mod ratelimit;
pub mod transform;
