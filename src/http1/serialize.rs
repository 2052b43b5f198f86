//! Writing heads out: a [`HeadPlan`] is the head the proxy sends, as a list of pieces — spans
//! of the received buffer (untouched request line and header lines, coalesced when adjacent),
//! static strings, and a small owned buffer for the few fields the proxy adds or changes. The
//! proxy turns the pieces into iovecs for one vectored write; no untouched byte is copied.

use super::{Header, Request, Response, Span, Version};

/// One part of an outgoing head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes of the received buffer.
    Input(Span),
    /// Bytes of the plan's own extra buffer.
    Extra(Span),
    Static(&'static [u8]),
}

/// A replacement request target: `prefix`, then `owned`, then the `input` span of the received
/// buffer (any of them may be empty).
#[derive(Clone, Copy, Debug)]
pub struct NewTarget<'a> {
    pub prefix: &'a [u8],
    pub owned: &'a [u8],
    pub input: Span,
}

/// A point in a plan to go back to ([`HeadPlan::mark`], [`HeadPlan::truncate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanMark {
    pieces: usize,
    extra: usize,
    len: usize,
}

/// A head to write, built per message and reused (cleared) across messages: after warm-up it
/// does not allocate.
#[derive(Clone, Debug, Default)]
pub struct HeadPlan {
    pieces: Vec<Piece>,
    extra: Vec<u8>,
    len: usize,
}

impl HeadPlan {
    pub fn new() -> HeadPlan {
        HeadPlan {
            pieces: Vec::with_capacity(16),
            extra: Vec::with_capacity(256),
            len: 0,
        }
    }

    pub fn clear(&mut self) {
        self.pieces.clear();
        self.extra.clear();
        self.len = 0;
    }

    /// Total bytes of the head.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    pub fn extra(&self) -> &[u8] {
        &self.extra
    }

    /// The plan as it is now: fields appended after it can be taken back with
    /// [`HeadPlan::truncate`] (to end the same head differently for another backend).
    pub fn mark(&self) -> PlanMark {
        PlanMark {
            pieces: self.pieces.len(),
            extra: self.extra.len(),
            len: self.len,
        }
    }

    /// Drops everything appended after `mark`.
    pub fn truncate(&mut self, mark: PlanMark) {
        self.pieces.truncate(mark.pieces);
        self.extra.truncate(mark.extra);
        self.len = mark.len;
    }

    /// Appends bytes `span` of the received buffer, merging with the previous piece when
    /// adjacent.
    pub fn input(&mut self, span: Span) {
        if span.is_empty() {
            return;
        }
        self.len += span.len();
        if let Some(Piece::Input(last)) = self.pieces.last_mut() {
            if last.end == span.start {
                last.end = span.end;
                return;
            }
        }
        self.pieces.push(Piece::Input(span));
    }

    /// Appends bytes copied into the plan's own buffer.
    pub fn bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = self.extra.len();
        self.extra.extend_from_slice(bytes);
        self.len += bytes.len();
        let span = Span::new(start, self.extra.len());
        if let Some(Piece::Extra(last)) = self.pieces.last_mut() {
            if last.end == span.start {
                last.end = span.end;
                return;
            }
        }
        self.pieces.push(Piece::Extra(span));
    }

    pub fn static_bytes(&mut self, bytes: &'static [u8]) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.pieces.push(Piece::Static(bytes));
        }
    }

    /// Appends a `name: value\r\n` field line.
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        self.bytes(name);
        self.bytes(b": ");
        self.bytes(value);
        self.bytes(b"\r\n");
    }

    /// The request line (always sent as HTTP/1.1; `target` replaces the received target) and
    /// every received field for which `keep` returns true, untouched. Add fields with
    /// [`HeadPlan::header`], then call [`HeadPlan::end`].
    pub fn request_head(
        &mut self,
        req: &Request,
        headers: &[Header],
        target: Option<NewTarget<'_>>,
        keep: impl FnMut(&Header) -> bool,
    ) {
        let headers = &headers[..req.header_count.min(headers.len())];
        let line_end = headers
            .first()
            .map_or(req.head_len - 2, |h| h.name.start as usize);
        match target {
            None if req.version == Version::Http11 => {
                self.input(Span::new(req.method_span.start as usize, line_end));
            }
            _ => {
                self.input(Span::new(
                    req.method_span.start as usize,
                    req.target.start as usize,
                ));
                match target {
                    Some(t) => {
                        self.bytes(t.prefix);
                        self.bytes(t.owned);
                        self.input(t.input);
                    }
                    None => self.input(req.target),
                }
                self.static_bytes(b" HTTP/1.1\r\n");
            }
        }
        self.fields(headers, req.head_len, keep);
    }

    /// The status line (always sent as HTTP/1.1) and every received field `keep` accepts.
    pub fn response_head(
        &mut self,
        resp: &Response,
        headers: &[Header],
        keep: impl FnMut(&Header) -> bool,
    ) {
        let headers = &headers[..resp.header_count.min(headers.len())];
        let line_end = headers
            .first()
            .map_or(resp.head_len - 2, |h| h.name.start as usize);
        if resp.version == Version::Http11 {
            self.input(Span::new(0, line_end));
        } else {
            self.static_bytes(b"HTTP/1.1");
            self.input(Span::new(8, line_end));
        }
        self.fields(headers, resp.head_len, keep);
    }

    fn fields(
        &mut self,
        headers: &[Header],
        head_len: usize,
        mut keep: impl FnMut(&Header) -> bool,
    ) {
        for (i, h) in headers.iter().enumerate() {
            if keep(h) {
                let end = headers
                    .get(i + 1)
                    .map_or(head_len - 2, |n| n.name.start as usize);
                self.input(Span::new(h.name.start as usize, end));
            }
        }
    }

    /// Ends the head with the empty line.
    pub fn end(&mut self) {
        self.static_bytes(b"\r\n");
    }

    /// The head as slices, in order: `input` is the buffer that was parsed.
    pub fn slices<'a>(&'a self, input: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.pieces.iter().map(move |p| match *p {
            Piece::Input(s) => s.of(input),
            Piece::Extra(s) => s.of(&self.extra),
            Piece::Static(s) => s,
        })
    }

    /// The head joined into one buffer (for TLS streams, which want one record, and tests).
    pub fn write_to(&self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(self.len);
        for s in self.slices(input) {
            out.extend_from_slice(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{parse_request, parse_response, HeaderKind};

    #[test]
    fn request_without_changes_is_one_slice() {
        let input = b"GET /a HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n";
        let mut hs = [Header::default(); 8];
        let r = parse_request(input, &mut hs).unwrap().complete().unwrap();
        let mut plan = HeadPlan::new();
        plan.request_head(&r, &hs, None, |_| true);
        plan.end();
        assert_eq!(plan.pieces().len(), 2, "{:?}", plan.pieces());
        let mut out = Vec::new();
        plan.write_to(input, &mut out);
        assert_eq!(out, input);
        assert_eq!(plan.len(), input.len());
    }

    #[test]
    fn request_with_removed_added_fields_and_new_target() {
        let input =
            b"GET /api/x?y HTTP/1.0\r\nHost: h\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\
                      Accept: */*\r\nKeep-Alive: 5\r\nUser-Agent: t\r\n\r\nBODY";
        let mut hs = [Header::default(); 8];
        let r = parse_request(input, &mut hs).unwrap().complete().unwrap();
        let rest = Span::new(r.target.start as usize + 4, r.target.end as usize);
        let mut plan = HeadPlan::new();
        let target = NewTarget {
            prefix: b"/v2",
            owned: b"",
            input: rest,
        };
        plan.request_head(&r, &hs, Some(target), |h| {
            !h.kind.is_hop_by_hop() && !h.name.of(input).eq_ignore_ascii_case(b"x-a")
        });
        plan.header(b"X-Forwarded-For", b"127.0.0.1");
        plan.end();
        let mut out = Vec::new();
        plan.write_to(input, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /v2/x?y HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nUser-Agent: t\r\n\
             X-Forwarded-For: 127.0.0.1\r\n\r\n"
        );
        // Untouched bytes are referenced, not copied: only the new prefix and field are extra.
        assert_eq!(plan.extra(), b"/v2X-Forwarded-For: 127.0.0.1\r\n");
        assert_eq!(
            plan.len(),
            plan.slices(input).map(<[u8]>::len).sum::<usize>()
        );
    }

    #[test]
    fn response_is_sent_as_http11() {
        let input =
            b"HTTP/1.0 200 OK\r\nServer: s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let mut hs = [Header::default(); 8];
        let r = parse_response(input, &mut hs).unwrap().complete().unwrap();
        let mut plan = HeadPlan::new();
        plan.response_head(&r, &hs, |h| h.kind != HeaderKind::Connection);
        plan.end();
        let mut out = Vec::new();
        plan.write_to(input, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 0\r\n\r\n"
        );
        plan.clear();
        assert!(plan.is_empty() && plan.pieces().is_empty());
    }
}
