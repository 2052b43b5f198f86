//! The chunked decoder fed in pieces whose sizes come from the input: every consumed count must
//! stay in bounds and data ranges must lie inside the input.
#![no_main]
use coregate::http1::{Chunk, ChunkedDecoder};
use libfuzzer_sys::fuzz_target;
use std::hint::black_box;

fuzz_target!(|data: &[u8]| {
    let Some((&step, body)) = data.split_first() else { return };
    let step = step as usize % 17 + 1;
    let mut d = ChunkedDecoder::new(64, 256);
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    for _ in 0..100_000 {
        let (n, chunk) = match d.decode(&pending) {
            Ok(r) => r,
            Err(e) => return black_box(drop(e)),
        };
        assert!(n <= pending.len());
        if let Chunk::Data(r) = &chunk {
            assert!(r.start <= r.end && r.end == n);
            black_box(&pending[r.clone()]);
        }
        pending.drain(..n);
        match chunk {
            Chunk::Done => return,
            Chunk::Data(_) => {}
            Chunk::NeedMore if fed >= body.len() => return,
            Chunk::NeedMore => {
                let more = step.min(body.len() - fed);
                pending.extend_from_slice(&body[fed..fed + more]);
                fed += more;
            }
        }
    }
    panic!("decoder made no progress");
});
