//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that a load
//! balancer in front of coregate sends first on each connection to say who the client is.
//! Parsed strictly on listeners that enable it (`proxy_protocol = true`): a connection whose
//! first bytes are not a complete, valid header is closed. The address it gives replaces the
//! socket's peer for `X-Forwarded-For`, the access log and rate-limit keys.

use crate::config::ProxyVersion;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// The longest v2 header accepted (16 fixed bytes, addresses and TLVs), and so the most `parse`
/// may wait for: larger ones are refused rather than buffered.
pub const V2_MAX: usize = 16 + 2048;

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// The client's address, when the header gives one (`None`: `UNKNOWN`, `LOCAL`, or a
    /// family other than TCP over IPv4/IPv6: the connection's own peer stands).
    pub source: Option<SocketAddr>,
    /// The address the client connected to, as the header gives it (with `source`).
    pub destination: Option<SocketAddr>,
    /// The header's length: the HTTP request starts after it.
    pub len: usize,
}

/// Parses a header at the start of `buf`: `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Parsed>, &'static str> {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] == V2_SIG[..n] {
        return if n < V2_SIG.len() { Ok(None) } else { v2(buf) };
    }
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Err("not a PROXY protocol header");
    }
    v1(buf)
}

fn v1(buf: &[u8]) -> Result<Option<Parsed>, &'static str> {
    // The line ends at its first LF, which must follow a CR; nothing before it is a control
    // byte, so a prefix that is refused is refused whole.
    let window = &buf[..buf.len().min(V1_MAX)];
    let (line, ended) = match window.iter().position(|&b| b == b'\n') {
        Some(i) => (
            window[..i]
                .strip_suffix(b"\r")
                .ok_or("PROXY v1 line not ended by CRLF")?,
            true,
        ),
        None => (window.strip_suffix(b"\r").unwrap_or(window), false),
    };
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err("PROXY v1 line holds a control byte");
    }
    if !ended {
        return if buf.len() >= V1_MAX {
            Err("PROXY v1 line longer than 107 bytes")
        } else {
            Ok(None)
        };
    }
    let end = line.len();
    let line = std::str::from_utf8(&line[6..]).map_err(|_| "PROXY v1 line not ASCII")?;
    let len = end + 2;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Some(Parsed {
            source: None,
            destination: None,
            len,
        }));
    }
    let mut f = line.split(' ');
    let (Some(proto), Some(src), Some(dst), Some(sport), Some(dport), None) =
        (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return Err("PROXY v1 line does not have 5 fields");
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            IpAddr::V4(src.parse().map_err(|_| "PROXY v1 bad IPv4 address")?),
            IpAddr::V4(dst.parse().map_err(|_| "PROXY v1 bad IPv4 address")?),
        ),
        "TCP6" => (
            IpAddr::V6(src.parse().map_err(|_| "PROXY v1 bad IPv6 address")?),
            IpAddr::V6(dst.parse().map_err(|_| "PROXY v1 bad IPv6 address")?),
        ),
        _ => return Err("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let (sport, dport) = (port(sport)?, port(dport)?);
    Ok(Some(Parsed {
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
        len,
    }))
}

/// A decimal port, 0–65535, without sign or leading zero.
fn port(s: &str) -> Result<u16, &'static str> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !ok {
        return Err("PROXY v1 bad port");
    }
    s.parse().map_err(|_| "PROXY v1 bad port")
}

fn v2(buf: &[u8]) -> Result<Option<Parsed>, &'static str> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (ver, cmd) = (buf[12] >> 4, buf[12] & 0x0f);
    if ver != 2 {
        return Err("PROXY v2 version is not 2");
    }
    if cmd > 1 {
        return Err("PROXY v2 command is not LOCAL or PROXY");
    }
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = 16 + body;
    if len > V2_MAX {
        return Err("PROXY v2 header longer than 2064 bytes");
    }
    if buf.len() < len {
        return Ok(None);
    }
    let a = &buf[16..len];
    // LOCAL (a health check by the balancer itself): the connection's endpoints stand.
    if cmd == 0 {
        return Ok(Some(Parsed {
            source: None,
            destination: None,
            len,
        }));
    }
    let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
    let ends = match buf[13] {
        // TCP over IPv4: src, dst, sport, dport.
        0x11 => {
            if a.len() < 12 {
                return Err("PROXY v2 IPv4 addresses truncated");
            }
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]));
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        // TCP over IPv6.
        0x21 => {
            if a.len() < 36 {
                return Err("PROXY v2 IPv6 addresses truncated");
            }
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        // UNSPEC, UDP, UNIX: accepted, the connection's own peer stands (as the spec asks).
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => None,
        _ => return Err("PROXY v2 unknown address family or transport"),
    };
    Ok(Some(Parsed {
        source: ends.map(|e| e.0),
        destination: ends.map(|e| e.1),
        len,
    }))
}

/// The header of a connection that speaks for no client (a health check by coregate itself):
/// `UNKNOWN` in v1, `LOCAL` in v2.
pub fn local_header(version: ProxyVersion) -> &'static [u8] {
    match version {
        ProxyVersion::V1 => b"PROXY UNKNOWN\r\n",
        ProxyVersion::V2 => b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00",
    }
}

/// Appends the header that tells a backend the client `src` connected to `dst`: v1 text or v2
/// binary (PROXY command, TCP). When one address is IPv4 and the other IPv6, both are sent as
/// IPv6 (the IPv4 one mapped), as the specification asks.
pub fn write(version: ProxyVersion, src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (src, dst) = (canon(src), canon(dst));
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let both_v4 = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some((s, d)),
        _ => None,
    };
    match version {
        ProxyVersion::V1 => {
            use std::io::Write;
            let _ = match both_v4 {
                Some((s, d)) => write!(out, "PROXY TCP4 {s} {d} {} {}\r\n", src.port(), dst.port()),
                None => write!(
                    out,
                    "PROXY TCP6 {} {} {} {}\r\n",
                    v6(src.ip()),
                    v6(dst.ip()),
                    src.port(),
                    dst.port()
                ),
            };
        }
        ProxyVersion::V2 => {
            out.extend_from_slice(V2_SIG);
            out.push(0x21); // version 2, PROXY
            match both_v4 {
                Some((s, d)) => {
                    out.push(0x11);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                None => {
                    out.push(0x21);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&v6(src.ip()).octets());
                    out.extend_from_slice(&v6(dst.ip()).octets());
                }
            }
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(cmd: u8, fam: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let p = parse(h).unwrap().unwrap();
        assert_eq!(p.source, Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(p.destination, Some("198.51.100.1:443".parse().unwrap()));
        assert_eq!(&h[p.len..p.len + 3], b"GET");
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        let p = parse(h).unwrap().unwrap();
        assert_eq!(p.source, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(p.len, h.len());
        let h = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(parse(h).unwrap().unwrap().source, None);
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().len, 15);
    }

    #[test]
    fn v1_waits_for_the_line_then_refuses_what_is_wrong() {
        let full = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
        for n in 0..full.len() {
            assert_eq!(parse(&full[..n]), Ok(None), "{n}");
        }
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 x\r\n",
            b"PROXY TCP4 192.0.2.07 198.51.100.1 56324 443\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.1 56324 443\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 0443 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +443 443\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 1 443\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 443\n",
            b"proxy TCP4 192.0.2.7 198.51.100.1 1 443\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert!(parse(&long).is_err());
    }

    #[test]
    fn v2_proxy_local_families_and_tlvs() {
        let v4 = [192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb];
        let h = [
            v2_header(1, 0x11, &v4, &[0x04, 0, 1, 0xff]),
            b"GET".to_vec(),
        ]
        .concat();
        let p = parse(&h).unwrap().unwrap();
        assert_eq!(p.source, Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(p.destination, Some("198.51.100.1:443".parse().unwrap()));
        assert_eq!(&h[p.len..], b"GET");
        let mut v6 = Vec::new();
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80, 1, 187]);
        let p = parse(&v2_header(1, 0x21, &v6, &[])).unwrap().unwrap();
        assert_eq!(p.source, Some("[2001:db8::1]:80".parse().unwrap()));
        assert_eq!(p.destination, Some("[2001:db8::2]:443".parse().unwrap()));
        // LOCAL: the connection's own peer stands, whatever the addresses say.
        let p = parse(&v2_header(0, 0x11, &v4, &[])).unwrap().unwrap();
        assert_eq!((p.source, p.len), (None, 28));
        assert_eq!(
            parse(&v2_header(1, 0x00, &[], &[]))
                .unwrap()
                .unwrap()
                .source,
            None
        );
        // Every prefix waits.
        let h = v2_header(1, 0x11, &v4, &[]);
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Ok(None), "{n}");
        }
    }

    #[test]
    fn v2_refuses_what_is_wrong() {
        let v4 = [192, 0, 2, 7, 198, 51, 100, 1, 0, 1, 0, 2];
        let mut bad_version = v2_header(1, 0x11, &v4, &[]);
        bad_version[12] = 0x11;
        assert!(parse(&bad_version).is_err());
        assert!(parse(&v2_header(2, 0x11, &v4, &[])).is_err());
        assert!(parse(&v2_header(1, 0x11, &v4[..8], &[])).is_err());
        assert!(parse(&v2_header(1, 0x21, &v4, &[])).is_err());
        assert!(parse(&v2_header(1, 0x41, &v4, &[])).is_err());
        let mut huge = v2_header(1, 0x11, &v4, &[]);
        huge[14..16].copy_from_slice(&(3000u16).to_be_bytes());
        assert!(parse(&huge).is_err());
        // A signature that goes wrong part way.
        assert!(parse(b"\r\n\r\n\0\r\nQUIX\n").is_err());
    }

    #[test]
    fn what_is_written_parses_back() {
        let cases = [
            ("192.0.2.7:56324", "198.51.100.1:443", "192.0.2.7:56324"),
            ("[2001:db8::1]:1", "[2001:db8::2]:80", "[2001:db8::1]:1"),
            // Mixed families: both as IPv6, the IPv4 one mapped.
            ("192.0.2.7:5", "[2001:db8::2]:80", "[::ffff:192.0.2.7]:5"),
            // A mapped IPv4 peer of a dual-stack listener is plain IPv4.
            ("[::ffff:192.0.2.7]:5", "192.0.2.1:80", "192.0.2.7:5"),
        ];
        for v in [ProxyVersion::V1, ProxyVersion::V2] {
            for (src, dst, want) in cases {
                let mut out = b"x".to_vec();
                write(v, src.parse().unwrap(), dst.parse().unwrap(), &mut out);
                let p = parse(&out[1..]).unwrap().unwrap();
                assert_eq!(p.source, Some(want.parse().unwrap()), "{v:?} {src}");
                assert_eq!(p.len, out.len() - 1);
            }
        }
        let mut out = Vec::new();
        write(
            ProxyVersion::V1,
            "192.0.2.7:56324".parse().unwrap(),
            "198.51.100.1:443".parse().unwrap(),
            &mut out,
        );
        assert_eq!(out, b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n");
    }

    #[test]
    fn local_headers_name_no_client() {
        for v in [ProxyVersion::V1, ProxyVersion::V2] {
            let h = local_header(v);
            assert_eq!(
                parse(h),
                Ok(Some(Parsed {
                    source: None,
                    destination: None,
                    len: h.len()
                }))
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_claims_more_than_it_has(b in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(Some(p)) = parse(&b) {
                proptest::prop_assert!(p.len <= b.len());
            }
        }
    }
}
