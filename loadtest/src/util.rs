//! Plumbing shared by every subcommand: the monoio runtime, CPU pinning, the receive buffer used
//! with monoio's owned-buffer reads, and the parsers for durations and sizes on the command line.

use std::io;
use std::time::Duration;

use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::AsyncReadRent;
use monoio::time::TimeDriver;
use monoio::{FusionDriver, IoUringDriver, LegacyDriver, RuntimeBuilder};

/// The runtime every loadtest thread runs: io_uring (COOP_TASKRUN) with an epoll fallback.
pub type Runtime = monoio::FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Builds a runtime with timers; tries COOP_TASKRUN first, then the default ring flags.
pub fn runtime() -> io::Result<Runtime> {
    let mut urb = io_uring::IoUring::builder();
    urb.setup_coop_taskrun();
    match RuntimeBuilder::<FusionDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .uring_builder(urb)
        .build()
    {
        Ok(rt) => Ok(rt),
        Err(_) => RuntimeBuilder::<FusionDriver>::new()
            .enable_timer()
            .with_entries(1024)
            .build(),
    }
}

/// CPUs this process may run on (respects `taskset`), in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most size_of::<cpu_set_t>().
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread to a set of CPUs (`pid` 0 = this thread) or a whole process.
pub fn set_affinity(pid: i32, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET only touches bits inside the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c, &mut set);
            }
        }
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins worker thread `index` to the index-th CPU it is allowed to use (wrapping), so that an
/// outer `taskset` is honoured rather than overridden.
pub fn pin_worker(index: usize, allowed: &[usize]) {
    if allowed.is_empty() {
        return;
    }
    let cpu = allowed[index % allowed.len()];
    if let Err(e) = set_affinity(0, &[cpu]) {
        eprintln!("loadtest: cannot pin thread {index} to CPU {cpu}: {e}");
    }
}

/// What a worker reports once its listener is bound: the address (with the chosen port when
/// asked for port 0), or why it could not start.
pub type Ready = std::sync::mpsc::Sender<Result<std::net::SocketAddr, String>>;

/// Binds a worker's SO_REUSEPORT listener on `addr` (inside its runtime); on failure, reports it
/// through `ready` and returns `None`.
pub fn bind_listener(
    addr: std::net::SocketAddr,
    ready: &Ready,
) -> Option<monoio::net::TcpListener> {
    let opts = monoio::net::ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    match monoio::net::TcpListener::bind_with_config(addr, &opts) {
        Ok(l) => Some(l),
        Err(e) => {
            let _ = ready.send(Err(format!("bind {addr}: {e}")));
            None
        }
    }
}

/// Runs `workers` threads, each pinned (unless `pin` is false) and running `serve(index, addr,
/// ready)` on its own runtime. Workers start one after another: each binds the address the
/// previous one reported (so with port 0 they all share the first chosen port through
/// SO_REUSEPORT). Prints `listening on ADDR` once all are up, then waits for them. Returns the
/// process exit status (1 if a worker failed to start).
pub fn serve_workers<F, Fut>(
    name: &str,
    listen: std::net::SocketAddr,
    workers: usize,
    pin: bool,
    serve: F,
) -> i32
where
    F: Fn(usize, std::net::SocketAddr, Ready) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let allowed = allowed_cpus();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut addr = listen;
    let mut handles = Vec::new();
    for i in 0..workers.max(1) {
        let (tx, allowed, serve) = (tx.clone(), allowed.clone(), serve.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                if pin {
                    pin_worker(i, &allowed);
                }
                match runtime() {
                    Ok(mut rt) => rt.block_on(serve(i, addr, tx)),
                    Err(e) => {
                        let _ = tx.send(Err(format!("runtime: {e}")));
                    }
                }
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("loadtest {name}: cannot spawn worker: {e}");
                return 1;
            }
        }
        match rx.recv() {
            Ok(Ok(a)) => addr = a,
            Ok(Err(e)) => {
                eprintln!("loadtest {name}: {e}");
                return 1;
            }
            Err(_) => return 1,
        }
    }
    println!("listening on {addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    for h in handles {
        let _ = h.join();
    }
    0
}

/// Raises the open-file soft limit to the hard limit (many connections need many fds).
pub fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit read and write one plain struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Parses "250us", "500ms", "10s", "2m", "1h" (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (examples: 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (us, ms, s, m, h)")),
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size: "100", "16KiB", "4k", "1MiB", "2M", "1GiB".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (examples: 100, 16KiB, 1MiB)"))?;
    let mul: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?} (KiB, MiB, GiB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("size {s:?} out of range"))
}

/// Human duration for tables: "812us", "1.25ms", "3.40s".
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Human byte count: "812 B", "16.0 KiB", "1.50 MiB".
pub fn fmt_bytes(b: f64) -> String {
    if b < 1024.0 {
        format!("{b:.0} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / 1048576.0)
    } else {
        format!("{:.2} GiB", b / 1073741824.0)
    }
}

/// A receive buffer for owned-buffer reads: data lives in `buf[pos..]`; reads append.
pub struct RxBuf {
    pub buf: Vec<u8>,
    pub pos: usize,
}

impl RxBuf {
    pub fn with_capacity(cap: usize) -> Self {
        RxBuf {
            buf: Vec::with_capacity(cap),
            pos: 0,
        }
    }

    /// Unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes after the unconsumed ones. Returns 0 on EOF.
    pub async fn fill<S: AsyncReadRent>(&mut self, stream: &mut S) -> io::Result<usize> {
        if self.pos > 0 && self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            let grow = self.buf.capacity().max(16384);
            self.buf.reserve(grow);
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let slice: SliceMut<Vec<u8>> = buf.slice_mut(len..);
        let (res, slice) = stream.read(slice).await;
        self.buf = slice.into_inner();
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16KiB").unwrap(), 16384);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
