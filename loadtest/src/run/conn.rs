//! One generator thread: its connection tasks, each a loop of send → read response(s) → record.
//! Responses are framed by Content-Length, chunked encoding or connection close; bodies are
//! walked in the receive buffer and counted, never copied.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::{Plan, Stats};
use crate::http::{framing, wants_close, Body};
use crate::tls::Stream;
use crate::util::RxBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    Connect,
    Timeout,
    Reset,
    Parse,
}

struct Conn {
    stream: Stream,
    rx: RxBuf,
}

pub(crate) struct Resp {
    pub status: u16,
    pub payload: u64,
    pub wire: u64,
    pub close: bool,
}

const LEAD: Duration = Duration::from_millis(2);
const GRACE: Duration = Duration::from_secs(1);

fn mono(t: Instant) -> monoio::time::Instant {
    monoio::time::Instant::from_std(t)
}

/// Runs this thread's connections to completion and returns what they measured.
pub async fn thread_main(plan: Arc<Plan>, ids: Vec<usize>, counter: Arc<AtomicU64>) -> Stats {
    let stats = Rc::new(RefCell::new(Stats::default()));
    let finished = Rc::new(Cell::new(false));
    let ticker = {
        let (stats, finished, counter) = (stats.clone(), finished.clone(), counter.clone());
        let hard_end = plan.end + plan.timeout + Duration::from_secs(1);
        monoio::spawn(async move {
            while !finished.get() && Instant::now() < hard_end {
                counter.store(stats.borrow().responses, Ordering::Relaxed);
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| monoio::spawn(connection(plan.clone(), id, stats.clone())))
        .collect();
    for t in tasks {
        t.await;
    }
    finished.set(true);
    ticker.await;
    let s = stats.borrow().clone();
    counter.store(s.responses, Ordering::Relaxed);
    s
}

async fn connect(plan: &Plan) -> Result<Conn, Fail> {
    let open = async {
        let tcp = TcpStream::connect_addr(plan.addr).await.ok()?;
        let _ = tcp.set_nodelay(true);
        Some(match &plan.tls {
            None => Stream::Plain(tcp),
            Some(t) => Stream::Tls(Box::new(
                t.connector.connect(t.name.clone(), tcp).await.ok()?,
            )),
        })
    };
    match monoio::time::timeout(plan.timeout, open).await {
        Ok(Some(stream)) => Ok(Conn {
            stream,
            rx: RxBuf::with_capacity(16384),
        }),
        _ => Err(Fail::Connect),
    }
}

fn record_fail(plan: &Plan, stats: &RefCell<Stats>, reference: Instant, fail: Fail, n: u64) {
    if n == 0 || reference < plan.measure_from {
        return;
    }
    let mut s = stats.borrow_mut();
    let e = &mut s.errors;
    match fail {
        Fail::Connect => e.connect += n,
        Fail::Timeout => e.timeout += n,
        Fail::Reset => e.reset += n,
        Fail::Parse => e.parse += n,
    }
}

async fn connection(plan: Arc<Plan>, id: usize, stats: Rc<RefCell<Stats>>) {
    let mut conn: Option<Conn> = None;
    let quota = plan.quota.as_ref().map(|q| q[id]);
    let mut attempted = 0u64;
    // Open loop: request k of this connection is due at start + offset + k * interval.
    let offset = plan
        .interval
        .map_or(0.0, |iv| iv * id as f64 / plan.connections as f64);
    let mut k = 0u64;
    // When this connection last became free to send (open loop: for the generator's lag).
    let mut ready_at = Instant::now();
    let due = |k: u64| -> Instant {
        let iv = plan.interval.unwrap_or(0.0);
        plan.start + Duration::from_secs_f64(offset + k as f64 * iv)
    };
    loop {
        let now = Instant::now();
        // Open loop: requests due before the end are still sent (late, and measured from their
        // due time) for up to GRACE after it; only then are the rest counted as never sent.
        let stop = if plan.interval.is_some() {
            plan.end + GRACE
        } else {
            plan.end
        };
        if now >= stop || quota.is_some_and(|q| attempted >= q) {
            break;
        }
        let intended = if plan.interval.is_some() {
            let t = due(k);
            if t >= plan.end {
                break;
            }
            // Timers tick in milliseconds and may fire a tick late: aim LEAD early and send at
            // once when within LEAD of the due time. An early send is measured from the actual
            // send time, so timer slop never inflates latency; the schedule (and rate) holds.
            if t > now + LEAD {
                monoio::time::sleep_until(mono(t - LEAD)).await;
                continue;
            }
            // Lateness that is the generator's own (timer, CPU), not the target's: time past
            // the due time while the connection was already free to send.
            if t >= plan.measure_from {
                let lag = now.saturating_duration_since(t.max(ready_at));
                stats
                    .borrow_mut()
                    .lag
                    .saturating_record(lag.as_micros() as u64);
            }
            Some(t)
        } else {
            None
        };
        if conn.is_none() {
            match connect(&plan).await {
                Ok(c) => {
                    stats.borrow_mut().connects += 1;
                    conn = Some(c);
                }
                Err(f) => {
                    record_fail(&plan, &stats, intended.unwrap_or(now), f, 1);
                    k += 1;
                    attempted += 1;
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let batch = match quota {
            Some(q) if plan.interval.is_none() => plan.pipeline.min((q - attempted) as usize),
            _ if plan.interval.is_none() => plan.pipeline,
            _ => 1,
        };
        let sent = Instant::now();
        let completed = Cell::new(0usize);
        let res = monoio::time::timeout_at(
            mono(sent + plan.timeout),
            exchange(c, &plan, batch, sent, intended, &stats, &completed),
        )
        .await;
        k += 1;
        attempted += batch as u64;
        ready_at = Instant::now();
        let reference = intended.unwrap_or(sent);
        let left = (batch - completed.get()) as u64;
        match res {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => conn = None,
            Ok(Err(f)) => {
                record_fail(&plan, &stats, reference, f, left);
                conn = None;
            }
            Err(_) => {
                // A read abandoned by a timeout may have lost bytes: never reuse the connection.
                record_fail(&plan, &stats, reference, Fail::Timeout, left);
                conn = None;
            }
        }
    }
    if let Some(iv) = plan.interval {
        let t = due(k);
        if t < plan.end {
            let missed = ((plan.end - t).as_secs_f64() / iv).ceil() as u64;
            stats.borrow_mut().unsent += missed;
        }
    }
}

async fn exchange(
    c: &mut Conn,
    plan: &Plan,
    batch: usize,
    sent: Instant,
    intended: Option<Instant>,
    stats: &RefCell<Stats>,
    completed: &Cell<usize>,
) -> Result<bool, Fail> {
    let wire = plan.wire.slice(..plan.req_len * batch);
    let (res, _) = c.stream.write_all(wire).await;
    res.map_err(|_| Fail::Reset)?;
    let mut keep = plan.keepalive;
    for _ in 0..batch {
        let r = read_response(&mut c.stream, &mut c.rx, plan.is_head).await?;
        let now = Instant::now();
        completed.set(completed.get() + 1);
        record(plan, stats, &r, sent, intended, now);
        if r.close {
            keep = false;
        }
    }
    Ok(keep)
}

fn record(
    plan: &Plan,
    stats: &RefCell<Stats>,
    r: &Resp,
    sent: Instant,
    intended: Option<Instant>,
    now: Instant,
) {
    let mut s = stats.borrow_mut();
    s.responses += 1;
    let reference = intended.unwrap_or(sent);
    if reference < plan.measure_from {
        s.warmup += 1;
        return;
    }
    s.bytes += r.wire;
    if !plan.expect.accepts(r.status) {
        s.errors.status(r.status);
        return;
    }
    if plan.expect_len.is_some_and(|n| n != r.payload) {
        s.errors.body_length += 1;
        return;
    }
    // Latency from the intended send time (or the actual one, if the send was early).
    let from = intended.map_or(sent, |i| i.min(sent));
    s.latency
        .saturating_record((now - from).as_micros().max(1) as u64);
    if intended.is_some() {
        s.service
            .saturating_record((now - sent).as_micros().max(1) as u64);
    }
    s.ok += 1;
    s.last_done = Some(now);
}

pub(crate) async fn read_response<S: monoio::io::AsyncReadRent>(
    stream: &mut S,
    rx: &mut RxBuf,
    is_head: bool,
) -> Result<Resp, Fail> {
    loop {
        let head = {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(rx.data()) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let close = wants_close(resp.headers) || resp.version == Some(0);
                    let body = if is_head || status / 100 == 1 || status == 204 || status == 304 {
                        Body::Empty
                    } else {
                        framing(resp.headers, true).map_err(|_| Fail::Parse)?
                    };
                    Some((n, status, close, body))
                }
                Ok(httparse::Status::Partial) if rx.data().len() > 1 << 20 => {
                    return Err(Fail::Parse)
                }
                Ok(httparse::Status::Partial) => None,
                Err(_) => return Err(Fail::Parse),
            }
        };
        let Some((n, status, mut close, mut body)) = head else {
            match rx.fill(stream).await {
                Ok(0) | Err(_) => return Err(Fail::Reset),
                Ok(_) => continue,
            }
        };
        rx.consume(n);
        if status / 100 == 1 && status != 101 {
            continue; // interim response (100 Continue): the real one follows
        }
        let mut payload = 0u64;
        let mut wire = n as u64;
        while !body.is_done() {
            let (used, p) = body.advance(rx.data()).map_err(|_| Fail::Parse)?;
            rx.consume(used);
            payload += p;
            wire += used as u64;
            if body.is_done() {
                break;
            }
            match rx.fill(stream).await {
                Ok(0) if body == Body::UntilClose => {
                    close = true;
                    break;
                }
                Ok(0) | Err(_) => return Err(Fail::Reset),
                Ok(_) => {}
            }
        }
        return Ok(Resp {
            status,
            payload,
            wire,
            close,
        });
    }
}
