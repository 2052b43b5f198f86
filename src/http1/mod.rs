//! The hand-rolled HTTP/1.1 codec: the first and last step of the forwarding path.
//!
//! In: the bytes a connection has read so far. Out: a parsed head as offsets into those bytes
//! ([`Request`] / [`Response`] plus a caller-provided array of [`Header`]s), a body
//! [`Framing`] decision, validated chunked body slices ([`ChunkedDecoder`]) and, on the way
//! out, a rewritten head as a list of slices for one vectored write ([`HeadPlan`]). Everything
//! here is a pure function over `&[u8]`: no I/O, no allocation while parsing, no panics on any
//! input. The proxy (`crate::proxy`) calls it; fuzz targets and benches call it alone.
//!
//! Strictness (RFC 9112, each one an error, never a guess): obs-fold, whitespace before the
//! colon, bare CR, NUL and other controls, invalid token bytes, missing or duplicate `Host` on
//! HTTP/1.1, ambiguous framing (`Content-Length` with `Transfer-Encoding`, differing
//! `Content-Length`s, a request whose last transfer coding is not `chunked`).
//!
//! Line endings: **only CRLF is accepted, everywhere** (request and status lines, header
//! fields, chunk-size lines, chunk data terminators, trailers). A bare LF is rejected as
//! [`Error::NewLine`] and a bare CR as [`Error::BareCr`]. RFC 9112 §2.2 lets a recipient accept a
//! lone LF; a proxy that does so while the server behind it does not (or the reverse) is how
//! request smuggling starts, so coregate takes the strict reading in every place.

#![deny(unsafe_code)]

mod chars;
mod chunked;
mod fields;
mod framing;
mod incremental;
mod request;
mod response;
mod serialize;
#[allow(unsafe_code)]
mod simd;

pub use chars::{hex_digit, is_token, is_token_str, query_pairs, trim_ows};
pub use chunked::{chunk_size_line, Chunk, ChunkedDecoder, LAST_CHUNK};
pub use fields::{connection_has, cookie, find, find_all, tokens, ConnectionOptions, HeaderKind};
pub use framing::{request_framing, response_framing, Framing};
pub use incremental::HeadReader;
pub use request::{parse_request, Method, Request, TargetForm};
pub use response::{parse_response, Response};
pub use serialize::{HeadPlan, NewTarget, Piece, PlanMark};

/// A byte range into the buffer that was parsed. `u32` keeps [`Header`] at 20 bytes; heads are
/// bounded far below 4 GiB (inputs longer than that are only ever parsed as a prefix).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    #[inline(always)]
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The bytes this span covers in `buf`, or an empty slice if `buf` is not the buffer that
    /// was parsed (never panics).
    #[inline(always)]
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One header field: name and value (without surrounding whitespace) as spans of the input.
/// The field line ends where the next field's name starts (or at the head's final CRLF).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub name: Span,
    pub value: Span,
    /// The proxy-relevant fields, classified once while parsing.
    pub kind: HeaderKind,
}

/// HTTP version of a request or response line. Only HTTP/1.0 and HTTP/1.1 are spoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// The outcome of parsing a head that may not have fully arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// The head is complete; `T` records its length in bytes (including the final CRLF).
    Complete(T),
    /// More bytes are needed. Nothing wrong has been seen so far.
    Partial,
}

impl<T> Status<T> {
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Complete(t) => Some(t),
            Status::Partial => None,
        }
    }
}

/// Why a head or body was rejected. Each variant is one rule; [`Error::status`] gives the
/// response a proxy sends for it when the peer is the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The method is empty or has a byte that is not a `tchar`.
    Method,
    /// The request-target is empty, has a byte outside visible ASCII, or its form does not
    /// suit the method (authority-form without CONNECT, `*` without OPTIONS, ...).
    Target,
    /// Not `HTTP/1.0` or `HTTP/1.1`.
    Version,
    /// A status code that is not three digits, or a bad reason phrase.
    Status,
    /// A request or status line whose parts are not separated by exactly one SP.
    Separator,
    /// A line ended by a bare LF (CRLF is required everywhere).
    NewLine,
    /// A CR not followed by LF.
    BareCr,
    /// A field name that is empty or has a byte that is not a `tchar`.
    HeaderName,
    /// Whitespace between a field name and its colon (RFC 9112 §5.1).
    WhitespaceBeforeColon,
    /// A NUL, DEL or other control byte inside a field value.
    HeaderValue,
    /// A field line starting with whitespace: obs-fold line folding (RFC 9112 §5.2).
    ObsFold,
    /// More header fields than the caller's array holds.
    TooManyHeaders,
    /// The head did not end within the size limit.
    HeadTooLarge,
    /// An HTTP/1.1 request without `Host`.
    MissingHost,
    /// More than one `Host` field, or a `Host` with several values.
    DuplicateHost,
    /// A `Host` value that is not a valid authority (`host[:port]`).
    InvalidHost,
    /// `Content-Length` that is not digits only, or overflows `u64`.
    ContentLength,
    /// Several `Content-Length` values that differ.
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`.
    ContentLengthWithTransferEncoding,
    /// `Transfer-Encoding` whose last coding is not `chunked` (in a request), `chunked` applied
    /// twice, an empty or malformed coding list, or `Transfer-Encoding` on an HTTP/1.0 message.
    TransferEncoding,
    /// A request transfer coding other than `chunked` (coregate does not decode them): 501.
    UnsupportedTransferCoding,
    /// A chunk size that is not hex, is empty, or overflows `u64`.
    ChunkSize,
    /// A malformed or oversized chunk extension.
    ChunkExtension,
    /// Chunk data not followed by exactly CRLF.
    ChunkDelimiter,
    /// The trailer section is larger than the limit.
    TrailersTooLarge,
}

impl Error {
    /// The status code a proxy answers a client with when the client's request has this error.
    pub fn status(self) -> u16 {
        match self {
            Error::TooManyHeaders | Error::HeadTooLarge => 431,
            Error::UnsupportedTransferCoding => 501,
            Error::Version => 505,
            _ => 400,
        }
    }

    /// A short, stable description (used in logs, metrics labels and error bodies).
    pub fn as_str(self) -> &'static str {
        match self {
            Error::Method => "invalid method",
            Error::Target => "invalid request-target",
            Error::Version => "unsupported HTTP version",
            Error::Status => "invalid status line",
            Error::Separator => "start line parts not separated by one space",
            Error::NewLine => "bare LF line ending",
            Error::BareCr => "bare CR",
            Error::HeaderName => "invalid header field name",
            Error::WhitespaceBeforeColon => "whitespace before colon in header field",
            Error::HeaderValue => "control character in header field value",
            Error::ObsFold => "obsolete line folding",
            Error::TooManyHeaders => "too many header fields",
            Error::HeadTooLarge => "head too large",
            Error::MissingHost => "missing Host header",
            Error::DuplicateHost => "duplicate Host header",
            Error::InvalidHost => "invalid Host header",
            Error::ContentLength => "invalid Content-Length",
            Error::ConflictingContentLength => "conflicting Content-Length values",
            Error::ContentLengthWithTransferEncoding => "Content-Length with Transfer-Encoding",
            Error::TransferEncoding => "invalid Transfer-Encoding",
            Error::UnsupportedTransferCoding => "unsupported transfer coding",
            Error::ChunkSize => "invalid chunk size",
            Error::ChunkExtension => "invalid chunk extension",
            Error::ChunkDelimiter => "missing CRLF after chunk data",
            Error::TrailersTooLarge => "trailer section too large",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

/// Internal control flow: ran out of input, or found an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Partial,
    Invalid(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Invalid(e)
    }
}

pub(crate) type Step<T> = Result<T, Stop>;

/// Converts an internal result into the public one.
pub(crate) fn finish<T>(r: Step<T>) -> Result<Status<T>, Error> {
    match r {
        Ok(t) => Ok(Status::Complete(t)),
        Err(Stop::Partial) => Ok(Status::Partial),
        Err(Stop::Invalid(e)) => Err(e),
    }
}
