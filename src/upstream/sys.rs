//! The one system call `upstream` makes itself: a non-blocking peek that tells whether an idle
//! pooled connection is still open.

use std::os::fd::AsRawFd;

/// False when the peer has closed (or reset) the connection or sent unexpected bytes: an idle
/// upstream connection must have nothing to read (over TLS, a close_notify alert is bytes too). One non-blocking `recv(MSG_PEEK)`.
pub fn peer_still_open(stream: &impl AsRawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `recv` writes at most 1 byte into `byte`, which lives for the whole call; the fd
    // is owned by `stream`, which is borrowed for the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}
