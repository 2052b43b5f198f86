//! The admin API, on a thread of its own (`coregate-admin`), never on a worker: one plain
//! HTTP/1.1 request per connection, parsed with coregate's own parser.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /ready` | 200 once every listener is bound and the config loaded, else 503 |
//! | `GET /config` | the effective config (defaults applied, secrets redacted) |
//! | `GET /upstreams` | JSON: every backend with its state, weight, requests in flight |
//! | `POST /reload` | reload the config file (as `SIGHUP`) |
//! | `POST /upstreams/NAME/backends` | add a backend: `{"address": "host:port", "weight": 1}` |
//! | `DELETE /upstreams/NAME/backends/ADDR` | remove a backend |
//! | `POST /upstreams/NAME/backends/ADDR/drain` | take no new requests, finish those in flight |
//! | `POST /upstreams/NAME/backends/ADDR/enable` | undo a drain |
//! | `POST /upstreams/NAME/backends/ADDR/weight` | `{"weight": N}` |
//!
//! Changes last until the next reload. With a `token` (required off loopback), changes need
//! `Authorization: Bearer TOKEN`; off loopback every request does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{AdminSettings, Backend, Snapshot};
use crate::http1::{parse_request, Header, Method, Status};
use crate::upstream::Shared;

/// What the admin API asks of the process (implemented by the runtime's control side).
pub trait ControlPlane: Send + Sync {
    /// The snapshot in force and the backends' shared table.
    fn current(&self) -> (Arc<Snapshot>, Arc<Shared>);
    /// Reloads the config file: the new config's hash, or the errors.
    fn reload(&self) -> Result<String, String>;
    /// Installs a changed snapshot (a runtime change), known by `hash`.
    fn install(&self, snapshot: Snapshot, hash: String) -> Result<String, String>;
    /// The metrics registry.
    fn registry(&self) -> &super::Registry;
    /// Every listener is bound and the config loaded.
    fn ready(&self) -> bool;
}

/// The running admin listener; dropping it stops it.
pub struct Admin {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Admin {
    pub fn start(settings: &AdminSettings, plane: Arc<dyn ControlPlane>) -> std::io::Result<Admin> {
        let listener = TcpListener::bind(settings.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let token = settings.token.clone();
        let open = addr.ip().is_loopback();
        let thread = std::thread::Builder::new()
            .name("coregate-admin".into())
            .spawn(move || {
                while !stop2.load(Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let _ = serve(s, &*plane, token.as_deref(), open);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        tracing::info!("admin API on http://{addr}/");
        Ok(Admin {
            stop,
            thread: Some(thread),
            addr,
        })
    }
}

struct Answer {
    status: u16,
    kind: &'static str,
    body: String,
}

fn answer(status: u16, body: impl Into<String>) -> Answer {
    Answer {
        status,
        kind: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

fn json(status: u16, v: serde_json::Value) -> Answer {
    Answer {
        status,
        kind: "application/json",
        body: v.to_string() + "\n",
    }
}

/// One request on `s`: read (bounded in size and time), answer, close.
fn serve(
    mut s: TcpStream,
    plane: &dyn ControlPlane,
    token: Option<&str>,
    open: bool,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut headers = [Header::default(); 64];
    let (req, head_len) = loop {
        if Instant::now() > deadline || buf.len() > 64 * 1024 {
            return write(&mut s, answer(400, "request too slow or too large\n"));
        }
        match parse_request(&buf, &mut headers) {
            Ok(Status::Complete(r)) => break (r, r.head_len),
            Ok(Status::Partial) => {}
            Err(e) => return write(&mut s, answer(400, format!("{}\n", e.as_str()))),
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let hs = &headers[..req.header_count];
    let field = |name: &str| {
        hs.iter()
            .find(|h| h.name.of(&buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| h.value.of(&buf).to_vec())
    };
    let length: usize = field("content-length")
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0);
    let authorization = field("authorization").unwrap_or_default();
    let target = String::from_utf8_lossy(req.target.of(&buf)).into_owned();
    if length > 64 * 1024 {
        return write(&mut s, answer(413, "body too large\n"));
    }
    while buf.len() < head_len + length {
        if Instant::now() > deadline {
            return write(&mut s, answer(400, "request too slow\n"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_len..head_len + length];
    let path = target.split('?').next().unwrap_or("").to_string();
    let changing = req.method != Method::Get && req.method != Method::Head;
    if let Some(t) = token {
        if changing || !open {
            let want = format!("Bearer {t}");
            if !constant_time_eq(&authorization, want.as_bytes()) {
                let mut a = answer(401, "a bearer token is required\n");
                a.kind = "text/plain; charset=utf-8";
                return write_with(
                    &mut s,
                    a,
                    "WWW-Authenticate: Bearer realm=\"coregate-admin\"\r\n",
                );
            }
        }
    }
    let a = route(plane, req.method, &path, body);
    write(&mut s, a)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn write(s: &mut TcpStream, a: Answer) -> std::io::Result<()> {
    write_with(s, a, "")
}

fn write_with(s: &mut TcpStream, a: Answer, extra: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        a.status,
        crate::proxy::reason(a.status),
        a.kind,
        a.body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(a.body.as_bytes())?;
    s.flush()
}

fn route(plane: &dyn ControlPlane, method: Method, path: &str, body: &[u8]) -> Answer {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::Get, ["metrics"]) => {
            let (snap, backends) = plane.current();
            Answer {
                status: 200,
                kind: "text/plain; version=0.0.4; charset=utf-8",
                body: super::encode(&snap, plane.registry(), &backends),
            }
        }
        (Method::Get, ["healthz"]) => answer(200, "ok\n"),
        (Method::Get, ["ready"]) if plane.ready() => answer(200, "ready\n"),
        (Method::Get, ["ready"]) => answer(503, "not ready\n"),
        (Method::Get, ["config"]) => answer(200, plane.current().0.summary()),
        (Method::Get, ["upstreams"]) => {
            let (snap, backends) = plane.current();
            json(200, upstreams_json(&snap, plane.registry(), &backends))
        }
        (Method::Post, ["reload"]) => match plane.reload() {
            Ok(hash) => json(200, serde_json::json!({ "reloaded": true, "hash": hash })),
            Err(e) => json(
                400,
                serde_json::json!({ "reloaded": false, "errors": e.lines().collect::<Vec<_>>() }),
            ),
        },
        (Method::Post, ["upstreams", name, "backends"]) => add_backend(plane, name, body),
        (Method::Delete, ["upstreams", name, "backends", addr]) => {
            change(plane, name, addr, |u, i| {
                if u.backends.len() == 1 {
                    return Err((409, "cannot remove the last backend of an upstream".into()));
                }
                u.backends.remove(i);
                Ok(())
            })
        }
        (Method::Post, ["upstreams", name, "backends", addr, "weight"]) => {
            let Some(w) = body_field(body, "weight").filter(|w| (1..=65535).contains(w)) else {
                return answer(400, "expected {\"weight\": 1..65535}\n");
            };
            change(plane, name, addr, |u, i| {
                u.backends[i].weight = w as u32;
                Ok(())
            })
        }
        (Method::Post, ["upstreams", name, "backends", addr, what @ ("drain" | "enable")]) => {
            let (snap, backends) = plane.current();
            let Some(u) = snap.upstreams.iter().find(|u| u.name == *name) else {
                return answer(404, format!("no upstream {name:?}\n"));
            };
            let Some(b) = u.backends.iter().find(|b| b.address == *addr) else {
                return answer(404, format!("no backend {addr:?} in upstream {name:?}\n"));
            };
            backends
                .backend(u.index, b.index)
                .draining
                .store(*what == "drain", Relaxed);
            tracing::info!("admin: upstream {name} backend {addr}: {what}");
            json(
                200,
                serde_json::json!({ "upstream": name, "backend": addr, "draining": *what == "drain" }),
            )
        }
        (_, ["metrics" | "healthz" | "ready" | "config" | "upstreams" | "reload", ..]) => {
            answer(405, "method not allowed\n")
        }
        _ => answer(404, "no such admin endpoint\n"),
    }
}

/// An integer field of a small JSON body.
fn body_field(body: &[u8], name: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(name)?.as_i64()
}

fn add_backend(plane: &dyn ControlPlane, name: &str, body: &[u8]) -> Answer {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return answer(
            400,
            "expected {\"address\": \"host:port\", \"weight\": 1}\n",
        );
    };
    let Some(address) = v.get("address").and_then(|a| a.as_str()) else {
        return answer(400, "expected {\"address\": \"host:port\"}\n");
    };
    let weight = v.get("weight").and_then(|w| w.as_i64()).unwrap_or(1);
    if !(1..=65535).contains(&weight) {
        return answer(400, "weight must be from 1 to 65535\n");
    }
    let addr = match std::net::ToSocketAddrs::to_socket_addrs(address)
        .ok()
        .and_then(|mut a| a.next())
    {
        Some(a) if a.port() != 0 => a,
        _ => return answer(400, format!("cannot resolve {address:?} (host:port)\n")),
    };
    let (snap, _) = plane.current();
    let mut snap = (*snap).clone();
    let Some(u) = snap.upstreams.iter_mut().find(|u| u.name == name) else {
        return answer(404, format!("no upstream {name:?}\n"));
    };
    if u.backends.iter().any(|b| b.address == address) {
        return answer(
            409,
            format!("backend {address:?} is already in upstream {name:?}\n"),
        );
    }
    u.backends.push(Backend {
        index: u.backends.len(),
        addr,
        address: address.to_string(),
        by_name: address.parse::<SocketAddr>().is_err(),
        weight: weight as u32,
    });
    finish(
        plane,
        snap,
        format!("added backend {address} to upstream {name}"),
    )
}

/// Applies `f` to backend `addr` of upstream `name` in a copy of the snapshot, installs it.
fn change(
    plane: &dyn ControlPlane,
    name: &str,
    addr: &str,
    f: impl FnOnce(&mut crate::config::Upstream, usize) -> Result<(), (u16, String)>,
) -> Answer {
    let (snap, _) = plane.current();
    let mut snap = (*snap).clone();
    let Some(u) = snap.upstreams.iter_mut().find(|u| u.name == name) else {
        return answer(404, format!("no upstream {name:?}\n"));
    };
    let Some(i) = u.backends.iter().position(|b| b.address == addr) else {
        return answer(404, format!("no backend {addr:?} in upstream {name:?}\n"));
    };
    if let Err((status, msg)) = f(u, i) {
        return answer(status, msg + "\n");
    }
    for (j, b) in u.backends.iter_mut().enumerate() {
        b.index = j;
    }
    finish(
        plane,
        snap,
        format!("changed backend {addr} of upstream {name}"),
    )
}

fn finish(plane: &dyn ControlPlane, mut snap: Snapshot, what: String) -> Answer {
    for u in snap.upstreams.iter_mut() {
        if u.maglev.is_some() {
            let names: Vec<&str> = u.backends.iter().map(|b| b.address.as_str()).collect();
            let weights: Vec<u32> = u.backends.iter().map(|b| b.weight).collect();
            let size = u.maglev.as_ref().map_or(0, |m| m.len()) as u64;
            u.maglev = Some(crate::upstream::Maglev::new(&names, &weights, size));
        }
    }
    // Known by the file's hash and a mark that it was changed at run time.
    let hash = {
        let (h, _) = plane
            .registry()
            .config
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let base = h.split('+').next().unwrap_or("").to_string();
        format!("{base}+admin")
    };
    match plane.install(snap, hash) {
        Ok(_) => {
            tracing::info!("admin: {what} (until the next reload)");
            json(200, serde_json::json!({ "ok": true, "change": what }))
        }
        Err(e) => json(
            409,
            serde_json::json!({ "ok": false, "errors": e.lines().collect::<Vec<_>>() }),
        ),
    }
}

fn upstreams_json(snap: &Snapshot, reg: &super::Registry, backends: &Shared) -> serde_json::Value {
    let workers = reg.workers();
    let now = backends.ms(Instant::now());
    let list: Vec<serde_json::Value> = snap
        .upstreams
        .iter()
        .map(|u| {
            let bs: Vec<serde_json::Value> = u
                .backends
                .iter()
                .map(|b| {
                    let sb = backends.backend(u.index, b.index);
                    let up = sb.up.load(Relaxed);
                    let ejected = sb.ejected_until_ms.load(Relaxed) > now;
                    let draining = sb.draining.load(Relaxed);
                    let (in_flight, idle) = workers.iter().fold((0, 0), |(f, i), w| {
                        let slot = w.backend_slot(u.index, b.index);
                        (
                            f + w.backend_in_flight.get(slot).map_or(0, |g| g.get()),
                            i + w.backend_idle.get(slot).map_or(0, |g| g.get()),
                        )
                    });
                    let state = if draining {
                        "draining"
                    } else if !up {
                        "down"
                    } else if ejected {
                        "ejected"
                    } else {
                        "up"
                    };
                    serde_json::json!({
                        "address": b.address,
                        "resolved": sb.addr().to_string(),
                        "weight": b.weight,
                        "state": state,
                        "healthy": up,
                        "ejected": ejected,
                        "draining": draining,
                        "in_flight": in_flight,
                        "idle_connections": idle,
                    })
                })
                .collect();
            serde_json::json!({
                "name": u.name,
                "balancer": u.balancer.as_str(),
                "backends": bs,
            })
        })
        .collect();
    serde_json::json!({ "upstreams": list })
}
