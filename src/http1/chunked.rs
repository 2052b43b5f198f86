//! The chunked transfer coding (RFC 9112 §7.1): an incremental decoder that validates framing
//! byte by byte and reports body data as ranges of its input (so a proxy forwards without
//! copying), and the encoder pieces for writing chunks.
//!
//! The decoder never buffers: chunk-size lines and extensions are a byte-level state machine.
//! Trailer fields are parsed a complete line at a time with the same rules as header fields; a
//! trailer line that has not fully arrived is left unconsumed for the next call.

use super::chars::{is_token, QDTEXT};
use super::fields::{parse_line, Line};
use super::{Error, Stop};
use std::ops::Range;

/// The last chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes the chunk-size line (`{hex}\r\n`) for a chunk of `len` bytes into `out`.
/// The chunk data follows, then `\r\n`.
pub fn chunk_size_line(len: u64, out: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (16 - len.leading_zeros() as usize / 4).max(1);
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        *slot = HEX[((len >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    &out[..digits + 2]
}

/// What one [`ChunkedDecoder::decode`] call found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body data at these positions of the input.
    Data(Range<usize>),
    /// The input was used up (or ends inside a trailer line): call again with more bytes,
    /// starting from the first unconsumed one.
    NeedMore,
    /// The last chunk and the trailer section are complete; bytes after belong to the next
    /// message.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size,
    /// Whitespace after the size: only a `;` may follow.
    SizeWs,
    ExtPreName,
    ExtName,
    ExtPostName,
    ExtPreValue,
    ExtToken,
    ExtQuoted,
    ExtQuotedEscape,
    ExtAfterQuoted,
    ExtPostValueWs,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailers,
    Done,
}

/// Incremental chunked-body decoder. Feed it the bytes after the head; it returns how many it
/// consumed and what it found. Malformed framing is an error, never a guess.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    size_digits: u32,
    remaining: u64,
    ext_len: usize,
    trailer_len: usize,
    max_ext: usize,
    max_trailers: usize,
    body_len: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new(4096, 16 * 1024)
    }
}

/// At most this many digits, leading zeros included, in a chunk size.
const MAX_SIZE_DIGITS: u32 = 32;

impl ChunkedDecoder {
    /// `max_ext`: bytes of chunk extensions allowed on one chunk-size line;
    /// `max_trailers`: bytes of the whole trailer section.
    pub fn new(max_ext: usize, max_trailers: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            size_digits: 0,
            remaining: 0,
            ext_len: 0,
            trailer_len: 0,
            max_ext,
            max_trailers,
            body_len: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes (chunk data, without framing) reported so far.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Decodes from `input`. Returns `(consumed, found)`: every byte in `input[..consumed]` has
    /// been validated; with [`Chunk::Data`] the data range ends at `consumed`.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Chunk), Error> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match hex(b) {
                    Some(d) => {
                        self.size_digits += 1;
                        if self.size > u64::MAX >> 4 || self.size_digits > MAX_SIZE_DIGITS {
                            return Err(Error::ChunkSize);
                        }
                        self.size = self.size << 4 | d;
                    }
                    None if self.size_digits == 0 => return Err(Error::ChunkSize),
                    None => match b {
                        b'\r' => self.state = State::SizeLf,
                        b';' => self.ext(State::ExtPreName)?,
                        b' ' | b'\t' => self.ext(State::SizeWs)?,
                        b'\n' => return Err(Error::NewLine),
                        _ => return Err(Error::ChunkSize),
                    },
                },
                State::SizeWs => match b {
                    b' ' | b'\t' => self.ext(State::SizeWs)?,
                    b';' => self.ext(State::ExtPreName)?,
                    _ => return Err(Error::ChunkExtension),
                },
                State::ExtPreName => match b {
                    b' ' | b'\t' => self.ext(State::ExtPreName)?,
                    _ if is_token(b) => self.ext(State::ExtName)?,
                    _ => return Err(Error::ChunkExtension),
                },
                State::ExtName => match b {
                    b'\r' => self.state = State::SizeLf,
                    b' ' | b'\t' => self.ext(State::ExtPostName)?,
                    b'=' => self.ext(State::ExtPreValue)?,
                    b';' => self.ext(State::ExtPreName)?,
                    _ if is_token(b) => self.ext(State::ExtName)?,
                    _ => return Err(self.line_error(b)),
                },
                State::ExtPostName => match b {
                    b' ' | b'\t' => self.ext(State::ExtPostName)?,
                    b'=' => self.ext(State::ExtPreValue)?,
                    b';' => self.ext(State::ExtPreName)?,
                    _ => return Err(Error::ChunkExtension),
                },
                State::ExtPreValue => match b {
                    b' ' | b'\t' => self.ext(State::ExtPreValue)?,
                    b'"' => self.ext(State::ExtQuoted)?,
                    _ if is_token(b) => self.ext(State::ExtToken)?,
                    _ => return Err(Error::ChunkExtension),
                },
                State::ExtToken => match b {
                    b'\r' => self.state = State::SizeLf,
                    b' ' | b'\t' => self.ext(State::ExtPostValueWs)?,
                    b';' => self.ext(State::ExtPreName)?,
                    _ if is_token(b) => self.ext(State::ExtToken)?,
                    _ => return Err(self.line_error(b)),
                },
                State::ExtQuoted => match b {
                    b'"' => self.ext(State::ExtAfterQuoted)?,
                    b'\\' => self.ext(State::ExtQuotedEscape)?,
                    _ if QDTEXT[b as usize] => self.ext(State::ExtQuoted)?,
                    _ => return Err(self.line_error(b)),
                },
                State::ExtQuotedEscape => match b {
                    b'\t' | b' '..=0x7e | 0x80..=0xff => self.ext(State::ExtQuoted)?,
                    _ => return Err(self.line_error(b)),
                },
                State::ExtAfterQuoted => match b {
                    b'\r' => self.state = State::SizeLf,
                    b' ' | b'\t' => self.ext(State::ExtPostValueWs)?,
                    b';' => self.ext(State::ExtPreName)?,
                    _ => return Err(self.line_error(b)),
                },
                State::ExtPostValueWs => match b {
                    b' ' | b'\t' => self.ext(State::ExtPostValueWs)?,
                    b';' => self.ext(State::ExtPreName)?,
                    _ => return Err(Error::ChunkExtension),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(Error::BareCr);
                    }
                    self.ext_len = 0;
                    self.size_digits = 0;
                    if self.size == 0 {
                        self.state = State::Trailers;
                    } else {
                        self.remaining = self.size;
                        self.size = 0;
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let n = (input.len() - i).min(self.remaining.min(usize::MAX as u64) as usize);
                    self.remaining -= n as u64;
                    self.body_len += n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok((i + n, Chunk::Data(i..i + n)));
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(Error::ChunkDelimiter);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(Error::ChunkDelimiter);
                    }
                    self.state = State::Size;
                }
                State::Trailers => match parse_line(input, i) {
                    Ok(Line::End(end)) => {
                        self.state = State::Done;
                        return Ok((end, Chunk::Done));
                    }
                    Ok(Line::Field(_, next)) => {
                        self.trailer_len += next - i;
                        if self.trailer_len > self.max_trailers {
                            return Err(Error::TrailersTooLarge);
                        }
                        i = next;
                        continue;
                    }
                    Err(Stop::Partial) => {
                        if self.trailer_len + (input.len() - i) > self.max_trailers {
                            return Err(Error::TrailersTooLarge);
                        }
                        return Ok((i, Chunk::NeedMore));
                    }
                    Err(Stop::Invalid(e)) => return Err(e),
                },
                State::Done => return Ok((i, Chunk::Done)),
            }
            i += 1;
        }
        if self.state == State::Done {
            return Ok((i, Chunk::Done));
        }
        Ok((i, Chunk::NeedMore))
    }

    /// Moves to an extension state, counting the byte against the extension limit.
    #[inline]
    fn ext(&mut self, next: State) -> Result<(), Error> {
        self.ext_len += 1;
        if self.ext_len > self.max_ext {
            return Err(Error::ChunkExtension);
        }
        self.state = next;
        Ok(())
    }

    fn line_error(&self, b: u8) -> Error {
        if b == b'\n' {
            Error::NewLine
        } else {
            Error::ChunkExtension
        }
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some((b - b'0') as u64),
        b'a'..=b'f' => Some((b - b'a' + 10) as u64),
        b'A'..=b'F' => Some((b - b'A' + 10) as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes, the way a socket delivers it. Returns the
    /// body and the number of bytes of `input` the message used.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), Error> {
        let mut d = ChunkedDecoder::new(64, 64);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut used = 0;
        let mut fed = 0;
        loop {
            let (n, chunk) = d.decode(&pending)?;
            if let Chunk::Data(r) = &chunk {
                body.extend_from_slice(&pending[r.clone()]);
            }
            pending.drain(..n);
            used += n;
            match chunk {
                Chunk::Done => return Ok((body, used)),
                Chunk::Data(_) => continue,
                Chunk::NeedMore if fed == input.len() => panic!("input ended inside the body"),
                Chunk::NeedMore => {
                    let more = step.min(input.len() - fed);
                    pending.extend_from_slice(&input[fed..fed + more]);
                    fed += more;
                }
            }
        }
    }

    fn decode(input: &[u8]) -> Result<(Vec<u8>, usize), Error> {
        let whole = decode_in_steps(input, input.len().max(1));
        for step in [1, 2, 3, 7] {
            assert_eq!(decode_in_steps(input, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn bodies_across_every_split() {
        let input =
            b"5\r\nhello\r\nA;name=val;q=\"a\\\"b\" ; x\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, used) = decode(input).unwrap();
        assert_eq!(body, b"hello0123456789");
        assert_eq!(used, input.len() - 4);
        assert_eq!(decode(b"0\r\n\r\n").unwrap(), (vec![], 5));
        assert_eq!(decode(b"00000001\r\nz\r\n0\r\n\r\n").unwrap().0, b"z");
        assert_eq!(
            decode(b"f\r\n0123456789abcde\r\n0;last\r\n\r\n")
                .unwrap()
                .0
                .len(),
            15
        );
    }

    #[test]
    fn malformed_framing() {
        use Error::*;
        assert_eq!(decode(b"\r\n").unwrap_err(), ChunkSize);
        assert_eq!(decode(b"x\r\n").unwrap_err(), ChunkSize);
        assert_eq!(decode(b"-1\r\n").unwrap_err(), ChunkSize);
        assert_eq!(decode(b"0x5\r\n").unwrap_err(), ChunkSize);
        assert_eq!(decode(b"1 0\r\n").unwrap_err(), ChunkExtension);
        assert_eq!(
            decode(b"5 \r\nhello\r\n0\r\n\r\n").unwrap_err(),
            ChunkExtension
        );
        assert_eq!(decode(b"10000000000000000\r\n").unwrap_err(), ChunkSize);
        let zeros = [b'0'; 33];
        assert_eq!(
            decode(&[&zeros[..], b"\r\n\r\n"].concat()).unwrap_err(),
            ChunkSize
        );
        assert_eq!(decode(b"5\nhello\r\n0\r\n\r\n").unwrap_err(), NewLine);
        assert_eq!(decode(b"5\rhello\r\n0\r\n\r\n").unwrap_err(), BareCr);
        assert_eq!(
            decode(b"5\r\nhelloX\r\n0\r\n\r\n").unwrap_err(),
            ChunkDelimiter
        );
        assert_eq!(
            decode(b"5\r\nhello\n0\r\n\r\n").unwrap_err(),
            ChunkDelimiter
        );
        assert_eq!(
            decode(b"5\r\nhello\rX0\r\n\r\n").unwrap_err(),
            ChunkDelimiter
        );
        assert_eq!(decode(b"5;\r\nhello\r\n").unwrap_err(), ChunkExtension);
        assert_eq!(decode(b"5;a=\r\nhello\r\n").unwrap_err(), ChunkExtension);
        assert_eq!(decode(b"5;a=\"x\r\n").unwrap_err(), ChunkExtension);
        assert_eq!(decode(b"5;a\x00\r\n").unwrap_err(), ChunkExtension);
        assert_eq!(decode(b"5;a\n").unwrap_err(), NewLine);
        let long = [&b"1;"[..], &[b'a'; 70], b"\r\nx\r\n0\r\n\r\n"].concat();
        assert_eq!(decode(&long).unwrap_err(), ChunkExtension);
        assert_eq!(
            decode(b"0\r\nA : b\r\n\r\n").unwrap_err(),
            WhitespaceBeforeColon
        );
        assert_eq!(decode(b"0\r\nA: b\r\n c\r\n\r\n").unwrap_err(), ObsFold);
        assert_eq!(decode(b"0\r\nA: b\n\r\n").unwrap_err(), NewLine);
        assert_eq!(decode(b"0\r\n\n").unwrap_err(), NewLine);
        let big = [&b"0\r\nA: "[..], &[b'v'; 80], b"\r\n\r\n"].concat();
        assert_eq!(decode(&big).unwrap_err(), TrailersTooLarge);
    }

    #[test]
    fn large_sizes_are_counted_not_buffered() {
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.decode(b"fffffffffffffff").unwrap(), (15, Chunk::NeedMore));
        assert_eq!(d.decode(b"f\r\n").unwrap(), (3, Chunk::NeedMore));
        assert_eq!(d.decode(b"abc").unwrap(), (3, Chunk::Data(0..3)));
        assert_eq!(d.body_len(), 3);
        assert!(!d.is_done());
    }

    #[test]
    fn encoder_round_trips() {
        let mut out = [0u8; 18];
        assert_eq!(chunk_size_line(0, &mut out), b"0\r\n");
        assert_eq!(chunk_size_line(255, &mut out), b"ff\r\n");
        assert_eq!(chunk_size_line(4096, &mut out), b"1000\r\n");
        assert_eq!(chunk_size_line(u64::MAX, &mut out), b"ffffffffffffffff\r\n");
        let mut wire = Vec::new();
        for part in [&b"abc"[..], &[7u8; 300], b"z"] {
            wire.extend_from_slice(chunk_size_line(part.len() as u64, &mut out));
            wire.extend_from_slice(part);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(LAST_CHUNK);
        let (body, used) = decode(&wire).unwrap();
        assert_eq!((body.len(), used), (304, wire.len()));
    }
}
