//! Re-parsing a head that arrives in pieces, in linear time.
//!
//! The first attempt parses whatever has arrived (so a malformed start is rejected at once).
//! After a `Partial`, later attempts search only the *new* bytes for the CRLFCRLF that ends a
//! head (with `memchr`'s vectorised search), and run the full parse again when it is there or
//! when the buffer has doubled since the last full parse. A head that trickles in one byte at a
//! time costs one scan of each byte plus full parses of geometrically growing prefixes (at most
//! twice its length in all), not a parse per byte; an error in trickled bytes is still found
//! before the buffer doubles. The reader also enforces the head size limit.

use super::{parse_request, parse_response, Error, Header, Request, Response, Status};
use memchr::memmem;

/// Per-connection state for reading one head at a time. Call [`HeadReader::reset`] before the
/// next message.
#[derive(Clone, Copy, Debug)]
pub struct HeadReader {
    /// Bytes already searched for the end of the head; 0 before the first attempt.
    searched: usize,
    /// Length of the prefix the last full parse saw.
    parsed: usize,
    max_head: usize,
}

impl HeadReader {
    pub fn new(max_head: usize) -> HeadReader {
        HeadReader {
            searched: 0,
            parsed: 0,
            max_head,
        }
    }

    pub fn reset(&mut self) {
        self.searched = 0;
        self.parsed = 0;
    }

    pub fn request(
        &mut self,
        buf: &[u8],
        headers: &mut [Header],
    ) -> Result<Status<Request>, Error> {
        self.attempt(buf, |b| parse_request(b, headers))
    }

    pub fn response(
        &mut self,
        buf: &[u8],
        headers: &mut [Header],
    ) -> Result<Status<Response>, Error> {
        self.attempt(buf, |b| parse_response(b, headers))
    }

    fn attempt<T>(
        &mut self,
        buf: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<Status<T>, Error>,
    ) -> Result<Status<T>, Error> {
        let window = &buf[..buf.len().min(self.max_head)];
        if self.searched > 0 && window.len() < 2 * self.parsed {
            let from = self.searched.saturating_sub(3);
            if from >= window.len() || memmem::find(&window[from..], b"\r\n\r\n").is_none() {
                return self.partial(buf);
            }
        }
        self.parsed = window.len();
        match parse(window)? {
            Status::Complete(t) => Ok(Status::Complete(t)),
            Status::Partial => self.partial(buf),
        }
    }

    fn partial<T>(&mut self, buf: &[u8]) -> Result<Status<T>, Error> {
        if buf.len() >= self.max_head {
            return Err(Error::HeadTooLarge);
        }
        self.searched = buf.len().max(1);
        Ok(Status::Partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trickled_head_is_parsed_once_complete() {
        let input = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\n";
        let mut reader = HeadReader::new(1024);
        let mut hs = [Header::default(); 4];
        for n in 1..input.len() {
            assert_eq!(
                reader.request(&input[..n], &mut hs),
                Ok(Status::Partial),
                "{n}"
            );
        }
        let r = reader.request(input, &mut hs).unwrap().complete().unwrap();
        assert_eq!(r.head_len, input.len());
    }

    #[test]
    fn an_early_error_is_reported_at_once() {
        let mut reader = HeadReader::new(1024);
        let mut hs = [Header::default(); 4];
        assert_eq!(
            reader.request(b"GET /x HTTP/1.1\r\nHost : a", &mut hs),
            Err(Error::WhitespaceBeforeColon)
        );
    }

    #[test]
    fn an_error_in_a_trickled_part_is_found_by_the_final_parse() {
        let input = b"GET /x HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n";
        let mut reader = HeadReader::new(1024);
        let mut hs = [Header::default(); 4];
        assert_eq!(reader.request(&input[..20], &mut hs), Ok(Status::Partial));
        assert_eq!(reader.request(&input[..30], &mut hs), Ok(Status::Partial));
        assert_eq!(reader.request(input, &mut hs), Err(Error::HeaderValue));
    }

    #[test]
    fn garbage_trickling_in_is_rejected_before_the_buffer_doubles() {
        let mut reader = HeadReader::new(1024);
        let mut hs = [Header::default(); 4];
        let input = b"GET /x HTTP/1.1\r\nHost: a\r\nX: \x01 and more bytes after it";
        let mut verdict = Ok(Status::Partial);
        for n in 1..=input.len() {
            verdict = reader.request(&input[..n], &mut hs);
            if verdict.is_err() {
                assert!(n < 2 * 30, "found only at {n}");
                break;
            }
        }
        assert_eq!(verdict, Err(Error::HeaderValue));
        let mut reader = HeadReader::new(1024);
        assert_eq!(reader.request(b"", &mut hs), Ok(Status::Partial));
        assert_eq!(reader.request(b"\n", &mut hs), Err(Error::NewLine));
    }

    #[test]
    fn size_limit() {
        let mut reader = HeadReader::new(32);
        let mut hs = [Header::default(); 4];
        let long = b"GET /0123456789012345678901234567890123456789 HTTP/1.1\r\n";
        assert_eq!(reader.request(&long[..20], &mut hs), Ok(Status::Partial));
        assert_eq!(reader.request(long, &mut hs), Err(Error::HeadTooLarge));
        let mut reader = HeadReader::new(64);
        let head = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
        assert!(reader.response(head, &mut hs).unwrap().complete().is_some());
        reader.reset();
        assert_eq!(reader.response(&head[..10], &mut hs), Ok(Status::Partial));
    }
}
