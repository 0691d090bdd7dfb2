//! A one-phase `GOAWAY`, the way a provider sends one when it stops taking work at once.
//!
//! hyper (through h2) only offers the two-phase graceful shutdown of RFC 9113 §6.8: a
//! `GOAWAY` with the largest stream id, a round trip, then the real last stream id. A client
//! that honours the first frame never has a request refused that way. Real providers also
//! send a single `GOAWAY` naming the last stream they took, and every stream the client
//! opened after it is refused: the client must send those again elsewhere, and must not send
//! again the ones at or below it.
//!
//! [`FrameFilter`] sits between hyper and the connection's (decrypted) byte stream and does
//! what hyper cannot. When asked, it writes a `GOAWAY` naming the highest stream whose
//! `HEADERS` it has handed to hyper, at the next frame boundary of hyper's output; from then
//! on, every frame the client sends on a later stream is dropped before hyper sees it (those
//! requests never reach the mock, so they are neither recorded nor answered), and hyper's
//! own `GOAWAY` frames are dropped (a second `GOAWAY` may not raise the last stream id).
//! hyper is told to shut the connection down gracefully at the same moment, so it answers the
//! streams it took and then closes. Anything that is not HTTP/2 passes through untouched.
//!
//! On loopback a request is never on the wire for long, so a `GOAWAY` would name the very
//! last request the client sent and refuse nothing. A server also holds requests it received
//! but has not started on (an accept queue), and may refuse those. The filter can hold each
//! incoming frame for a while ([`Trigger::hold`]) before hyper sees it; the frames still held
//! when the `GOAWAY` goes out belong to streams above its last stream id when they were new
//! streams, and are dropped.

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const GOAWAY: u8 = 0x7;
/// How much of hyper's output is held before a write waits for the socket.
const OUT_LIMIT: usize = 256 * 1024;

/// What the connection task and the filter share.
#[derive(Debug)]
pub(crate) struct Trigger {
    /// Set to make the filter send its `GOAWAY` at the next frame boundary.
    pub go_away: AtomicBool,
    /// How long each incoming frame is held before hyper sees it, in microseconds.
    pub hold: Arc<AtomicU64>,
}

impl Trigger {
    pub fn new(hold: Arc<AtomicU64>) -> Self {
        Self {
            go_away: AtomicBool::new(false),
            hold,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Not known yet: the preface decides.
    Unknown,
    Http2,
    PassThrough,
}

/// The filter around one connection's byte stream.
#[derive(Debug)]
pub(crate) struct FrameFilter<S> {
    inner: S,
    trigger: Arc<Trigger>,
    /// Counts the requests (new streams) refused, for the mock's report.
    refused: Arc<AtomicUsize>,
    mode: Mode,
    /// Bytes read from the socket and not yet parsed into whole frames.
    incoming: Vec<u8>,
    /// Whole frames received and not yet handed to hyper, with when they arrived.
    held: VecDeque<(Instant, Vec<u8>)>,
    /// The wait for the first held frame.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes ready for hyper to read.
    ready: Vec<u8>,
    /// The highest stream whose `HEADERS` hyper was given.
    highest: u32,
    /// The last stream id of the `GOAWAY` sent, once it is sent.
    last_stream: Option<u32>,
    /// hyper's output not yet split into whole frames.
    out_pending: Vec<u8>,
    /// Whole frames (and the injected `GOAWAY`) waiting for the socket.
    out_ready: Vec<u8>,
}

impl<S> FrameFilter<S> {
    /// Wraps a connection; `http2` says that ALPN chose HTTP/2 (`None` when the preface has
    /// to tell).
    pub fn new(
        inner: S,
        http2: Option<bool>,
        trigger: Arc<Trigger>,
        refused: Arc<AtomicUsize>,
    ) -> Self {
        let mode = match http2 {
            Some(true) => Mode::Http2,
            Some(false) => Mode::PassThrough,
            None => Mode::Unknown,
        };
        Self {
            inner,
            trigger,
            refused,
            mode,
            incoming: Vec::new(),
            held: VecDeque::new(),
            sleep: None,
            ready: Vec::new(),
            highest: 0,
            last_stream: None,
            out_pending: Vec::new(),
            out_ready: Vec::new(),
        }
    }

    /// Moves whole frames from `incoming` to `ready`, dropping those of refused streams.
    fn parse_incoming(&mut self) {
        if self.mode == Mode::Unknown {
            let n = self.incoming.len().min(PREFACE.len());
            if self.incoming[..n] != PREFACE[..n] {
                self.mode = Mode::PassThrough;
            } else if n == PREFACE.len() {
                self.mode = Mode::Http2;
                self.ready.extend(self.incoming.drain(..PREFACE.len()));
            } else {
                return;
            }
        }
        if self.mode == Mode::PassThrough {
            self.ready.append(&mut self.incoming);
            return;
        }
        // A client's bytes start with the preface; frames follow it.
        if self.highest == 0 && self.incoming.starts_with(PREFACE) {
            self.ready.extend(self.incoming.drain(..PREFACE.len()));
        }
        let now = Instant::now();
        let mut at = 0;
        while let Some(header) = self.incoming.get(at..at + FRAME_HEADER) {
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let end = at + FRAME_HEADER + length;
            if end > self.incoming.len() {
                break;
            }
            self.held.push_back((now, self.incoming[at..end].to_vec()));
            at = end;
        }
        self.incoming.drain(..at);
        self.release(now);
    }

    /// Hands hyper the held frames that have waited long enough, dropping those of refused
    /// streams.
    fn release(&mut self, now: Instant) {
        let hold = Duration::from_micros(self.trigger.hold.load(Ordering::Relaxed));
        while let Some((arrived, _)) = self.held.front() {
            if *arrived + hold > now {
                break;
            }
            let Some((_, frame)) = self.held.pop_front() else {
                break;
            };
            let kind = frame[3];
            let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
            let refused = matches!(self.last_stream, Some(last) if stream > last);
            if refused {
                if kind == HEADERS {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                if kind == HEADERS {
                    self.highest = self.highest.max(stream);
                }
                self.ready.extend_from_slice(&frame);
            }
        }
    }

    /// Moves whole frames of hyper's output to `out_ready`, sending the `GOAWAY` at the first
    /// boundary after it was asked for and dropping hyper's own `GOAWAY` frames after it.
    fn parse_outgoing(&mut self) {
        if self.mode != Mode::Http2 {
            self.out_ready.append(&mut self.out_pending);
            return;
        }
        let mut at = 0;
        loop {
            if self.last_stream.is_none() && self.trigger.go_away.load(Ordering::Relaxed) {
                let last = self.highest;
                self.last_stream = Some(last);
                // GOAWAY: length 8, type 7, no flags, stream 0; last stream id, NO_ERROR.
                self.out_ready
                    .extend_from_slice(&[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0]);
                self.out_ready.extend_from_slice(&last.to_be_bytes());
                self.out_ready.extend_from_slice(&0u32.to_be_bytes());
            }
            let Some(header) = self.out_pending.get(at..at + FRAME_HEADER) else {
                break;
            };
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let end = at + FRAME_HEADER + length;
            if end > self.out_pending.len() {
                break;
            }
            let drop = header[3] == GOAWAY && self.last_stream.is_some();
            if !drop {
                self.out_ready.extend_from_slice(&self.out_pending[at..end]);
            }
            at = end;
        }
        self.out_pending.drain(..at);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameFilter<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The end of the stream: held frames go first; what is left after them
                    // is an unfinished frame.
                    this.release(Instant::now() + Duration::from_secs(3600));
                    if this.ready.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => {
                    this.incoming.extend_from_slice(read.filled());
                    this.parse_incoming();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    this.release(Instant::now());
                    if !this.ready.is_empty() {
                        continue;
                    }
                    let Some((arrived, _)) = this.held.front() else {
                        return Poll::Pending;
                    };
                    let hold = Duration::from_micros(this.trigger.hold.load(Ordering::Relaxed));
                    let due = *arrived + hold;
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                    sleep.as_mut().reset(due);
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> FrameFilter<S> {
    /// Writes `out_ready` to the socket until it is empty or the socket is busy.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out_ready.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out_ready) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.out_ready.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameFilter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out_ready.len() + this.out_pending.len() >= OUT_LIMIT {
            match this.drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.out_pending.extend_from_slice(buf);
        this.parse_outgoing();
        // Errors and back-pressure show at the next write or flush.
        let _ = this.drain(cx);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.parse_outgoing();
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.parse_outgoing();
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn after_the_goaway_frames_of_later_streams_are_dropped_and_hyper_s_goaway_too() {
        let trigger = Arc::new(Trigger::new(Arc::default()));
        let refused = Arc::new(AtomicUsize::new(0));
        let mut filter = FrameFilter::new((), None, Arc::clone(&trigger), Arc::clone(&refused));
        filter.incoming.extend_from_slice(PREFACE);
        filter.incoming.extend(frame(HEADERS, 1, b"a"));
        filter.incoming.extend(frame(HEADERS, 3, b"b"));
        filter.parse_incoming();
        assert_eq!(filter.highest, 3);

        trigger.go_away.store(true, Ordering::Relaxed);
        filter.out_pending.extend(frame(0x4, 0, b""));
        filter.out_pending.extend(frame(GOAWAY, 0, &[0; 8]));
        filter.parse_outgoing();
        let mut expected = frame(GOAWAY, 0, &[0, 0, 0, 3, 0, 0, 0, 0]);
        expected.extend(frame(0x4, 0, b""));
        assert_eq!(filter.out_ready, expected);

        filter.ready.clear();
        filter.incoming.extend(frame(0x0, 3, b"data of 3"));
        filter.incoming.extend(frame(HEADERS, 5, b"c"));
        filter.incoming.extend(frame(0x0, 5, b"data of 5"));
        filter.incoming.extend(frame(0x8, 0, &[0, 0, 0, 1]));
        filter.parse_incoming();
        let mut kept = frame(0x0, 3, b"data of 3");
        kept.extend(frame(0x8, 0, &[0, 0, 0, 1]));
        assert_eq!(filter.ready, kept);
        assert_eq!(refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn what_is_not_http2_passes_through() {
        let mut filter = FrameFilter::new(
            (),
            None,
            Arc::new(Trigger::new(Arc::default())),
            Arc::default(),
        );
        filter
            .incoming
            .extend_from_slice(b"POST / HTTP/1.1\r\n\r\n");
        filter.parse_incoming();
        assert_eq!(filter.ready, b"POST / HTTP/1.1\r\n\r\n");
        assert_eq!(filter.mode, Mode::PassThrough);
    }
}
