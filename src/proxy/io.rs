//! Owned-buffer I/O for the forwarding path: a receive buffer that keeps unconsumed bytes (a
//! pipelined request, the rest of a body) across reads, and writes of its ranges, each bounded
//! by the deadline of the connection's slot ([`Timer`]). Buffers move into the kernel and come
//! back (monoio's rent model); a read that times out loses its buffer and its connection (see
//! MONOIO-FACTS: bytes may be lost).

use super::deadline::Timer;
use super::sys::Vectored;
use crate::http1::HeadPlan;
use crate::tls::Stream;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use std::io;
use std::time::{Duration, Instant};

/// Why an I/O step failed.
#[derive(Debug)]
pub enum IoFail {
    /// The peer closed before the expected bytes arrived.
    Eof,
    TimedOut,
    Io(io::Error),
}

/// How long one I/O step may take: `after` from its start, on `timer`'s slot.
#[derive(Clone, Copy)]
pub struct Limit<'a> {
    pub timer: Timer<'a>,
    pub after: Duration,
}

impl<'a> Limit<'a> {
    pub fn new(timer: Timer<'a>, after: Duration) -> Limit<'a> {
        Limit { timer, after }
    }

    /// Runs `fut` within the limit (`None`: it passed).
    pub fn run<F: std::future::Future>(self, fut: F) -> super::deadline::Within<'a, F> {
        self.timer.within(self.after, fut)
    }
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
        limit: Limit<'_>,
        max: usize,
    ) -> Result<usize, IoFail> {
        self.read_until(stream, limit.timer, Instant::now() + limit.after, max)
            .await
    }

    /// [`Self::read_from`] until `deadline`.
    pub async fn read_until(
        &mut self,
        stream: &mut Stream,
        t: Timer<'_>,
        deadline: Instant,
        max: usize,
    ) -> Result<usize, IoFail> {
        let vec = self.lend(max);
        let len = vec.len();
        let read = stream.read(vec.slice_mut(len..));
        let Some((res, slice)) = t.until(deadline, read).await else {
            return Err(IoFail::TimedOut);
        };
        self.settle(slice.into_inner(), res, max)
    }

    /// The buffer, with room for a read after its unconsumed bytes (see [`Self::read_from`]),
    /// lent to a read that hands it back to [`Self::settle`].
    pub fn lend(&mut self, max: usize) -> Vec<u8> {
        if self.vec.len() == self.vec.capacity() {
            if self.start > 0 {
                self.compact();
            } else {
                let want = (self.vec.capacity() * 2).clamp(4096, max.max(4096));
                self.vec.reserve(want.saturating_sub(self.vec.len()).max(1));
            }
        }
        std::mem::take(&mut self.vec)
    }

    /// Takes the buffer back from a read that returned `res`.
    pub fn settle(
        &mut self,
        vec: Vec<u8>,
        res: io::Result<usize>,
        max: usize,
    ) -> Result<usize, IoFail> {
        self.vec = vec;
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

    /// Forgets every byte (also after a timed-out step took the buffer with it, when `start`
    /// may point past the empty vector).
    pub fn clear(&mut self) {
        self.vec.clear();
        self.start = 0;
    }

    /// Gives back a buffer that grew past `keep` bytes (after a large head or body), so that a
    /// connection waiting for its next request holds no more than that.
    pub fn shrink(&mut self, keep: usize) {
        if self.vec.capacity() > keep && self.is_empty() {
            self.vec = Vec::with_capacity(keep);
            self.start = 0;
        }
    }

    /// Writes `data()[range]` to `stream`.
    pub async fn write_range(
        &mut self,
        stream: &mut Stream,
        range: std::ops::Range<usize>,
        limit: Limit<'_>,
    ) -> Result<(), IoFail> {
        let vec = std::mem::take(&mut self.vec);
        let slice = vec.slice(self.start + range.start..self.start + range.end);
        let Some((res, slice)) = limit.run(stream.write_all(slice)).await else {
            return Err(IoFail::TimedOut);
        };
        self.vec = slice.into_inner();
        res.map(drop).map_err(IoFail::Io)
    }
}

/// Writes the head `plan` describes over `buf`'s bytes, then `buf[tail]`, in one vectored write
/// within `limit`, and gives the buffers back. `buf` must be compacted (offsets start at 0).
/// On a timeout the buffers went with the cancelled write: they come back empty, and the
/// connection cannot go on.
pub async fn write_head(
    stream: &mut Stream,
    buf: &mut RecvBuf,
    plan: &mut HeadPlan,
    iovecs: &mut Vec<libc::iovec>,
    tail: std::ops::Range<usize>,
    limit: Limit<'_>,
) -> Result<(), IoFail> {
    let v = Vectored::new(
        buf.take(),
        std::mem::take(plan),
        tail,
        std::mem::take(iovecs),
    );
    let Some((res, v)) = limit.run(stream.write_vectored_all(v)).await else {
        return Err(IoFail::TimedOut);
    };
    let (input, p, iov) = v.into_parts();
    buf.put_back(input);
    *plan = p;
    *iovecs = iov;
    res.map(drop).map_err(IoFail::Io)
}

/// Writes a whole owned buffer within `limit`.
pub async fn write_all<T: IoBuf + 'static>(
    stream: &mut Stream,
    buf: T,
    limit: Limit<'_>,
) -> Result<T, IoFail> {
    match limit.run(stream.write_all(buf)).await {
        Some((Ok(_), buf)) => Ok(buf),
        Some((Err(e), _)) => Err(IoFail::Io(e)),
        None => Err(IoFail::TimedOut),
    }
}
