//! Policies a route names, applied between routing and balancing (DESIGN.md §1: policy is one
//! step of the path, not a middleware tower): rate limits. A route that names no policy pays
//! one empty-slice check. Authentication and transforms will join here.

pub mod ratelimit;
