//! A client stream that delivers each request head whole, within a deadline and a
//! size limit, before pingora's parser sees any of it.
//!
//! pingora reads a head into a buffer of up to 1 MiB with only a per-read timeout, so
//! a client trickling header bytes holds that memory for as long as it likes. Here the
//! head is collected in a buffer of at most `max_header_bytes` (plus one read) until
//! its end (`\r\n\r\n`, or a bare-LF blank line, as httparse accepts it). A head that
//! grows past the limit is answered with 431 and the connection closed; one that does
//! not arrive within `header_timeout` is dropped. pingora sees neither: to it, the
//! client closed before sending anything, which it handles silently.
//!
//! After a head is handed over, reads pass straight through (the body) until the
//! response has started (the first write that is not a `1xx` interim response, such
//! as `100 Continue`); the next bytes read then start the next head, whose deadline
//! runs from its first byte (the idle time between requests is pingora's keep-alive).
//! A `101 Switching Protocols` turns the connection into a tunnel for good.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::response::LocalResponse;

/// How head collection is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    pub timeout: Duration,
    pub max_bytes: usize,
}

/// Why a connection was closed before its head was handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadRefusal {
    /// The head did not arrive within the deadline.
    Timeout,
    /// The head grew past the limit (answered with 431).
    TooLarge,
}

/// Told when a head is refused (for metrics). Called at most once per connection.
pub(crate) type OnRefusal = Arc<dyn Fn(HeadRefusal) + Send + Sync>;

/// The 431 answer (problem+json: the head could not be read, so no page).
static TOO_LARGE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    LocalResponse::problem(
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "REQUEST_HEADER_TOO_LARGE",
        "Request Header Fields Too Large",
        "The request head (request line and headers) is larger than this gateway accepts.",
        serde_json::json!({}),
    )
    .to_http1_closing()
});

/// Where the end of a head stands in a byte stream: a line feed followed by an
/// optional carriage return and another line feed ends it, once the head has a byte
/// that is not part of a blank line (leading blank lines are skipped by parsers, so
/// they cannot end a head).
#[derive(Debug, Clone, Copy, Default)]
struct EndScan {
    /// 0: nothing; 1: after `\n`; 2: after `\n\r`.
    state: u8,
    /// Whether a byte other than `\r`/`\n` was seen.
    content: bool,
}

impl EndScan {
    /// Feeds `bytes`; returns the index just after the head's end, if it is in them.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == 0 && self.content {
                // Skip to the next line feed at memchr speed.
                match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(at) => i += at,
                    None => return None,
                }
            }
            let b = bytes[i];
            i += 1;
            match (self.state, b) {
                (1 | 2, b'\n') if self.content => return Some(i),
                (1, b'\r') => self.state = 2,
                (_, b'\n') => self.state = 1,
                (0, b'\r') => {}
                _ => {
                    self.state = 0;
                    self.content = true;
                }
            }
        }
        None
    }
}

/// Where the first head in `reads` (consecutive reads of one stream) ends: the offset
/// just after it in their concatenation.
pub(crate) fn find_head_end(reads: &[&[u8]]) -> Option<usize> {
    let mut scan = EndScan::default();
    let mut offset = 0;
    for read in reads {
        if let Some(end) = scan.feed(read) {
            return Some(offset + end);
        }
        offset += read.len();
    }
    None
}

#[derive(Debug)]
enum Phase {
    /// Collecting a head; `started` is `None` until its first byte (later requests).
    Head {
        started: Option<Instant>,
        scan: EndScan,
    },
    /// Handing `buf[pos..]` (a whole head, maybe followed by body bytes) to pingora.
    HandOver { pos: usize },
    /// Passing through; `response_started` once a final response is being written.
    Body { response_started: bool },
    /// Passing through for good: the connection switched protocols (`101`, e.g. a
    /// WebSocket) and carries no more HTTP/1 heads.
    Tunnel,
    /// Writing the 431 (`written` bytes so far), then end of stream.
    Refusing { written: usize },
    /// End of stream for the reader.
    Closed,
}

/// A client stream whose request heads arrive whole, in time and within the limit.
pub(crate) struct HeadGuard {
    inner: Stream,
    limits: HeadLimits,
    phase: Phase,
    buf: Vec<u8>,
    timer: Option<Pin<Box<Sleep>>>,
    on_refusal: Option<OnRefusal>,
}

/// Read size while collecting a head.
const READ_CHUNK: usize = 4096;
/// A head buffer larger than this after a request is given back.
const KEEP_CAPACITY: usize = 8192;

impl HeadGuard {
    /// Guards `inner`, a connection accepted just now.
    pub(crate) fn new(
        inner: Stream,
        limits: HeadLimits,
        on_refusal: Option<OnRefusal>,
    ) -> HeadGuard {
        HeadGuard {
            inner,
            limits,
            phase: Phase::Head {
                started: Some(Instant::now()),
                scan: EndScan::default(),
            },
            buf: Vec::new(),
            timer: None,
            on_refusal,
        }
    }

    fn refuse(&mut self, why: HeadRefusal) {
        if let Some(tell) = self.on_refusal.take() {
            tell(why);
        }
        self.buf = Vec::new();
        self.timer = None;
        self.phase = match why {
            HeadRefusal::TooLarge => Phase::Refusing { written: 0 },
            HeadRefusal::Timeout => Phase::Closed,
        };
    }

    /// Collects head bytes; `Ready(Ok(()))` once the phase changed (handover,
    /// refusal, end of stream).
    fn poll_collect(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Phase::Head { started, scan } = &mut self.phase else {
                return Poll::Ready(Ok(()));
            };
            if self.buf.len() > self.limits.max_bytes {
                self.refuse(HeadRefusal::TooLarge);
                return Poll::Ready(Ok(()));
            }
            let old_len = self.buf.len();
            if self.buf.capacity() - old_len < READ_CHUNK / 2 {
                // Doubling, never past the limit and one read: most heads fit in the
                // first chunk, and a slow client's partial head costs what it sent.
                let target = (self.buf.capacity() * 2)
                    .clamp(READ_CHUNK, self.limits.max_bytes + READ_CHUNK)
                    .max(old_len + READ_CHUNK / 2);
                self.buf.reserve_exact(target - old_len);
            }
            // Read into an uninitialized chunk on the stack (`ReadBuf` tracks what the
            // read filled) and append what came: a copy of the head's few hundred
            // bytes, no zeroing, no unsafe code.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let room = (self.buf.capacity() - old_len).clamp(1, READ_CHUNK);
            let mut read = ReadBuf::uninit(&mut chunk[..room]);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    self.buf.extend_from_slice(read.filled());
                    if n == 0 {
                        // The client closed mid-head (or between requests): pingora
                        // sees the end of the stream with nothing read.
                        self.buf.clear();
                        self.phase = Phase::Closed;
                        return Poll::Ready(Ok(()));
                    }
                    let started = *started.get_or_insert_with(Instant::now);
                    match scan.feed(&self.buf[old_len..]) {
                        Some(end) if old_len + end <= self.limits.max_bytes => {
                            self.timer = None;
                            self.phase = Phase::HandOver { pos: 0 };
                            return Poll::Ready(Ok(()));
                        }
                        Some(_) => {
                            self.refuse(HeadRefusal::TooLarge);
                            return Poll::Ready(Ok(()));
                        }
                        None if started.elapsed() >= self.limits.timeout => {
                            self.refuse(HeadRefusal::Timeout);
                            return Poll::Ready(Ok(()));
                        }
                        None => {}
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let Some(started) = *started else {
                        // Waiting for the next request: pingora's keep-alive applies.
                        return Poll::Pending;
                    };
                    let deadline = started + self.limits.timeout;
                    let timer = match &mut self.timer {
                        Some(timer) => {
                            if timer.deadline() != deadline {
                                timer.as_mut().reset(deadline);
                            }
                            timer
                        }
                        None => self
                            .timer
                            .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    ready!(timer.as_mut().poll(cx));
                    self.refuse(HeadRefusal::Timeout);
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Waits until the first request head is complete: `true`, and it will be read
    /// whole; `false` when the connection ended first (closed, too slow, or too
    /// large, in which case the 431 has been written).
    pub(crate) async fn first_head(&mut self) -> bool {
        std::future::poll_fn(|cx| loop {
            match self.phase {
                Phase::Head { .. } => {
                    if ready!(self.poll_collect(cx)).is_err() {
                        self.phase = Phase::Closed;
                    }
                }
                Phase::Refusing { .. } => {
                    let _ = ready!(self.poll_refuse(cx));
                }
                Phase::HandOver { .. } => return Poll::Ready(true),
                Phase::Body { .. } | Phase::Tunnel | Phase::Closed => return Poll::Ready(false),
            }
        })
        .await
    }

    /// Writes the 431; `Ready(Ok(()))` once it is written (or cannot be).
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Phase::Refusing { written } = &mut self.phase {
            if *written >= TOO_LARGE.len() {
                ready!(Pin::new(&mut self.inner).poll_flush(cx)).ok();
                self.phase = Phase::Closed;
                break;
            }
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &TOO_LARGE[*written..])) {
                Ok(0) | Err(_) => self.phase = Phase::Closed,
                Ok(n) => *written += n,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Notes a write: the first one after a head that is not a `1xx` starts the
    /// response; a `101` makes the connection a tunnel.
    fn note_write(&mut self, first: &[u8]) {
        if let Phase::Body {
            response_started: started @ false,
        } = &mut self.phase
        {
            if first.starts_with(b"HTTP/1.1 101") || first.starts_with(b"HTTP/1.0 101") {
                self.phase = Phase::Tunnel;
                return;
            }
            // A write holding an interim response and the final one starts it too.
            let interim = first.len() >= 10
                && (first.starts_with(b"HTTP/1.1 1") || first.starts_with(b"HTTP/1.0 1"))
                && memchr::memmem::find(first, b"\r\n\r\nHTTP/1.").is_none();
            if !first.is_empty() && !interim {
                *started = true;
            }
        }
    }
}

impl AsyncRead for HeadGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Body {
                    response_started: false,
                }
                | Phase::Tunnel => return Pin::new(&mut this.inner).poll_read(cx, out),
                Phase::Body {
                    response_started: true,
                } => {
                    this.phase = Phase::Head {
                        started: None,
                        scan: EndScan::default(),
                    };
                }
                Phase::Head { .. } => ready!(this.poll_collect(cx))?,
                Phase::HandOver { pos } => {
                    let rest = &this.buf[*pos..];
                    let n = rest.len().min(out.remaining());
                    out.put_slice(&rest[..n]);
                    *pos += n;
                    if *pos == this.buf.len() {
                        this.buf.clear();
                        if this.buf.capacity() > KEEP_CAPACITY {
                            this.buf = Vec::new();
                        }
                        this.phase = Phase::Body {
                            response_started: false,
                        };
                    }
                    return Poll::Ready(Ok(()));
                }
                Phase::Refusing { .. } => ready!(this.poll_refuse(cx))?,
                Phase::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.note_write(buf);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.note_write(first);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl std::fmt::Debug for HeadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadGuard")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadGuard {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadGuard {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadGuard {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadGuard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeadGuard {
    /// Peeks only before anything was read (where pingora looks for an HTTP/2 preface).
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.buf.is_empty() && matches!(self.phase, Phase::Head { .. }) {
            self.inner.try_peek(buf).await
        } else {
            Ok(false)
        }
    }
}

/// The client address of a stream, if it is an IP connection.
pub(crate) fn peer_ip(stream: &Stream) -> Option<std::net::IpAddr> {
    let digest = stream.get_socket_digest()?;
    match digest.peer_addr()? {
        SocketAddr::Inet(addr) => Some(addr.ip()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
