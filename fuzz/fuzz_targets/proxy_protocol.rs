//! The PROXY protocol header parser on arbitrary bytes: it never panics; a complete header
//! never claims more bytes than it was given; and a header found in a prefix is found the same
//! in the whole (bytes after it, the first request, change nothing), and a prefix refused is
//! refused whole: reading more never changes an answer already given.
#![no_main]
use coregate::proxy::proxy_protocol::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Ok(Some(p)) = whole {
        assert!(p.len <= data.len());
        assert_eq!(parse(&data[..p.len]), whole);
    }
    // Every prefix waits, or refuses what the whole refuses (the reason may differ), or finds
    // the whole's header.
    for n in [data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
        match parse(&data[..n]) {
            Ok(None) => {}
            Err(_) => assert!(whole.is_err(), "prefix of {n} bytes refused, whole {whole:?}"),
            prefix => assert_eq!(prefix, whole, "prefix of {n} bytes"),
        }
    }
});
