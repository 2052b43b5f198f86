//! Request aggregation (`aggregate = [...]` on a route): one client request fans out to several
//! upstream requests at once, each with its own upstream, path and timeout, on this worker's
//! pooled connections; their JSON bodies are merged into one object, each under its `key` (or
//! at the top level), and the client gets one answer when the slowest part is done. A part that
//! fails or runs out of time is reported in the answer (`"partial": true`, `"errors"`) or fails
//! the whole answer (502), as the route says.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::client::{ClientConn, Done, Next};
use super::io::{write_all, IoFail, Limit, RecvBuf};
use super::WorkerState;
use crate::config::Upstream;
use crate::http1::{
    self, Chunk, ChunkedDecoder, Framing, HeadReader, Header, Method, Status, Version,
};
use crate::policy::transform::{Aggregate, AggregatePart, RoutePolicy};
use crate::upstream::{ClientEnds, Tried};

impl ClientConn<'_> {
    /// Answers an aggregate route: `paths` are the parts' expanded paths, in order.
    pub(super) async fn aggregate(
        &mut self,
        p: &RoutePolicy,
        agg: &Aggregate,
        paths: Vec<Vec<u8>>,
        done: Done,
    ) -> Next {
        let snap = self.snap;
        let state = self.state;
        // As for a forwarded request: upstreams that send a PROXY header get the address the
        // client connected to, on connections kept for this client.
        let proxied = agg
            .parts
            .iter()
            .any(|p| snap.upstreams[p.upstream].proxy_protocol.is_some());
        let destination = if proxied {
            self.local_addr()
        } else {
            self.listen_addr
        };
        // The fields every part request carries besides Host.
        let mut common = Vec::with_capacity(128);
        common.extend_from_slice(b"Accept: application/json\r\nX-Forwarded-For: ");
        common.extend_from_slice(self.peer_ip.as_bytes());
        common.extend_from_slice(if self.stream.is_tls() {
            b"\r\nX-Forwarded-Proto: https\r\n"
        } else {
            b"\r\nX-Forwarded-Proto: http\r\n"
        });
        let g = &self.scratch.gateway;
        if p.request_id {
            g.request_id_field(&mut common);
        }
        if let Some(a) = p.auth.map(|a| &snap.auths[a]) {
            g.write_claims(a, &mut |b: &[u8]| common.extend_from_slice(b));
        }
        let started = Instant::now();
        let ends = ClientEnds {
            source: self.peer,
            destination,
            owner: self.conn_id,
        };
        let clock = &self.ctx.deadlines;
        let fetches = agg.parts.iter().zip(&paths).map(|(part, path)| {
            let u = &snap.upstreams[part.upstream];
            fetch(state, clock, u, part, path, &common, &ends, agg.max_bytes)
        });
        let results = futures_util::future::join_all(fetches).await;
        self.tally.upstream_time = Some(started.elapsed());

        let mut merged = Map::new();
        let mut errors = Map::new();
        for (part, result) in agg.parts.iter().zip(results) {
            let name = || match &part.key {
                Some(k) => k.to_string(),
                None => snap.upstreams[part.upstream].name.clone(),
            };
            match result {
                Ok(v) => match (&part.key, v) {
                    (Some(k), v) => {
                        merged.insert(k.to_string(), v);
                    }
                    (None, Value::Object(members)) => merged.extend(members),
                    (None, _) => {
                        errors.insert(
                            name(),
                            "not a JSON object (a part without key must answer one)".into(),
                        );
                    }
                },
                Err(e) => {
                    tracing::debug!(part = %name(), "aggregate part failed: {e}");
                    errors.insert(name(), e.into());
                }
            }
        }
        if !errors.is_empty() {
            if agg.fail_whole {
                let extra = self.scratch.gateway.answer_fields(p);
                return self
                    .refuse(502, "a part of the aggregate failed", &extra, done)
                    .await;
            }
            merged.insert("partial".into(), Value::Bool(true));
            merged.insert("errors".into(), Value::Object(errors));
        }
        let body = serde_json::to_vec(&Value::Object(merged)).unwrap_or_default();
        let mut fields = Vec::with_capacity(128);
        fields.extend_from_slice(b"Content-Type: application/json\r\n");
        self.scratch
            .gateway
            .response_fields(p, Some(("", 200)), &mut |b: &[u8]| {
                fields.extend_from_slice(b)
            });
        self.respond(200, &fields, &body, done).await
    }
}

/// One part: a GET to a backend of `u`, its JSON body parsed. A pooled connection the backend
/// had closed is replaced once by a new one.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    state: &WorkerState,
    clock: &super::deadline::Deadlines,
    u: &Upstream,
    part: &AggregatePart,
    path: &[u8],
    common: &[u8],
    ends: &ClientEnds,
    max: usize,
) -> Result<Value, String> {
    let ms = part.timeout.as_millis();
    // Parts run at once in the client's task: each has its own deadline slot.
    let slot = clock.open_owned();
    let attempt = async {
        let ups = &state.upstreams;
        let mut tried = Tried::default();
        let mut last = String::from("no backend available");
        for _ in 0..2 {
            let Some(backend) = ups.pick(u, ups.random(), &tried) else {
                break;
            };
            let mut conn = match ups.checkout(u, backend, ends).await {
                Ok(c) => c,
                Err(e) => {
                    ups.failure(u, backend);
                    tried.add(backend);
                    last = format!("connect to {} failed: {e}", u.backends[backend].address);
                    continue;
                }
            };
            let mut head = Vec::with_capacity(64 + path.len() + common.len());
            head.extend_from_slice(b"GET ");
            head.extend_from_slice(path);
            head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
            head.extend_from_slice(u.backends[backend].address.as_bytes());
            head.extend_from_slice(b"\r\n");
            head.extend_from_slice(common);
            head.extend_from_slice(b"\r\n");
            // Each I/O step may take the whole part's time: the part's own deadline (below)
            // is what ends it.
            let io = Limit::new(slot.timer(), part.timeout + Duration::from_secs(1));
            match exchange(&mut conn.stream, head, u, io, max).await {
                Ok((body, reusable)) => {
                    ups.success(u, backend);
                    if reusable {
                        ups.release(u, conn);
                    }
                    return serde_json::from_slice::<Value>(&body)
                        .map_err(|e| format!("invalid JSON from upstream: {e}"));
                }
                // A pooled connection closed by the backend before any byte: try a new one.
                Err(Failure::ClosedEarly) if conn.reused => {
                    last = "upstream closed the connection".into();
                }
                Err(f) => {
                    if matches!(f, Failure::ClosedEarly | Failure::Status(500..)) {
                        ups.failure(u, backend);
                    }
                    return Err(f.to_string());
                }
            }
        }
        Err(last)
    };
    match monoio::time::timeout(part.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {ms} ms")),
    }
}

enum Failure {
    ClosedEarly,
    Status(u16),
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ClosedEarly => f.write_str("upstream closed the connection"),
            Failure::Status(s) => write!(f, "upstream answered {s}"),
            Failure::Other(s) => f.write_str(s),
        }
    }
}

/// Sends `head` and reads the whole response: (body, whether the connection can be pooled).
/// A status other than 2xx is a failure.
async fn exchange(
    stream: &mut crate::tls::Stream,
    head: Vec<u8>,
    u: &Upstream,
    timeout: Limit<'_>,
    max: usize,
) -> Result<(Vec<u8>, bool), Failure> {
    let other = |s: &str| Failure::Other(s.to_string());
    write_all(stream, head, timeout)
        .await
        .map_err(|_| Failure::ClosedEarly)?;
    let mut buf = RecvBuf::with_capacity(4096);
    let mut reader = HeadReader::new(u.max_response_head);
    let mut fields = vec![Header::default(); u.max_response_headers];
    let cap = u.max_response_head + max;
    let resp = loop {
        if !buf.is_empty() {
            match reader.response(buf.data(), &mut fields) {
                Ok(Status::Complete(r)) if (100..200).contains(&r.code) => {
                    buf.consume(r.head_len);
                    buf.compact();
                    reader.reset();
                    continue;
                }
                Ok(Status::Complete(r)) => break r,
                Ok(Status::Partial) => {}
                Err(e) => {
                    return Err(Failure::Other(format!(
                        "invalid response head: {}",
                        e.as_str()
                    )))
                }
            }
        }
        match buf.read_from(stream, timeout, cap).await {
            Ok(_) => {}
            Err(IoFail::TimedOut) => return Err(other("upstream did not answer in time")),
            Err(_) if buf.is_empty() => return Err(Failure::ClosedEarly),
            Err(_) => return Err(other("upstream closed mid-response")),
        }
    };
    if !(200..300).contains(&resp.code) {
        return Err(Failure::Status(resp.code));
    }
    let data = buf.data();
    let rh = &fields[..resp.header_count];
    let framing = http1::response_framing(&resp, rh, data, Method::Get)
        .map_err(|_| other("ambiguous response framing"))?;
    let close = http1::ConnectionOptions::parse(rh, data).close || resp.version != Version::Http11;
    buf.consume(resp.head_len);
    let too_big = || Failure::Other(format!("response body larger than {max} bytes"));
    let mut body = Vec::new();
    let reusable = match framing {
        Framing::None => !close,
        Framing::Length(n) => {
            if n > max as u64 {
                return Err(too_big());
            }
            let n = n as usize;
            while buf.data().len() < n {
                if buf.read_from(stream, timeout, cap).await.is_err() {
                    return Err(other("upstream closed mid-body"));
                }
            }
            body.extend_from_slice(&buf.data()[..n]);
            buf.consume(n);
            !close && buf.is_empty()
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new(4096, 8192);
            loop {
                let (used, chunk) = dec
                    .decode(buf.data())
                    .map_err(|_| other("invalid chunked body"))?;
                if let Chunk::Data(r) = &chunk {
                    if body.len() + r.len() > max {
                        return Err(too_big());
                    }
                    body.extend_from_slice(&buf.data()[r.clone()]);
                }
                buf.consume(used);
                match chunk {
                    Chunk::Done => break,
                    Chunk::Data(_) => {}
                    Chunk::NeedMore => {
                        if buf.read_from(stream, timeout, cap).await.is_err() {
                            return Err(other("upstream closed mid-body"));
                        }
                    }
                }
            }
            !close && buf.is_empty()
        }
        Framing::UntilClose => {
            loop {
                if buf.data().len() > max {
                    return Err(too_big());
                }
                match buf.read_from(stream, timeout, cap).await {
                    Ok(_) => {}
                    Err(IoFail::Eof) => break,
                    Err(_) => return Err(other("upstream failed mid-body")),
                }
            }
            body.extend_from_slice(buf.data());
            false
        }
    };
    Ok((body, reusable))
}
