//! The proxy's only `unsafe`: an owned buffer set that io_uring/epoll can write with one
//! vectored write (a head made of slices of the received buffer, the head plan's small extra
//! buffer, static strings, and body bytes that arrived with the head), and a non-blocking peek
//! that tells whether the client has closed its side.

use crate::http1::HeadPlan;
use monoio::buf::IoVecBuf;
use std::ops::Range;

/// A head plus optional body bytes, owning every buffer its iovecs point into.
pub struct Vectored {
    pub input: Vec<u8>,
    pub plan: HeadPlan,
    iovecs: Vec<libc::iovec>,
}

impl Vectored {
    /// `plan` describes the head over `input`; `tail` is a range of `input` sent after it.
    /// `iovecs` is reused storage (cleared here).
    pub fn new(
        input: Vec<u8>,
        plan: HeadPlan,
        tail: Range<usize>,
        mut iovecs: Vec<libc::iovec>,
    ) -> Self {
        iovecs.clear();
        let body = input.get(tail).unwrap_or_default();
        for s in plan.slices(&input).chain(std::iter::once(body)) {
            if !s.is_empty() {
                iovecs.push(libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                });
            }
        }
        Vectored {
            input,
            plan,
            iovecs,
        }
    }

    /// Gives the buffers back.
    pub fn into_parts(self) -> (Vec<u8>, HeadPlan, Vec<libc::iovec>) {
        (self.input, self.plan, self.iovecs)
    }
}

// SAFETY: every iovec points into `input`'s or `plan`'s heap storage or at `'static` bytes.
// Those allocations do not move when `Vectored` moves, and nothing can mutate or free them while
// the runtime owns the `Vectored` (the fields are only reachable again through `into_parts`
// after the write returns it). The iovec array itself is a `Vec` that is not touched either.
unsafe impl IoVecBuf for Vectored {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

/// What a non-blocking one-byte `recv(MSG_PEEK)` saw on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Bytes are waiting.
    Data,
    /// Nothing to read yet.
    Empty,
    /// The peer closed its sending side (FIN) or the connection failed (reset).
    Closed,
}

/// Looks at `fd` without reading from it.
pub fn peek(fd: std::os::fd::RawFd) -> Peek {
    let mut byte = 0u8;
    // SAFETY: `recv` writes at most 1 byte into `byte`, which lives for the whole call; `fd` is
    // an open socket borrowed by the caller for the call.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        1.. => Peek::Data,
        0 => Peek::Closed,
        _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
            Peek::Empty
        }
        _ => Peek::Closed,
    }
}
