//! Owned-buffer I/O for the forwarding path: a receive buffer that keeps unconsumed bytes (a
//! pipelined request, the rest of a body) across reads, and writes of its ranges, each bounded
//! by a timeout. Buffers move into the kernel and come back (monoio's rent model); a read that
//! times out loses its buffer and its connection (see MONOIO-FACTS: bytes may be lost).

use super::sys::Vectored;
use crate::http1::HeadPlan;
use crate::tls::Stream;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use std::io;
use std::time::Duration;

/// Why an I/O step failed.
#[derive(Debug)]
pub enum IoFail {
    /// The peer closed before the expected bytes arrived.
    Eof,
    TimedOut,
    Io(io::Error),
}

/// Received bytes: `vec[start..]` is unconsumed.
pub struct RecvBuf {
    vec: Vec<u8>,
    start: usize,
}

impl RecvBuf {
    pub fn with_capacity(cap: usize) -> RecvBuf {
        RecvBuf {
            vec: Vec::with_capacity(cap),
            start: 0,
        }
    }

    pub fn from_vec(mut vec: Vec<u8>) -> RecvBuf {
        vec.clear();
        RecvBuf { vec, start: 0 }
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.vec
    }

    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.vec[self.start..]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.vec.len()
    }

    /// Marks `n` bytes of `data()` as used.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.vec.len());
        if self.start == self.vec.len() {
            self.vec.clear();
            self.start = 0;
        }
    }

    /// Moves the unconsumed bytes to the front, so that offsets of a new head start at 0.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.vec.copy_within(self.start.., 0);
            self.vec.truncate(self.vec.len() - self.start);
            self.start = 0;
        }
    }

    /// Takes the buffer out (for a vectored write that references it); `start` must be 0.
    pub fn take(&mut self) -> Vec<u8> {
        debug_assert_eq!(self.start, 0);
        std::mem::take(&mut self.vec)
    }

    pub fn put_back(&mut self, vec: Vec<u8>) {
        self.vec = vec;
    }

    /// Reads more bytes after the unconsumed ones, growing the buffer (up to `max` bytes of
    /// capacity) when it is full or when the previous read filled all the room it had: a long
    /// stream gets large reads, an idle connection keeps a small buffer. Returns the number
    /// read; `Err(Eof)` on a clean close.
    pub async fn read_from(
        &mut self,
        stream: &mut Stream,
        timeout: Duration,
        max: usize,
    ) -> Result<usize, IoFail> {
        if self.vec.len() == self.vec.capacity() {
            if self.start > 0 {
                self.compact();
            } else {
                let want = (self.vec.capacity() * 2).clamp(4096, max.max(4096));
                self.vec.reserve(want.saturating_sub(self.vec.len()).max(1));
            }
        }
        let vec = std::mem::take(&mut self.vec);
        let len = vec.len();
        let read = stream.read(vec.slice_mut(len..));
        let (res, slice) = match monoio::time::timeout(timeout, read).await {
            Ok(r) => r,
            Err(_) => return Err(IoFail::TimedOut),
        };
        self.vec = slice.into_inner();
        match res {
            Ok(0) => Err(IoFail::Eof),
            Ok(n) => {
                if self.vec.len() == self.vec.capacity() && self.vec.capacity() < max {
                    let more = self.vec.capacity().min(max - self.vec.capacity());
                    self.vec.reserve_exact(more);
                }
                Ok(n)
            }
            Err(e) => Err(IoFail::Io(e)),
        }
    }

    /// Writes `data()[range]` to `stream`.
    pub async fn write_range(
        &mut self,
        stream: &mut Stream,
        range: std::ops::Range<usize>,
        timeout: Duration,
    ) -> Result<(), IoFail> {
        let vec = std::mem::take(&mut self.vec);
        let slice = vec.slice(self.start + range.start..self.start + range.end);
        let (res, slice) = match monoio::time::timeout(timeout, stream.write_all(slice)).await {
            Ok(r) => r,
            Err(_) => return Err(IoFail::TimedOut),
        };
        self.vec = slice.into_inner();
        res.map(drop).map_err(IoFail::Io)
    }
}

/// Writes the head `plan` describes over `buf`'s bytes, then `buf[tail]`, in one vectored write
/// within `timeout`, and gives the buffers back. `buf` must be compacted (offsets start at 0).
/// On a timeout the buffers went with the cancelled write: they come back empty, and the
/// connection cannot go on.
pub async fn write_head(
    stream: &mut Stream,
    buf: &mut RecvBuf,
    plan: &mut HeadPlan,
    iovecs: &mut Vec<libc::iovec>,
    tail: std::ops::Range<usize>,
    timeout: Duration,
) -> Result<(), IoFail> {
    let v = Vectored::new(
        buf.take(),
        std::mem::take(plan),
        tail,
        std::mem::take(iovecs),
    );
    let (res, v) = match monoio::time::timeout(timeout, stream.write_vectored_all(v)).await {
        Ok(r) => r,
        Err(_) => return Err(IoFail::TimedOut),
    };
    let (input, p, iov) = v.into_parts();
    buf.put_back(input);
    *plan = p;
    *iovecs = iov;
    res.map(drop).map_err(IoFail::Io)
}

/// Writes a whole owned buffer within `timeout`.
pub async fn write_all<T: IoBuf + 'static>(
    stream: &mut Stream,
    buf: T,
    timeout: Duration,
) -> Result<T, IoFail> {
    match monoio::time::timeout(timeout, stream.write_all(buf)).await {
        Ok((Ok(_), buf)) => Ok(buf),
        Ok((Err(e), _)) => Err(IoFail::Io(e)),
        Err(_) => Err(IoFail::TimedOut),
    }
}
