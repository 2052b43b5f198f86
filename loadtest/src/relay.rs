//! `loadtest relay`: the floor. A TCP byte relay shaped like the proxy (pinned monoio workers,
//! one SO_REUSEPORT listener each, TCP_NODELAY) that parses nothing: each client connection gets
//! its own upstream connection and bytes are copied both ways until each side closes. No HTTP
//! proxy can cost less per request, so coregate's cost is quoted relative to this.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::util;

#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// Address to listen on (port 0 picks one; the chosen one is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Where to relay to (host:port, resolved once at start).
    #[arg(long)]
    pub upstream: String,
    /// Worker threads, each pinned with its own listener.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Copy buffer per direction per connection.
    #[arg(long, default_value = "64KiB", value_parser = util::parse_size)]
    pub buffer: u64,
    /// Do not pin worker threads.
    #[arg(long)]
    pub no_pin: bool,
}

pub fn main(args: RelayArgs) -> i32 {
    util::raise_nofile();
    let upstream = match args.upstream.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => {
            eprintln!(
                "loadtest relay: cannot resolve upstream {:?}",
                args.upstream
            );
            return 2;
        }
    };
    let buffer = args.buffer.clamp(1024, 16 << 20) as usize;
    util::serve_workers(
        "relay",
        args.listen,
        args.workers,
        !args.no_pin,
        move |_, addr, ready| worker(addr, upstream, buffer, ready),
    )
}

async fn worker(
    addr: SocketAddr,
    upstream: SocketAddr,
    buffer: usize,
    tx: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
) {
    let Some(listener) = util::bind_listener(addr, &tx) else {
        return;
    };
    let _ = tx.send(Ok(listener.local_addr().unwrap_or(addr)));
    drop(tx);
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                monoio::spawn(relay(client, upstream, buffer));
            }
            Err(e) => {
                eprintln!("loadtest relay: accept: {e}");
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, buffer: usize) {
    let server = match TcpStream::connect_addr(upstream).await {
        Ok(s) => s,
        Err(_) => return, // dropping the client closes it: the floor has no error responses
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = monoio::spawn(copy(cr, sw, buffer));
    copy(sr, cw, buffer).await;
    up.await;
}

/// Copies until EOF or an error, then shuts the write side down (half-close travels on).
async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(mut from: R, mut to: W, size: usize) {
    let mut buf = Vec::with_capacity(size);
    loop {
        let (res, b) = from.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let (res, b) = to.write_all(buf).await;
        buf = b;
        if res.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
