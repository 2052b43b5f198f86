//! The only module of `http1` with `unsafe`: 16-byte scans over request-targets, field names,
//! field values and `Host` values. On x86_64 it uses SSE2 (part of the x86_64 baseline, so no
//! runtime detection is needed); elsewhere a table-driven scalar loop. Every scan returns the
//! index of the first byte at or after `i` that is *not* in its class, or `bytes.len()`.
//!
//! A scan that has fewer than 16 bytes left does not fall back to a byte loop when the buffer
//! holds 16 bytes in all: it loads the last 16 bytes of the buffer (overlapping bytes already
//! checked) and shifts the already-checked lanes out of the mask. Heads are almost always
//! longer than 16 bytes, so the byte loop runs only on tiny inputs.

#[cfg(test)]
use super::chars::FIELD_VALUE;
use super::chars::{NAME, NO_CONTROL, TARGET, WORD};

/// First index at or after `i` whose byte is not allowed in a field value
/// (a control byte other than HTAB, or DEL). Stops on CR, which ends the line.
#[inline]
pub fn scan_value(bytes: &[u8], mut i: usize) -> usize {
    loop {
        i = scan_controls(bytes, i);
        // The vector test flags HTAB with the other controls, but it is allowed: step over.
        match bytes.get(i) {
            Some(b'\t') => i += 1,
            _ => return i,
        }
    }
}

/// First index at or after `i` whose byte is a control byte (HTAB included) or DEL.
#[inline]
pub fn scan_controls(bytes: &[u8], i: usize) -> usize {
    scan::<Controls>(bytes, i)
}

/// First index at or after `i` whose byte is not visible ASCII (0x21..=0x7e).
#[inline]
pub fn scan_target(bytes: &[u8], i: usize) -> usize {
    scan::<Target>(bytes, i)
}

/// First index at or after `i` whose byte is not an ASCII letter, digit, `-`, `.` or `_`:
/// the bytes of nearly every field name and host name. All of them are `tchar`s and
/// reg-name bytes, so a name or host made of them needs no further check.
#[inline]
pub fn scan_word(bytes: &[u8], i: usize) -> usize {
    scan::<Word>(bytes, i)
}

/// First index at or after `i` whose byte is not an ASCII letter or `-`.
#[inline]
pub fn scan_name(bytes: &[u8], i: usize) -> usize {
    scan::<Name>(bytes, i)
}

/// A byte class with a vector test and a table for the scalar fallback.
trait Class {
    const TABLE: &'static [bool; 256];
    /// Bit `k` set when byte `k` of the 16 is outside the class (HTAB included for values).
    #[cfg(target_arch = "x86_64")]
    fn outside(v: core::arch::x86_64::__m128i) -> u32;
}

struct Controls;
struct Target;
struct Word;
struct Name;

#[inline(always)]
fn scan<C: Class>(bytes: &[u8], i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= 16 {
        return vector::<C>(bytes, i);
    }
    scalar(bytes, i, C::TABLE)
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

/// Requires `bytes.len() >= 16`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn vector<C: Class>(bytes: &[u8], mut i: usize) -> usize {
    while i + 16 <= bytes.len() {
        let mask = C::outside(load(bytes, i));
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    if i >= bytes.len() {
        return i;
    }
    // The last 16 bytes of the buffer; lanes before `i` were checked already.
    let base = bytes.len() - 16;
    let mask = C::outside(load(bytes, base)) >> (i - base);
    if mask != 0 {
        i + mask.trailing_zeros() as usize
    } else {
        bytes.len()
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn load(bytes: &[u8], i: usize) -> core::arch::x86_64::__m128i {
    assert!(i + 16 <= bytes.len());
    // SAFETY: the assert above keeps the 16-byte read inside `bytes`; `_mm_loadu_si128` has no
    // alignment requirement, and SSE2 is always available on x86_64.
    unsafe { core::arch::x86_64::_mm_loadu_si128(bytes.as_ptr().add(i).cast()) }
}

/// Lanes whose byte lies in `lo..=lo + span` (unsigned), as all-ones.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn in_range(v: core::arch::x86_64::__m128i, lo: u8, span: u8) -> core::arch::x86_64::__m128i {
    use core::arch::x86_64::*;
    // SAFETY: SSE2 only (x86_64 baseline); register operations, no memory access.
    unsafe {
        let d = _mm_sub_epi8(v, _mm_set1_epi8(lo as i8));
        // d <= span (unsigned) exactly when min(d, span) == d.
        _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(span as i8)), d)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes(v: core::arch::x86_64::__m128i) -> u32 {
    // SAFETY: SSE2 only (x86_64 baseline); register operation.
    unsafe { core::arch::x86_64::_mm_movemask_epi8(v) as u32 }
}

impl Class for Controls {
    const TABLE: &'static [bool; 256] = &NO_CONTROL;
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn outside(v: core::arch::x86_64::__m128i) -> u32 {
        lanes(in_range(v, 0, 0x1f)) | equal(v, 0x7f)
    }
}

impl Class for Target {
    const TABLE: &'static [bool; 256] = &TARGET;
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn outside(v: core::arch::x86_64::__m128i) -> u32 {
        !lanes(in_range(v, 0x21, 0x7e - 0x21)) & 0xffff
    }
}

/// Lanes holding an ASCII letter, either case.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn letters(v: core::arch::x86_64::__m128i) -> u32 {
    use core::arch::x86_64::*;
    // SAFETY: SSE2 only (x86_64 baseline); register operation. OR 0x20 maps A-Z onto a-z, and
    // nothing else onto a-z.
    let folded = unsafe { _mm_or_si128(v, _mm_set1_epi8(0x20)) };
    lanes(in_range(folded, b'a', 25))
}

/// Lanes equal to `b`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn equal(v: core::arch::x86_64::__m128i, b: u8) -> u32 {
    // SAFETY: SSE2 only (x86_64 baseline); register operations.
    lanes(unsafe {
        core::arch::x86_64::_mm_cmpeq_epi8(v, core::arch::x86_64::_mm_set1_epi8(b as i8))
    })
}

impl Class for Word {
    const TABLE: &'static [bool; 256] = &WORD;
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn outside(v: core::arch::x86_64::__m128i) -> u32 {
        let good = letters(v)
            | lanes(in_range(v, b'0', 9))
            | lanes(in_range(v, b'-', 1)) // `-` and `.`
            | equal(v, b'_');
        !good & 0xffff
    }
}

impl Class for Name {
    const TABLE: &'static [bool; 256] = &NAME;
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn outside(v: core::arch::x86_64::__m128i) -> u32 {
        !(letters(v) | equal(v, b'-')) & 0xffff
    }
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
        for len in [0, 1, 5, 15, 16, 17, 31, 33, 40] {
            for bad in 0..=255u8 {
                for pos in 0..len {
                    let mut v = vec![b'a'; len];
                    v[pos] = bad;
                    for start in [0, 1, 7, 15, 16, 17, 20, 32] {
                        if start > pos {
                            continue;
                        }
                        assert_eq!(scan_value(&v, start), reference(&v, start, &FIELD_VALUE));
                        assert_eq!(scan_controls(&v, start), reference(&v, start, &NO_CONTROL));
                        assert_eq!(scan_target(&v, start), reference(&v, start, &TARGET));
                        assert_eq!(scan_word(&v, start), reference(&v, start, &WORD));
                        assert_eq!(scan_name(&v, start), reference(&v, start, &NAME));
                    }
                }
                // Scans that start at or past the end.
                let v = vec![b'a'; len];
                for start in [len, len.saturating_sub(1)] {
                    assert_eq!(scan_value(&v, start), len);
                    assert_eq!(scan_word(&v, start), len);
                }
            }
        }
        assert_eq!(scan_target(&[b'x'; 33], 0), 33);
    }
}
