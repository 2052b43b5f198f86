//! A TLS connection over a monoio `TcpStream`, driven by rustls, with owned buffers (monoio's
//! rent model), and [`Stream`]: a plain or TLS connection behind one type for the forwarding
//! path.
//!
//! Why not monoio-rustls's stream: it hides the rustls session once the handshake is done (no
//! SNI, no client certificate for mTLS), allocates two 16 KiB buffers per connection, panics when
//! reused after a dropped read, and makes one TLS record per slice of a vectored write. Here the
//! receive buffer is 4 KiB to start and grows with what arrives; a vectored write is gathered
//! into one plaintext buffer, so a response head and its body go out in as few records as
//! rustls makes for one write; after a read that was dropped (a timeout) the stream answers
//! every call with an error instead of panicking.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::{ClientConnection, ConnectionCommon, ServerConnection, SideData};
use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};

/// First size of the encrypted receive buffer; it grows to hold a whole TLS record.
const RECV_START: usize = 4 * 1024;
const RECV_MAX: usize = 32 * 1024;

/// A rustls connection (server or client side) over TCP.
pub struct TlsStream<C> {
    tcp: TcpStream,
    pub(crate) conn: C,
    /// Encrypted bytes received: `rbuf[rpos..]` not yet given to rustls. Capacity 0 after a
    /// dropped read: the stream is unusable.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Encrypted bytes to send (reused).
    wbuf: Vec<u8>,
    /// Plaintext gathered from a vectored write (reused).
    gather: Vec<u8>,
    /// The peer closed the TCP connection.
    eof: bool,
    /// A close without close_notify is an error (an upstream: a close-delimited response cut
    /// short by a forged FIN must not look complete), not an end.
    strict_eof: bool,
}

/// How long a close_notify may take to go out before the TCP connection is closed anyway (a
/// peer that reads nothing must not hold the connection).
const CLOSE_NOTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn unusable() -> io::Error {
    io::Error::other("TLS connection unusable after a cancelled read or write")
}

impl<C, SD> TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    pub fn new(tcp: TcpStream, conn: C) -> Self {
        TlsStream {
            tcp,
            conn,
            rbuf: Vec::with_capacity(RECV_START),
            rpos: 0,
            wbuf: Vec::with_capacity(RECV_START),
            gather: Vec::new(),
            eof: false,
            strict_eof: false,
        }
    }

    /// See `strict_eof`.
    pub fn strict_eof(mut self: Box<Self>) -> Box<Self> {
        self.strict_eof = true;
        self
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Received bytes rustls has not handed out yet (a read returns at once).
    pub fn has_buffered(&mut self) -> bool {
        self.rpos < self.rbuf.len()
            || self
                .conn
                .process_new_packets()
                .is_ok_and(|s| s.plaintext_bytes_to_read() > 0)
    }

    /// Bytes already read from the socket (after a PROXY protocol header) that open the TLS
    /// stream.
    pub fn prefill(&mut self, early: &[u8]) {
        self.rbuf.extend_from_slice(early);
    }

    /// Sends what rustls has queued (handshake messages, records, alerts).
    async fn send_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.wbuf.capacity() == 0 {
                return Err(unusable());
            }
            self.wbuf.clear();
            self.conn.write_tls(&mut self.wbuf)?;
            let (res, buf) = self.tcp.write_all(std::mem::take(&mut self.wbuf)).await;
            self.wbuf = buf;
            res?;
        }
        Ok(())
    }

    /// Gives rustls more encrypted bytes (reading from the socket when none are buffered) and
    /// processes them; an alert for a protocol error is sent before the error is returned.
    /// `Ok(false)`: the peer closed the TCP connection.
    async fn receive(&mut self) -> io::Result<bool> {
        if self.rpos == self.rbuf.len() {
            if self.eof {
                return Ok(false);
            }
            if self.rbuf.capacity() == 0 {
                return Err(unusable());
            }
            self.rbuf.clear();
            self.rpos = 0;
            let (res, buf) = self.tcp.read(std::mem::take(&mut self.rbuf)).await;
            self.rbuf = buf;
            if res? == 0 {
                self.eof = true;
                // rustls learns of the close (a close without close_notify is then an
                // unexpected EOF to its reader).
                let _ = self.conn.read_tls(&mut io::empty());
                let _ = self.conn.process_new_packets();
                return Ok(false);
            }
            if self.rbuf.len() == self.rbuf.capacity() && self.rbuf.capacity() < RECV_MAX {
                self.rbuf.reserve_exact(self.rbuf.capacity());
            }
        }
        let mut pending = &self.rbuf[self.rpos..];
        let n = self.conn.read_tls(&mut pending)?;
        self.rpos += n;
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.send_pending().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(true)
    }

    /// Completes the handshake (the caller bounds it in time).
    pub async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            if self.conn.wants_write() {
                self.send_pending().await?;
            } else if !self.receive().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the handshake",
                ));
            }
        }
        // Session tickets (TLS 1.3) and the last flight.
        self.send_pending().await
    }

    async fn read_plain<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: `write_ptr` points at `bytes_total` writable bytes owned by `buf`, which this
        // function holds until it returns; bytes written are marked with `set_init`.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), buf.bytes_total()) };
        loop {
            match self.conn.reader().read(dst) {
                Ok(n) => {
                    // SAFETY: rustls wrote `n` bytes at the start of `dst`.
                    unsafe { buf.set_init(n) };
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: from a client, whose requests carry
                // their own length, an end like any other.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !self.strict_eof => {
                    return (Ok(0), buf)
                }
                Err(e) => return (Err(e), buf),
            }
            if self.eof {
                // Nothing more will come, and rustls holds nothing more to read.
                return (Ok(0), buf);
            }
            if let Err(e) = self.receive().await {
                return (Err(e), buf);
            }
        }
    }

    async fn write_plain(&mut self, src: &[u8]) -> io::Result<usize> {
        if src.is_empty() {
            return Ok(0);
        }
        let n = self.conn.writer().write(src)?;
        self.send_pending().await?;
        Ok(n)
    }
}

impl<C, SD> AsyncReadRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.read_plain(buf).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // The first non-empty slice is filled (a short read, as readv may return).
        // SAFETY: `buf` owns what its iovecs name and is held until this returns.
        let Some(raw) = (unsafe { RawBuf::new_from_iovec_mut(&mut buf) }) else {
            return (Ok(0), buf);
        };
        let (res, _) = self.read_plain(raw).await;
        if let Ok(n) = res {
            // SAFETY: `n` bytes of the first slice were written.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }
}

impl<C, SD> AsyncWriteRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `read_ptr` points at `bytes_init` initialised bytes owned by `buf`.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let res = self.write_plain(src).await;
        (res, buf)
    }

    /// Gathers the slices into one plaintext buffer, so that they go out in as few records
    /// as one write makes.
    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let mut gather = std::mem::take(&mut self.gather);
        gather.clear();
        // SAFETY: the iovec array has `read_iovec_len` entries, each naming initialised bytes
        // owned by `buf`, valid while it is held.
        unsafe {
            let iov = std::slice::from_raw_parts(buf.read_iovec_ptr(), buf.read_iovec_len());
            for v in iov {
                gather.extend_from_slice(std::slice::from_raw_parts(
                    v.iov_base.cast::<u8>(),
                    v.iov_len,
                ));
            }
        }
        let res = self.write_plain(&gather).await;
        gather.clear();
        self.gather = gather;
        (res, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.send_pending().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        let _ = monoio::time::timeout(CLOSE_NOTIFY_TIMEOUT, self.send_pending()).await;
        self.tcp.shutdown().await
    }
}

/// A connection of the forwarding path: plain TCP, or TLS as the server (a client of a TLS
/// listener) or as the client (a TLS upstream). One predictable branch per I/O call.
pub enum Stream {
    Plain(TcpStream),
    Server(Box<TlsStream<ServerConnection>>),
    Client(Box<TlsStream<ClientConnection>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Server(s) => s.tcp(),
            Stream::Client(s) => s.tcp(),
        }
    }

    /// Bytes received and not yet read (TLS only: decrypted or still encrypted in hand), which a
    /// read returns without waiting for the socket.
    pub fn has_buffered(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Server(s) => s.has_buffered(),
            Stream::Client(s) => s.has_buffered(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl AsyncReadRent for Stream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Server(s) => s.read(buf).await,
            Stream::Client(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.readv(buf).await,
            Stream::Server(s) => s.readv(buf).await,
            Stream::Client(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.write(buf).await,
            Stream::Server(s) => s.write(buf).await,
            Stream::Client(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.writev(buf).await,
            Stream::Server(s) => s.writev(buf).await,
            Stream::Client(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush().await,
            Stream::Server(s) => s.flush().await,
            Stream::Client(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Server(s) => s.shutdown().await,
            Stream::Client(s) => s.shutdown().await,
        }
    }
}
