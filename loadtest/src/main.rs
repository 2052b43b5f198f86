//! loadtest: coregate's bundled benchmark harness (Linux only, like coregate).
//!
//! - `run`: the HTTP/1.1 load generator (closed and open loop, coordinated omission corrected).
//! - `backend`: the origin server used behind every proxy under test.
//! - `relay`: a TCP byte relay, the cost floor for any proxy.
//! - `idle`: holds many keep-alive connections to measure a proxy's memory per connection.
//! - `bench`: runs backend, proxies and generator together and prints the comparison.
//! - `failover`: kills a backend under load behind each proxy and reports the failed requests.
//! - `ratelimit`: how closely coregate's limit modes and nginx's `limit_req` hold a limit when
//!   one keep-alive connection (one worker) carries all the load.

mod backend;
mod bench;
mod failover;
mod http;
mod idle;
mod ratelimit;
mod relay;
mod run;
mod tls;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "loadtest", version, about = "coregate's load-test harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate HTTP/1.1 load against a URL and report throughput and latency.
    Run(Box<run::RunArgs>),
    /// Serve fixed, chunked or echoed responses (the origin behind a proxy under test).
    Backend(backend::BackendArgs),
    /// Relay TCP bytes to an upstream without parsing (the floor).
    Relay(relay::RelayArgs),
    /// Hold many keep-alive connections open to measure memory per connection.
    Idle(idle::IdleArgs),
    /// Compare coregate with the relay floor, direct, nginx and HAProxy in one table.
    Bench(bench::BenchArgs),
    /// Kill one of three backends under load behind coregate, HAProxy and nginx; count failures.
    Failover(failover::FailoverArgs),
    /// Admitted per second under a limit, all the load on one keep-alive connection: coregate
    /// sync, exact, local against nginx limit_req.
    Ratelimit(ratelimit::RateLimitArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run(a) => run::main(*a),
        Cmd::Backend(a) => backend::main(a),
        Cmd::Relay(a) => relay::main(a),
        Cmd::Idle(a) => idle::main(a),
        Cmd::Bench(a) => bench::main(a),
        Cmd::Failover(a) => failover::main(a),
        Cmd::Ratelimit(a) => ratelimit::main(a),
    };
    std::process::exit(code);
}
