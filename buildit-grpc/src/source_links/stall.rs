//! A connection's socket that gives up on a write that can make no progress for too long: a downloader that stops
//! reading (a zero TCP window, a node cut off) then frees its connection rather than hold it as long as TCP would.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Why a write was given up: nothing could be written for `limit`.
#[derive(Debug, thiserror::Error)]
#[error("the downloader took nothing for {}s", limit.as_secs_f64())]
pub(crate) struct Stalled {
    /// How long writes waited.
    pub(crate) limit: Duration,
}

/// `inner`, whose writes fail with [`Stalled`] (as an [`io::ErrorKind::TimedOut`] error) once a write has been
/// waiting `limit` for the peer to take a single byte. The clock is per wait, not per transfer: a slow
/// downloader that keeps taking bytes is never cut off by it. Reads are passed through.
pub(crate) struct StallGuard<T> {
    inner: T,
    limit: Duration,
    /// Whether a write is waiting, and `timer` set to when it gives up.
    waiting: bool,
    /// Kept between waits (reset for each), so that a connection allocates it once.
    timer: Pin<Box<Sleep>>,
}

impl<T> StallGuard<T> {
    pub(crate) fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            waiting: false,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// What a write that returned `poll` means once the clock is looked at: progress disarms it, a new wait arms
    /// it, a wait past the limit is an error. The timer is polled while waiting, so that the task wakes when
    /// the limit passes even if the socket never becomes writable.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.waiting = false;
            return poll;
        }
        if !self.waiting {
            self.waiting = true;
            let deadline = Instant::now() + self.limit;
            self.timer.as_mut().reset(deadline);
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            Stalled { limit: self.limit },
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// Whether `error` (a connection's, through its causes) is a write given up by a [`StallGuard`].
pub(crate) fn is_stalled(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .is_some_and(|inner| inner.is::<Stalled>())
        {
            return true;
        }
        cause = error.source();
    }
    false
}

#[cfg(test)]
#[expect(
    clippy::expect_used,
    reason = "a test fails loudly when what it sets up is not there"
)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const LIMIT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_write_nobody_takes_fails_after_the_limit() {
        // A pipe that holds 1 KiB, and a reader that never reads.
        let (writer, _reader) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(writer, LIMIT);
        let started = std::time::Instant::now();
        let written = tokio::time::timeout(
            Duration::from_secs(10),
            guarded.write_all(&[7u8; 64 * 1024]),
        )
        .await
        .expect("the write gives up rather than wait for ever");
        let error = written.expect_err("nobody took the bytes");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(is_stalled(&error), "{error}");
        assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_taking_bytes_is_not_cut_off() {
        let (writer, mut reader) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(writer, LIMIT);
        let total = 16 * 1024;
        // A reader that takes 1 KiB every 50 ms: the whole takes far longer than the limit, no wait as long.
        let read = tokio::spawn(async move {
            let mut got = 0;
            let mut chunk = [0u8; 1024];
            while got < total {
                tokio::time::sleep(Duration::from_millis(50)).await;
                got += reader.read(&mut chunk).await.expect("read");
            }
            got
        });
        let started = std::time::Instant::now();
        guarded
            .write_all(&vec![7u8; total])
            .await
            .expect("every byte is taken in time");
        guarded.flush().await.expect("flush");
        assert!(started.elapsed() > LIMIT * 2, "{:?}", started.elapsed());
        assert_eq!(read.await.expect("the reader"), total);
    }

    #[test]
    fn another_error_is_not_a_stall() {
        let error = io::Error::new(io::ErrorKind::TimedOut, "something else");
        assert!(!is_stalled(&error));
    }
}
