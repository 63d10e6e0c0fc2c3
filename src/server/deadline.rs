//! A connection's timeouts, enforced on its socket: whatever hyper waits for (a request head,
//! body bytes, the client reading the response) fails with `TimedOut` once the deadline for
//! the connection's state passes, and hyper then closes the connection.
//!
//! hyper's own `header_read_timeout` also runs while a kept-alive connection sits idle (it
//! starts whenever hyper waits for a head), so it cannot give a short header timeout beside a
//! longer idle one; and poem exposes neither. Three states, three deadlines:
//! - a head has begun (or the connection is new): `header_timeout` after its first byte, however
//!   slowly the rest trickles in;
//! - a request is being handled: `body_timeout` after the last byte moved either way;
//! - idle between requests (or writing a response out): `idle_timeout` after the last byte moved.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub body: Duration,
}

/// Shared between the socket wrapper and the service: whether a request is being handled,
/// and how many heads have been received (each one ends a header wait).
#[derive(Default)]
pub(crate) struct Busy {
    busy: AtomicBool,
    heads: AtomicU64,
}

impl Busy {
    /// Marks a request as being handled until the guard drops (HTTP/1: one at a time).
    pub(super) fn begin(self: &Arc<Self>) -> BusyGuard {
        self.heads.fetch_add(1, Ordering::AcqRel);
        self.busy.store(true, Ordering::Release);
        BusyGuard(self.clone())
    }
}

pub(crate) struct BusyGuard(Arc<Busy>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

pub(crate) struct Deadlined<T> {
    inner: T,
    busy: Arc<Busy>,
    timeouts: Timeouts,
    last_progress: Instant,
    /// When the head now arriving began; `None` while idle or busy.
    head_started: Option<Instant>,
    heads_seen: u64,
    sleep: Pin<Box<Sleep>>,
    armed_for: Instant,
}

impl<T> Deadlined<T> {
    pub(super) fn new(inner: T, busy: Arc<Busy>, timeouts: Timeouts) -> Self {
        let now = Instant::now();
        let first = now + timeouts.header;
        Self {
            inner,
            busy,
            timeouts,
            last_progress: now,
            // A new connection owes its first head: silent sockets are closed as slow heads.
            head_started: Some(now),
            heads_seen: 0,
            sleep: Box::pin(tokio::time::sleep_until(first)),
            armed_for: first,
        }
    }

    /// Notes heads the service has received since last looked: each ends a header wait.
    fn sync(&mut self) -> bool {
        let heads = self.busy.heads.load(Ordering::Acquire);
        if heads != self.heads_seen {
            self.heads_seen = heads;
            self.head_started = None;
        }
        self.busy.busy.load(Ordering::Acquire)
    }

    fn progress(&mut self, read: bool) {
        let now = Instant::now();
        self.last_progress = now;
        let busy = self.sync();
        if read && !busy && self.head_started.is_none() {
            self.head_started = Some(now);
        }
    }

    /// Called when the socket is not ready: arms the timer for the current state and reports
    /// whether it has already run out.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let busy = self.sync();
        let (deadline, which) = if busy {
            (self.last_progress + self.timeouts.body, "body")
        } else if let Some(t) = self.head_started {
            (t + self.timeouts.header, "header")
        } else {
            (self.last_progress + self.timeouts.idle, "idle")
        };
        if deadline != self.armed_for {
            self.sleep.as_mut().reset(deadline);
            self.armed_for = deadline;
        }
        ready!(self.sleep.as_mut().poll(cx));
        tracing::debug!("closing a connection: its {which} timeout passed");
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{which} timeout"),
        ))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadlined<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.progress(true);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlined<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                self.progress(false);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                self.progress(false);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
