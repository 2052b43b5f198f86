#![no_main]
use coregate::http1::{self, Header, Method, Status};
use libfuzzer_sys::fuzz_target;
use std::hint::black_box;

fuzz_target!(|data: &[u8]| {
    let mut headers = [Header::default(); 32];
    if let Ok(Status::Complete(resp)) = black_box(http1::parse_response(data, &mut headers)) {
        assert!(resp.head_len <= data.len());
        black_box(http1::response_framing(&resp, &headers, data, Method::Get).ok());
    }
});
