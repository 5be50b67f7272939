//! Limits that keep hostile clients from taking the listener off the air: an idle bound on
//! every connection's I/O, and a cap on connections from one client address.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A connection's I/O with deadlines: it fails with `TimedOut` when the first byte does not
/// arrive within `first`, and (with an `idle` bound) once nothing has been read or written
/// for `idle` after that. Below TLS it bounds every connection's quiet time (HTTP/2 and idle
/// keep-alive included); above TLS it bounds the wait for a request's first byte after the
/// handshake, before hyper has a connection to time.
pub(crate) struct IdleIo<T> {
    /// The connection.
    inner: T,
    /// The bound after the first byte, if any.
    idle: Option<Duration>,
    /// True until the first byte has been read.
    awaiting_first: bool,
    /// When the connection fails unless a byte moves.
    deadline: Pin<Box<Sleep>>,
    /// The instant `deadline` is set to (kept to reset the timer rarely).
    deadline_at: Instant,
}

/// How far the idle deadline may lag behind the last I/O before the timer is reset (at most a
/// quarter of the bound): resetting on every read and write would cost a timer-wheel update
/// per packet on the hot path.
const DEADLINE_SLACK: Duration = Duration::from_millis(500);

impl<T> IdleIo<T> {
    /// Wraps `inner`: the first byte must arrive within `first`; after it, bytes must move at
    /// least every `idle` (no bound when `None`).
    pub(crate) fn new(inner: T, first: Duration, idle: Option<Duration>) -> Self {
        let deadline_at = Instant::now() + first;
        Self {
            inner,
            idle,
            awaiting_first: true,
            deadline: Box::pin(tokio::time::sleep_until(deadline_at)),
            deadline_at,
        }
    }

    /// Pushes the deadline back after some I/O (`read` when it was a read).
    fn touch(&mut self, read: bool) {
        if read {
            self.awaiting_first = false;
        }
        if let (false, Some(idle)) = (self.awaiting_first, self.idle) {
            // The bound is `idle` from the last I/O, less at most the slack.
            let next = Instant::now() + idle;
            if next > self.deadline_at + DEADLINE_SLACK.min(idle / 4) {
                self.deadline_at = next;
                self.deadline.as_mut().reset(next);
            }
        }
    }

    /// The outcome of a write on the inner connection: bytes written push the deadline back,
    /// and a write that waits is bounded by it too.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch(false);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.pending_or_timeout(cx),
        }
    }

    /// `Pending`, or the timeout once the deadline has passed.
    fn pending_or_timeout<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if !self.awaiting_first && self.idle.is_none() {
            return Poll::Pending;
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection quiet for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.touch(true);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.pending_or_timeout(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.written(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.pending_or_timeout(cx),
            done => done,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.written(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Connections open per client address, capped.
#[derive(Debug)]
pub(crate) struct PerAddress {
    /// Open connections by address.
    open: Mutex<HashMap<IpAddr, usize>>,
    /// The cap (0: none).
    limit: usize,
}

/// One connection's place in its address's count, given back when dropped.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    /// The counts.
    owner: Arc<PerAddress>,
    /// The address.
    ip: IpAddr,
}

impl PerAddress {
    /// Counts with a cap of `limit` connections per address (0: no cap).
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            limit,
        })
    }

    /// A slot for a new connection from `ip`, or `None` when that address is at its cap.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if self.limit != 0 && *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_more_than_its_share() {
        let per = PerAddress::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = per.take(a).unwrap();
        let _s2 = per.take(a).unwrap();
        assert!(per.take(a).is_none());
        assert!(per.take(b).is_some());
        drop(s1);
        assert!(per.take(a).is_some());
        let unlimited = PerAddress::new(0);
        let slots: Vec<_> = (0..100).map(|_| unlimited.take(a).unwrap()).collect();
        assert_eq!(slots.len(), 100);
    }

    #[tokio::test]
    async fn a_quiet_connection_times_out_and_a_busy_one_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let mut io = IdleIo::new(
            server,
            Duration::from_millis(300),
            Some(Duration::from_millis(300)),
        );
        let mut client = client;
        // Bytes every 100 ms keep it open past the bound.
        let writer = tokio::spawn(async move {
            for _ in 0..6 {
                client.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            client
        });
        let mut got = 0;
        let mut byte = [0u8; 1];
        while got < 6 {
            io.read_exact(&mut byte).await.unwrap();
            got += 1;
        }
        let _client = writer.await.unwrap();
        // Then silence: the read fails once the bound has passed.
        let e = io.read(&mut byte).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn the_first_byte_must_come_in_time_and_then_there_is_no_bound() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (_quiet_client, quiet) = tokio::io::duplex(64);
        let mut io = IdleIo::new(quiet, Duration::from_millis(200), None);
        let mut byte = [0u8; 1];
        let e = io.read(&mut byte).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut io = IdleIo::new(server, Duration::from_millis(200), None);
        client.write_all(b"x").await.unwrap();
        io.read_exact(&mut byte).await.unwrap();
        // Quiet for longer than the first bound: still open.
        let quiet = tokio::time::timeout(Duration::from_millis(500), io.read(&mut byte)).await;
        assert!(quiet.is_err(), "the read should still be waiting");
    }
}
