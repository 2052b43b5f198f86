//! Request head parser, framing decision, the incremental reader fed in two pieces, and the
//! serializer on whatever parses.
#![no_main]
use coregate::http1::{self, HeadPlan, HeadReader, Header, Status};
use libfuzzer_sys::fuzz_target;
use std::hint::black_box;

fuzz_target!(|data: &[u8]| {
    let mut headers = [Header::default(); 32];
    let whole = http1::parse_request(data, &mut headers);
    if let Ok(Status::Complete(req)) = whole {
        assert!(req.head_len <= data.len());
        black_box(http1::request_framing(&req, &headers, data).ok());
        let mut plan = HeadPlan::new();
        plan.request_head(&req, &headers, None, |h| !h.kind.is_hop_by_hop());
        plan.end();
        let mut out = Vec::new();
        plan.write_to(data, &mut out);
        assert_eq!(out.len(), plan.len());
    }
    // The incremental reader accepts exactly what one whole parse accepts (with the same
    // result), and never accepts what it rejects; it may still be waiting for more bytes.
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut reader = HeadReader::new(64 * 1024);
    let mut hs = [Header::default(); 32];
    let first = reader.request(&data[..split], &mut hs);
    let last = if first == Ok(Status::Partial) { reader.request(data, &mut hs) } else { first };
    match (whole, last) {
        (Ok(Status::Complete(a)), Ok(Status::Complete(b))) => assert_eq!(a, b),
        (Ok(Status::Partial), Ok(Status::Partial)) => {}
        (Err(_), Err(_) | Ok(Status::Partial)) => {}
        (a, b) => panic!("whole parse {a:?}, incremental {b:?}"),
    }
});
