//! The only module of `http1` with `unsafe`: 16-byte scans over request-targets and field
//! values. On x86_64 it uses SSE2 (part of the x86_64 baseline, so no runtime detection is
//! needed); elsewhere a table-driven scalar loop. Both return the index of the first byte that
//! is *not* in the class, or `bytes.len()`.

use super::chars::{FIELD_VALUE, TARGET};

/// First index at or after `i` whose byte is not allowed in a field value
/// (a control byte other than HTAB, or DEL). Stops on CR, which ends the line.
#[inline]
pub fn scan_value(bytes: &[u8], mut i: usize) -> usize {
    loop {
        i = vector_value(bytes, i);
        if i + 16 > bytes.len() {
            break; // fewer than 16 bytes left: finish below
        }
        // The vector test stopped at a flagged byte. HTAB is allowed (flagged with the
        // controls): step over it; anything else ends the value.
        if bytes[i] != b'\t' {
            return i;
        }
        i += 1;
    }
    scalar(bytes, swar_value(bytes, i), &FIELD_VALUE)
}

/// Eight bytes at a time in a `u64` for the short tails the vector loop leaves: stops at the
/// first word holding a control byte or DEL (the scalar loop then finds which byte).
#[inline(always)]
fn swar_value(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    while let Some(word) = bytes.get(i..).and_then(|b| b.first_chunk::<8>()) {
        let x = u64::from_ne_bytes(*word);
        // A byte < 0x20: (x - 0x20..) & !x has its high bit set (classic "has less than").
        let ctl = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let y = x ^ (ONES * 0x7f);
        let del = y.wrapping_sub(ONES) & !y & HIGH;
        if ctl | del != 0 {
            break;
        }
        i += 8;
    }
    i
}

/// First index at or after `i` whose byte is not visible ASCII (0x21..=0x7e).
#[inline]
pub fn scan_target(bytes: &[u8], i: usize) -> usize {
    let i = vector_target(bytes, i);
    scalar(bytes, i, &TARGET)
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn vector_value(bytes: &[u8], i: usize) -> usize {
    // SAFETY: SSE2 is part of the x86_64 baseline, so the target feature is always present.
    unsafe { simd_value(bytes, i) }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn vector_target(bytes: &[u8], i: usize) -> usize {
    // SAFETY: as in `vector_value`.
    unsafe { simd_target(bytes, i) }
}

#[inline(always)]
fn scalar(bytes: &[u8], mut i: usize, class: &[bool; 256]) -> usize {
    while let Some(&b) = bytes.get(i) {
        if !class[b as usize] {
            return i;
        }
        i += 1;
    }
    i
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn load(bytes: &[u8], i: usize) -> core::arch::x86_64::__m128i {
    assert!(i + 16 <= bytes.len());
    // SAFETY: the assert above keeps the 16-byte read inside `bytes`; `_mm_loadu_si128` has no
    // alignment requirement, and SSE2 is always available on x86_64.
    unsafe { core::arch::x86_64::_mm_loadu_si128(bytes.as_ptr().add(i).cast()) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn simd_value(bytes: &[u8], mut i: usize) -> usize {
    use core::arch::x86_64::*;
    let ctl_max = _mm_set1_epi8(0x1f);
    let del = _mm_set1_epi8(0x7f);
    while i + 16 <= bytes.len() {
        let v = load(bytes, i);
        // v <= 0x1f (unsigned) exactly when min(v, 0x1f) == v.
        let ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, ctl_max), v);
        let bad = _mm_or_si128(ctl, _mm_cmpeq_epi8(v, del));
        let mask = _mm_movemask_epi8(bad) as u32;
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    i
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn simd_target(bytes: &[u8], mut i: usize) -> usize {
    use core::arch::x86_64::*;
    let lo = _mm_set1_epi8(0x21);
    let span = _mm_set1_epi8(0x5d); // 0x7e - 0x21
    while i + 16 <= bytes.len() {
        let v = _mm_sub_epi8(load(bytes, i), lo);
        // v - 0x21 <= 0x5d (unsigned) exactly for 0x21..=0x7e.
        let good = _mm_cmpeq_epi8(_mm_min_epu8(v, span), v);
        let mask = !(_mm_movemask_epi8(good) as u32) & 0xffff;
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    i
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn vector_value(_: &[u8], i: usize) -> usize {
    i
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn vector_target(_: &[u8], i: usize) -> usize {
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(bytes: &[u8], i: usize, class: &[bool; 256]) -> usize {
        bytes[i..]
            .iter()
            .position(|&b| !class[b as usize])
            .map_or(bytes.len(), |p| p + i)
    }

    #[test]
    fn matches_scalar_on_every_byte_at_every_offset() {
        for bad in 0..=255u8 {
            for pos in 0..40 {
                let mut v = vec![b'a'; 40];
                v[pos] = bad;
                for start in [0, 1, 7, 16, 17] {
                    if start > pos {
                        continue;
                    }
                    assert_eq!(scan_value(&v, start), reference(&v, start, &FIELD_VALUE));
                    assert_eq!(scan_target(&v, start), reference(&v, start, &TARGET));
                }
            }
        }
        assert_eq!(scan_value(b"", 0), 0);
        assert_eq!(scan_target(&[b'x'; 33], 0), 33);
    }
}
