//! TLS, the step between accept and the first request head (see DESIGN §1), and between an
//! upstream connect and the first request sent: rustls with the aws-lc-rs provider (chosen for
//! its faster P-256, X25519, RSA and AES-GCM; measured in docs/benchmarks.md), configured once
//! per config snapshot on the control thread. Per connection a worker clones an `Arc` of the
//! config and runs the handshake on its own ring; per request TLS costs the record layer only.
//!
//! - `certs.rs`: certificate and key files, the SNI certificate store, CA bundles;
//! - `server.rs` / `client.rs`: the rustls configs of listeners and upstreams;
//! - `stream.rs`: the TLS connection over a monoio `TcpStream`, and [`Stream`].

mod certs;
mod client;
mod server;
mod stream;

pub use certs::{load_certified, load_chain, load_key, load_roots, CertError, Certified};
pub use client::{backend_name, ClientSpec, ClientTls};
pub use server::{
    cipher_suites, Accepted, FailureReason, ListenerTls, ServerSpec, FAILURE_REASONS,
};
pub use stream::{Stream, TlsStream};

use std::sync::{Arc, OnceLock};

/// The one crypto provider of the process.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}
