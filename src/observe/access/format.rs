//! The text of access-log lines: the `combined` and `json` formats, the wall clock they show and
//! the request ids they generate. A line is written through a cursor into room reserved once
//! (an upper bound of its length), so each field costs a copy, not a vector's bookkeeping; bytes
//! from the request are scanned eight at a time and copied as they are when nothing in them
//! needs an escape.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Entry;

/// The wall clock as log lines show it, formatted once per second. Read from the system once a
/// second; in between it is that reading plus the monotonic time since (the caller's `Instant`,
/// which the request path has at hand): no clock call per line.
#[derive(Default)]
pub(super) struct Clock {
    anchor: Option<(Instant, Duration)>,
    secs: u64,
    /// `01/Dec/2026:16:30:00 +0000`
    common: [u8; 26],
    /// `2026-12-01T16:30:00`
    iso: [u8; 19],
}

impl Clock {
    /// The wall time at `now` (since the Unix epoch), with the formatted second updated.
    pub(super) fn wall(&mut self, now: Instant) -> Duration {
        let wall = match self.anchor {
            Some((at, wall)) if now >= at && now - at < Duration::from_secs(1) => wall + (now - at),
            _ => {
                let wall = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                self.anchor = Some((now, wall));
                wall
            }
        };
        self.set(wall.as_secs());
        wall
    }

    fn set(&mut self, secs: u64) {
        if secs == self.secs && self.iso[0] != 0 {
            return;
        }
        self.secs = secs;
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        let t = secs % 86_400;
        let (h, mi, s) = (t / 3600, t / 60 % 60, t % 60);
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let two = |out: &mut [u8], v: u64| {
            out[0] = b'0' + (v / 10 % 10) as u8;
            out[1] = b'0' + (v % 10) as u8;
        };
        let four = |out: &mut [u8], v: u64| {
            two(&mut out[..2], v / 100);
            two(&mut out[2..4], v % 100);
        };
        let c = &mut self.common;
        two(&mut c[0..2], d);
        c[2] = b'/';
        c[3..6].copy_from_slice(MONTHS[(mo - 1) as usize]);
        c[6] = b'/';
        four(&mut c[7..11], y);
        c[11] = b':';
        two(&mut c[12..14], h);
        c[14] = b':';
        two(&mut c[15..17], mi);
        c[17] = b':';
        two(&mut c[18..20], s);
        c[20..26].copy_from_slice(b" +0000");
        let i = &mut self.iso;
        four(&mut i[0..4], y);
        i[4] = b'-';
        two(&mut i[5..7], mo);
        i[7] = b'-';
        two(&mut i[8..10], d);
        i[10] = b'T';
        two(&mut i[11..13], h);
        i[13] = b':';
        two(&mut i[14..16], mi);
        i[16] = b':';
        two(&mut i[17..19], s);
    }
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (u64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y.max(0) as u64, m as u64, d as u64)
}

/// A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 bits from `n` (scrambled).
pub fn uuid_v7(out: &mut [u8; 36], ms: u64, n: u64) -> &[u8] {
    let r = splitmix(n);
    let hi = (ms << 16) | 0x7000 | (r >> 52);
    let lo = (r & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Output position of each byte's two digits (dashes after bytes 4, 6, 8 and 10).
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    for (b, &at) in bytes.iter().zip(&AT) {
        out[at] = HEX[(b >> 4) as usize];
        out[at + 1] = HEX[(b & 15) as usize];
    }
    for at in [8, 13, 18, 23] {
        out[at] = b'-';
    }
    &out[..]
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A per-worker start for request ids (different in every process and worker).
pub(super) fn seed(worker: usize) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(worker);
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// A line's request id: the request's own (escaped as any request field) or one generated here.
#[derive(Clone, Copy)]
pub(super) enum Id<'a> {
    Received(&'a [u8]),
    Generated(&'a [u8]),
}

/// Bytes a line needs besides its variable fields (keys, numbers, time, punctuation).
const FIXED: usize = 640;
/// Longest escape of one byte: `\u00HH` in JSON (`\xHH` in combined).
const WORST: usize = 6;

/// An upper bound of the length of `e`'s line in either format.
fn bound(e: &Entry<'_>, id: Id<'_>) -> usize {
    let config = e.client.len()
        + e.listener.len()
        + e.route.map_or(0, str::len)
        + e.upstream.map_or(0, |(n, a)| n.len() + a.len());
    let request = e.request.as_ref().map_or(0, |r| {
        r.method.len()
            + r.target.len()
            + r.host.map_or(0, <[u8]>::len)
            + r.referer.map_or(0, <[u8]>::len)
            + r.user_agent.map_or(0, <[u8]>::len)
    });
    let id = match id {
        Id::Received(v) | Id::Generated(v) => v.len(),
    };
    FIXED + config + WORST * (request + id)
}

/// Writes `e`'s line at the end of `out` in `json` or combined format.
pub(super) fn line(
    out: &mut Vec<u8>,
    json: bool,
    e: &Entry<'_>,
    clock: &Clock,
    millis: u32,
    id: Id<'_>,
) {
    let start = out.len();
    out.resize(start + bound(e, id), 0);
    let mut w = Cursor {
        buf: &mut out[start..],
        pos: 0,
    };
    if json {
        json_line(&mut w, e, clock, millis, id);
    } else {
        combined(&mut w, e, clock, id);
    }
    let len = w.pos;
    out.truncate(start + len);
}

/// A write position in room reserved for one line (`bound` makes it large enough; a write that
/// would not fit is dropped rather than panic).
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Cursor<'_> {
    #[inline]
    fn put(&mut self, s: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.pos..self.pos + s.len()) {
            dst.copy_from_slice(s);
            self.pos += s.len();
        }
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        if let Some(dst) = self.buf.get_mut(self.pos) {
            *dst = b;
            self.pos += 1;
        }
    }

    fn decimal(&mut self, mut n: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        while n >= 100 {
            let pair = (n % 100) as usize * 2;
            n /= 100;
            i -= 2;
            tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if n >= 10 {
            let pair = n as usize * 2;
            i -= 2;
            tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else {
            i -= 1;
            tmp[i] = b'0' + n as u8;
        }
        self.put(&tmp[i..]);
    }

    /// A status code (100–999 as three digits).
    fn status(&mut self, s: u16) {
        if (100..1000).contains(&s) {
            let s = s as usize;
            let pair = (s % 100) * 2;
            self.put(&[
                b'0' + (s / 100) as u8,
                DIGIT_PAIRS[pair],
                DIGIT_PAIRS[pair + 1],
            ]);
        } else {
            self.decimal(s as u64);
        }
    }

    /// Seconds with millisecond resolution: `0.003`.
    fn seconds(&mut self, d: Duration) {
        let ms = d.as_millis() as u64;
        let (s, f) = (ms / 1000, (ms % 1000) as usize);
        if s < 10 {
            self.byte(b'0' + s as u8);
        } else {
            self.decimal(s);
        }
        self.put(&[
            b'.',
            b'0' + (f / 100) as u8,
            DIGIT_PAIRS[(f % 100) * 2],
            DIGIT_PAIRS[(f % 100) * 2 + 1],
        ]);
    }

    /// Request bytes for the combined format: `"`, `\`, control and non-ASCII bytes as `\xHH`
    /// (as nginx writes them).
    fn escaped(&mut self, v: &[u8]) {
        if plain(v) {
            return self.put(v);
        }
        let mut run = 0;
        for (i, &b) in v.iter().enumerate() {
            if needs_hex(b) {
                self.put(&v[run..i]);
                self.put(&[
                    b'\\',
                    b'x',
                    HEX_UPPER[(b >> 4) as usize],
                    HEX_UPPER[(b & 15) as usize],
                ]);
                run = i + 1;
            }
        }
        self.put(&v[run..]);
    }

    /// A quoted field of the combined format, `-` when empty or absent.
    fn quoted(&mut self, v: Option<&[u8]>) {
        self.byte(b'"');
        match v {
            None | Some([]) => self.byte(b'-'),
            Some(v) => self.escaped(v),
        }
        self.byte(b'"');
    }

    /// A JSON string: `"`, `\` and control bytes escaped; bytes that are not UTF-8 as `\u00HH`,
    /// so that every line is valid JSON whatever the client sent.
    fn json_str(&mut self, v: &[u8]) {
        self.byte(b'"');
        if plain(v) {
            self.put(v);
            return self.byte(b'"');
        }
        let utf8 = std::str::from_utf8(v).is_ok();
        let mut run = 0;
        for (i, &b) in v.iter().enumerate() {
            let esc: Option<&[u8]> = match b {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0..0x20 | 0x7f => None,
                0x80.. if !utf8 => None,
                _ => continue,
            };
            self.put(&v[run..i]);
            match esc {
                Some(s) => self.put(s),
                None => self.put(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX_UPPER[(b >> 4) as usize],
                    HEX_UPPER[(b & 15) as usize],
                ]),
            }
            run = i + 1;
        }
        self.put(&v[run..]);
        self.byte(b'"');
    }

    /// A JSON string known to need no escape (names the config checked, addresses, the
    /// protocol, generated ids).
    fn json_plain(&mut self, v: &[u8]) {
        self.byte(b'"');
        self.put(v);
        self.byte(b'"');
    }

    fn json_opt(&mut self, v: Option<&[u8]>) {
        match v {
            Some(v) => self.json_str(v),
            None => self.put(b"null"),
        }
    }
}

/// "00" to "99".
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// True for a byte the combined format writes as `\xHH`.
#[inline]
fn needs_hex(b: u8) -> bool {
    b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b)
}

/// True when `v` holds only printable ASCII other than `"` and `\` (nothing to escape in
/// either format). Eight bytes at a time: any byte >= 0x80, < 0x20, or equal to `"`, `\` or DEL
/// sets a high bit (the usual exact zero-byte and less-than tests on a word).
fn plain(v: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |y: u64| y.wrapping_sub(ONES) & !y & HIGH;
    let word = |x: u64| {
        (x & HIGH)
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
            | zero(x ^ (ONES * b'"' as u64))
            | zero(x ^ (ONES * b'\\' as u64))
            | zero(x ^ (ONES * 0x7f))
    };
    let mut chunks = v.chunks_exact(8);
    let mut bad = 0;
    for c in &mut chunks {
        bad |= word(u64::from_le_bytes(c.try_into().unwrap_or_default()));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Pad with a harmless byte.
        let mut last = [b'a'; 8];
        last[..rest.len()].copy_from_slice(rest);
        bad |= word(u64::from_le_bytes(last));
    }
    bad == 0
}

/// `client - consumer [time] "METHOD TARGET PROTOCOL" status body_bytes "referer" "user agent"
/// rt=SECONDS upstream=ADDR urt=SECONDS id=REQUEST-ID` (the consumer where nginx writes
/// `$remote_user`, `-` without one). The method is a token (the parser
/// checked it) and the backend address comes from the config: both are written as they are.
fn combined(w: &mut Cursor<'_>, e: &Entry<'_>, clock: &Clock, id: Id<'_>) {
    w.put(e.client.as_bytes());
    w.put(b" - ");
    match e.consumer.filter(|c| !c.is_empty()) {
        Some(c) => w.escaped(c.as_bytes()),
        None => w.byte(b'-'),
    }
    w.put(b" [");
    w.put(&clock.common);
    w.put(b"] \"");
    match &e.request {
        Some(r) => {
            w.put(r.method);
            w.byte(b' ');
            w.escaped(r.target);
            w.byte(b' ');
            w.put(r.protocol.as_bytes());
        }
        None => w.byte(b'-'),
    }
    w.put(b"\" ");
    w.status(e.status);
    w.byte(b' ');
    w.decimal(e.body_bytes_sent);
    w.byte(b' ');
    let r = e.request.as_ref();
    w.quoted(r.and_then(|r| r.referer));
    w.byte(b' ');
    w.quoted(r.and_then(|r| r.user_agent));
    w.put(b" rt=");
    w.seconds(e.request_time);
    w.put(b" upstream=");
    match e.upstream {
        Some((_, addr)) => w.put(addr.as_bytes()),
        None => w.byte(b'-'),
    }
    w.put(b" urt=");
    match e.upstream_time {
        Some(t) => w.seconds(t),
        None => w.byte(b'-'),
    }
    w.put(b" id=");
    match id {
        Id::Received(v) => w.escaped(v),
        Id::Generated(v) => w.put(v),
    }
    w.byte(b'\n');
}

/// One JSON object per line.
fn json_line(w: &mut Cursor<'_>, e: &Entry<'_>, clock: &Clock, millis: u32, id: Id<'_>) {
    let ms = millis as usize % 1000;
    w.put(b"{\"time\":\"");
    w.put(&clock.iso);
    w.put(&[
        b'.',
        b'0' + (ms / 100) as u8,
        DIGIT_PAIRS[(ms % 100) * 2],
        DIGIT_PAIRS[(ms % 100) * 2 + 1],
        b'Z',
        b'"',
    ]);
    w.put(b",\"client\":");
    w.json_plain(e.client.as_bytes());
    w.put(b",\"listener\":");
    w.json_plain(e.listener.as_bytes());
    w.put(b",\"route\":");
    match e.route {
        Some(r) => w.json_plain(r.as_bytes()),
        None => w.put(b"null"),
    }
    let r = e.request.as_ref();
    w.put(b",\"method\":");
    match r {
        Some(r) => w.json_plain(r.method),
        None => w.put(b"null"),
    }
    w.put(b",\"target\":");
    w.json_opt(r.map(|r| r.target));
    w.put(b",\"protocol\":");
    match r {
        Some(r) => w.json_plain(r.protocol.as_bytes()),
        None => w.put(b"null"),
    }
    w.put(b",\"host\":");
    w.json_opt(r.and_then(|r| r.host));
    w.put(b",\"status\":");
    w.status(e.status);
    w.put(b",\"bytes_sent\":");
    w.decimal(e.bytes_sent);
    w.put(b",\"body_bytes_sent\":");
    w.decimal(e.body_bytes_sent);
    w.put(b",\"request_length\":");
    w.decimal(e.request_length);
    w.put(b",\"request_time\":");
    w.seconds(e.request_time);
    w.put(b",\"upstream\":");
    match e.upstream {
        Some((name, addr)) => {
            w.json_plain(name.as_bytes());
            w.put(b",\"upstream_addr\":");
            w.json_plain(addr.as_bytes());
        }
        None => w.put(b"null,\"upstream_addr\":null"),
    }
    w.put(b",\"upstream_time\":");
    match e.upstream_time {
        Some(t) => w.seconds(t),
        None => w.put(b"null"),
    }
    w.put(b",\"consumer\":");
    w.json_opt(e.consumer.map(str::as_bytes));
    w.put(b",\"referer\":");
    w.json_opt(r.and_then(|r| r.referer));
    w.put(b",\"user_agent\":");
    w.json_opt(r.and_then(|r| r.user_agent));
    w.put(b",\"request_id\":");
    match id {
        Id::Received(v) => w.json_str(v),
        Id::Generated(v) => w.json_plain(v),
    }
    w.put(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::super::RequestLine;
    use super::*;

    fn entry<'a>(request: Option<RequestLine<'a>>) -> Entry<'a> {
        Entry {
            client: "127.0.0.1",
            listener: "main",
            route: Some("api"),
            request,
            status: 200,
            bytes_sent: 120,
            body_bytes_sent: 5,
            request_length: 78,
            request_time: Duration::from_micros(3_456),
            upstream: Some(("app", "127.0.0.1:9001")),
            upstream_time: Some(Duration::from_millis(2)),
            consumer: None,
        }
    }

    fn request<'a>() -> RequestLine<'a> {
        RequestLine {
            method: b"GET",
            target: b"/a\"b?c=\x01",
            protocol: "HTTP/1.1",
            host: Some(b"example.com"),
            referer: None,
            user_agent: Some(b"curl/8 \xff"),
            request_id: b"abc",
        }
    }

    #[test]
    fn clock_formats_utc() {
        let mut c = Clock::default();
        c.set(1_796_142_600); // 2026-12-01T16:30:00Z
        assert_eq!(&c.common, b"01/Dec/2026:16:30:00 +0000");
        assert_eq!(&c.iso, b"2026-12-01T16:30:00");
        c.set(951_782_400); // 2000-02-29T00:00:00Z
        assert_eq!(&c.iso, b"2000-02-29T00:00:00");
        c.set(0);
        assert_eq!(&c.common, b"01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn combined_line_escapes_like_nginx() {
        let mut c = Clock::default();
        c.set(1_796_142_600);
        let mut out = Vec::new();
        line(
            &mut out,
            false,
            &entry(Some(request())),
            &c,
            0,
            Id::Received(b"abc"),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [01/Dec/2026:16:30:00 +0000] \"GET /a\\x22b?c=\\x01 HTTP/1.1\" 200 5 \"-\" \"curl/8 \\xFF\" rt=0.003 upstream=127.0.0.1:9001 urt=0.002 id=abc\n"
        );
        // The consumer (escaped like the rest: it may come from a token's claim).
        let mut out = Vec::new();
        let e = Entry {
            consumer: Some("al ice\""),
            ..entry(Some(request()))
        };
        line(&mut out, false, &e, &c, 0, Id::Received(b"abc"));
        assert!(
            out.starts_with(b"127.0.0.1 - al ice\\x22 [01/Dec/2026:16:30:00 +0000] "),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let mut out = Vec::new();
        let mut e = entry(None);
        e.status = 400;
        e.upstream = None;
        e.upstream_time = None;
        line(&mut out, false, &e, &c, 0, Id::Generated(b"x"));
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("] \"-\" 400 5 \"-\" \"-\" rt=0.003 upstream=- urt=- id=x\n"),
            "{s}"
        );
    }

    #[test]
    fn json_lines_parse_whatever_the_bytes() {
        let mut c = Clock::default();
        c.set(1_796_142_600);
        let mut out = Vec::new();
        line(
            &mut out,
            true,
            &entry(Some(request())),
            &c,
            7,
            Id::Received(b"abc"),
        );
        let v: serde_json::Value = serde_json::from_slice(&out[..out.len() - 1]).unwrap();
        assert_eq!(v["time"], "2026-12-01T16:30:00.007Z");
        assert_eq!(v["target"], "/a\"b?c=\u{1}");
        assert_eq!(v["user_agent"], "curl/8 \u{ff}");
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["status"], 200);
        assert_eq!(v["request_time"], 0.003);
        assert_eq!(v["upstream_addr"], "127.0.0.1:9001");
        assert_eq!(v["request_id"], "abc");
        let mut out = Vec::new();
        line(
            &mut out,
            true,
            &entry(Some(RequestLine {
                user_agent: Some("é".as_bytes()),
                ..request()
            })),
            &c,
            0,
            Id::Received(b"x\"y"),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["user_agent"], "é");
        assert_eq!(v["request_id"], "x\"y");
    }

    #[test]
    fn plain_agrees_with_the_byte_test() {
        for b in 0..=255u8 {
            for len in 1..20 {
                for at in [0, len / 2, len - 1] {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    assert_eq!(plain(&v), !needs_hex(b), "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(plain(b""));
        assert!(plain(b"GET /api/items?q=1 Mozilla/5.0 (X11; Linux x86_64)"));
    }

    proptest::proptest! {
        /// Whatever bytes a client sends, a combined line is one line of printable ASCII with
        /// its six quotes in place, and a JSON line parses with the bytes it was given.
        #[test]
        fn lines_are_well_formed_for_any_bytes(
            target in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            ua in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            id in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let mut c = Clock::default();
            c.set(1_796_142_600);
            let r = RequestLine { target: &target, user_agent: Some(&ua), ..request() };
            let mut out = Vec::new();
            line(&mut out, false, &entry(Some(r)), &c, 0, Id::Received(&id));
            proptest::prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            proptest::prop_assert!(out[..out.len() - 1].iter().all(|&b| (0x20..0x7f).contains(&b)));
            proptest::prop_assert_eq!(out.iter().filter(|&&b| b == b'"').count(), 6);
            let mut out = Vec::new();
            line(&mut out, true, &entry(Some(r)), &c, 1, Id::Received(&id));
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let got = v["target"].as_str().unwrap();
            if std::str::from_utf8(&target).is_ok() {
                proptest::prop_assert_eq!(got.as_bytes(), &target[..]);
            } else {
                // Not UTF-8: every byte >= 0x80 became \u00HH, i.e. the char of that code.
                let bytes: Vec<u8> = got.chars().map(|c| c as u32 as u8).collect();
                proptest::prop_assert_eq!(bytes, target.clone());
            }
        }
    }

    /// The room reserved is enough for the longest numbers and every byte escaped.
    #[test]
    fn the_bound_holds_at_the_extremes() {
        let mut c = Clock::default();
        c.set(u32::MAX as u64 * 100);
        let nasty = [0x01u8; 300];
        let r = RequestLine {
            method: b"PROPFIND",
            target: &nasty,
            protocol: "HTTP/1.1",
            host: Some(&nasty),
            referer: Some(&nasty),
            user_agent: Some(&nasty),
            request_id: &nasty,
        };
        let mut e = entry(Some(r));
        e.status = u16::MAX;
        e.bytes_sent = u64::MAX;
        e.body_bytes_sent = u64::MAX;
        e.request_length = u64::MAX;
        e.request_time = Duration::from_secs(u64::MAX / 1000);
        e.upstream_time = Some(Duration::from_secs(u64::MAX / 1000));
        for json in [false, true] {
            let mut out = Vec::new();
            line(&mut out, json, &e, &c, 999, Id::Received(&nasty));
            assert!(out.ends_with(b"\n"), "{}", String::from_utf8_lossy(&out));
            if json {
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(v["bytes_sent"], u64::MAX);
            }
        }
    }

    #[test]
    fn decimals() {
        for n in [
            0,
            7,
            10,
            99,
            100,
            101,
            999,
            1000,
            65535,
            1_000_000,
            u64::MAX,
        ] {
            let mut buf = [0u8; 20];
            let mut w = Cursor {
                buf: &mut buf,
                pos: 0,
            };
            w.decimal(n);
            let len = w.pos;
            assert_eq!(&buf[..len], n.to_string().as_bytes());
        }
    }

    #[test]
    fn request_ids_are_uuid_v7() {
        let mut out = [0u8; 36];
        let s = std::str::from_utf8(uuid_v7(&mut out, 0x0192_3456_789a, 1))
            .unwrap()
            .to_string();
        assert_eq!(s.len(), 36);
        assert!(s.starts_with("01923456-789a-7"), "{s}");
        assert!(matches!(s.as_bytes()[19], b'8' | b'9' | b'a' | b'b'), "{s}");
        let mut other = [0u8; 36];
        assert_ne!(uuid_v7(&mut other, 0x0192_3456_789a, 2), s.as_bytes());
    }
}
