//! Byte streams: a bounded pipe between a write end and a read end (backpressure), each end a node.
//!
//! Rules (LIFETIMES.md §3.2): the reader sees a clean EOF only after the writer called
//! [`WriteStream::finish`]; a writer released or closed without finishing ends the reader with
//! `Closed{PEER_DROPPED}` after what was buffered; a reader that goes away makes writes fail at once with
//! `Closed{PEER_DROPPED}`. Two concurrent reads (or writes) on one end: the second gets [`Error::Busy`].

use std::collections::VecDeque;
use std::future::poll_fn;
use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::node::{Node, NodeCore, NodeHooks, NodeKind, lock};
use super::reason::{CloseReason, Closed, Error, Result, WriteError};
use super::runtime::{CallbackScope, Runtime};
use super::strict::ViolationKind;

/// The default buffer size of a pipe: 64 KiB.
pub const DEFAULT_CAPACITY: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
enum WriterEnd {
    Open,
    Finished,
    Failed(Failure),
}

/// How a stream ended when it did not end cleanly; turned into an [`Error`] for each reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Closed(Closed),
    Authentication(Arc<str>),
    Corrupt(Arc<str>),
}

impl Failure {
    fn to_error(&self) -> Error {
        match self {
            Failure::Closed(c) => Error::Closed(*c),
            Failure::Authentication(m) => Error::Authentication(m.to_string()),
            Failure::Corrupt(m) => Error::Corrupt(m.to_string()),
        }
    }

    /// The failure a downstream reader sees when a stage ends with `error`.
    pub(crate) fn from_error(error: &Error) -> Failure {
        match error {
            Error::Closed(c) => Failure::Closed(Closed::upstream(*c)),
            Error::Authentication(m) => Failure::Authentication(m.as_str().into()),
            Error::Corrupt(m) => Failure::Corrupt(m.as_str().into()),
            other => Failure::Corrupt(other.to_string().into()),
        }
    }
}

struct PipeInner {
    chunks: VecDeque<Bytes>,
    len: usize,
    writer: WriterEnd,
    /// The writer's own end, once closed or released: what its writes return.
    writer_gone: Option<Closed>,
    /// The reader's own end, once closed or released: what its reads return; writers see PEER_DROPPED.
    reader_gone: Option<Closed>,
    read_busy: bool,
    write_busy: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

pub(crate) struct Pipe {
    inner: Mutex<PipeInner>,
    readable: Condvar,
    writable: Condvar,
    capacity: usize,
}

impl Pipe {
    fn new(capacity: usize) -> Arc<Pipe> {
        Arc::new(Pipe {
            inner: Mutex::new(PipeInner {
                chunks: VecDeque::new(),
                len: 0,
                writer: WriterEnd::Open,
                writer_gone: None,
                reader_gone: None,
                read_busy: false,
                write_busy: false,
                read_waker: None,
                write_waker: None,
            }),
            readable: Condvar::new(),
            writable: Condvar::new(),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PipeInner> {
        lock(&self.inner)
    }

    /// Wakes both sides; called after every state change, with the lock released.
    fn wake_all(&self, wakers: (Option<Waker>, Option<Waker>)) {
        self.readable.notify_all();
        self.writable.notify_all();
        if let Some(w) = wakers.0 {
            w.wake();
        }
        if let Some(w) = wakers.1 {
            w.wake();
        }
    }

    fn take_wakers(inner: &mut PipeInner) -> (Option<Waker>, Option<Waker>) {
        (inner.read_waker.take(), inner.write_waker.take())
    }

    fn update(&self, f: impl FnOnce(&mut PipeInner)) {
        let wakers = {
            let mut inner = self.lock();
            f(&mut inner);
            Self::take_wakers(&mut inner)
        };
        self.wake_all(wakers);
    }

    /// One attempt to read: `Ready(Ok(n))` with n > 0, `Ready(Ok(0))` at clean EOF, or `Pending`.
    fn try_read(inner: &mut PipeInner, buf: &mut [u8]) -> Poll<Result<usize>> {
        if let Some(c) = inner.reader_gone {
            return Poll::Ready(Err(c.into()));
        }
        if inner.len > 0 {
            let mut n = 0;
            while n < buf.len() {
                let Some(front) = inner.chunks.front_mut() else { break };
                let take = front.len().min(buf.len() - n);
                buf[n..n + take].copy_from_slice(&front[..take]);
                if take == front.len() {
                    inner.chunks.pop_front();
                } else {
                    let _ = front.split_to(take);
                }
                n += take;
            }
            inner.len -= n;
            return Poll::Ready(Ok(n));
        }
        match inner.writer {
            WriterEnd::Finished => Poll::Ready(Ok(0)),
            WriterEnd::Failed(ref f) => Poll::Ready(Err(f.to_error())),
            WriterEnd::Open => Poll::Pending,
        }
    }

    fn try_read_chunk(inner: &mut PipeInner, max: usize) -> Poll<Result<Option<Bytes>>> {
        if let Some(c) = inner.reader_gone {
            return Poll::Ready(Err(c.into()));
        }
        if let Some(front) = inner.chunks.front_mut() {
            let chunk =
                if front.len() <= max { inner.chunks.pop_front().unwrap_or_default() } else { front.split_to(max) };
            inner.len -= chunk.len();
            return Poll::Ready(Ok(Some(chunk)));
        }
        match inner.writer {
            WriterEnd::Finished => Poll::Ready(Ok(None)),
            WriterEnd::Failed(ref f) => Poll::Ready(Err(f.to_error())),
            WriterEnd::Open => Poll::Pending,
        }
    }

    /// One attempt to write: accepts what fits. `Ready(Ok(n))` when n > 0 bytes went in, `Pending` when full.
    fn try_write(&self, inner: &mut PipeInner, data: &mut Bytes) -> Poll<Result<usize>> {
        if let Some(c) = inner.writer_gone {
            return Poll::Ready(Err(c.into()));
        }
        if let Some(c) = inner.reader_gone {
            return Poll::Ready(Err(peer_closed(c).into()));
        }
        match inner.writer {
            WriterEnd::Open => {}
            WriterEnd::Finished => {
                return Poll::Ready(Err(Error::InvalidArgument("write after finish()".into())));
            }
            WriterEnd::Failed(ref f) => return Poll::Ready(Err(f.to_error())),
        }
        let room = self.capacity.saturating_sub(inner.len);
        if room == 0 {
            return Poll::Pending;
        }
        let chunk = if data.len() <= room { std::mem::take(data) } else { data.split_to(room) };
        let n = chunk.len();
        inner.len += n;
        inner.chunks.push_back(chunk);
        Poll::Ready(Ok(n))
    }
}

struct ReaderHooks(Arc<Pipe>);

impl NodeHooks for ReaderHooks {
    fn on_close(&self, closed: Closed) {
        self.0.update(|inner| {
            inner.reader_gone.get_or_insert(closed);
            inner.chunks.clear();
            inner.len = 0;
        });
    }

    fn on_last_release(&self) {
        self.0.update(|inner| {
            inner.reader_gone.get_or_insert(Closed::new(CloseReason::HandleReleased));
            inner.chunks.clear();
            inner.len = 0;
        });
    }
}

struct WriterHooks(Arc<Pipe>);

impl NodeHooks for WriterHooks {
    fn on_close(&self, closed: Closed) {
        self.0.update(|inner| {
            inner.writer_gone.get_or_insert(closed);
            if inner.writer == WriterEnd::Open {
                inner.writer = WriterEnd::Failed(Failure::Closed(peer_closed(closed)));
                inner.chunks.clear();
                inner.len = 0;
            }
        });
    }

    fn on_last_release(&self) {
        self.0.update(|inner| {
            inner.writer_gone.get_or_insert(Closed::new(CloseReason::HandleReleased));
            if inner.writer == WriterEnd::Open {
                inner.writer = WriterEnd::Failed(Failure::Closed(Closed::new(CloseReason::PeerDropped)));
            }
        });
    }

    fn release_violation(&self) -> Option<ViolationKind> {
        (self.0.lock().writer == WriterEnd::Open).then_some(ViolationKind::WriterNotFinished)
    }
}

/// What one end sees when the other closes with `closed`: the same reason for a shutdown, scope exit or
/// upstream failure (so every end reports why it all stopped), else `PEER_DROPPED`.
fn peer_closed(closed: Closed) -> Closed {
    match closed.reason {
        CloseReason::RuntimeShutdown | CloseReason::ScopeExited | CloseReason::Upstream => closed,
        _ => Closed::new(CloseReason::PeerDropped),
    }
}

/// Creates a pipe whose ends are children of the given parents (dependent children: closing a parent
/// closes that end).
pub(crate) fn pipe_with_parents(
    rt: &Runtime,
    capacity: usize,
    writer_parent: Option<&Arc<NodeCore>>,
    reader_parent: Option<&Arc<NodeCore>>,
    labels: (&'static str, &'static str),
) -> Result<(WriteStream, ReadStream), Closed> {
    let pipe = Pipe::new(capacity);
    let wcore = NodeCore::create(
        &rt.shared,
        NodeKind::StreamWriter,
        labels.0,
        writer_parent,
        Box::new(WriterHooks(pipe.clone())),
    )?;
    let writer = WriteStream { node: Node::from_core(wcore), pipe: pipe.clone() };
    let rcore = NodeCore::create(
        &rt.shared,
        NodeKind::StreamReader,
        labels.1,
        reader_parent,
        Box::new(ReaderHooks(pipe.clone())),
    )?;
    let reader = ReadStream { node: Node::from_core(rcore), pipe };
    Ok((writer, reader))
}

impl WriteStream {
    /// Marks this end as internal (held by a pump task, never by a user): no scope owns it, and strict
    /// mode does not report it.
    pub(crate) fn internal(self) -> WriteStream {
        self.node.core.mark_internal();
        self
    }
}

impl ReadStream {
    /// Marks this end as internal (held by a pump task, never by a user): no scope owns it, and strict
    /// mode does not report it.
    pub(crate) fn internal(self) -> ReadStream {
        self.node.core.mark_internal();
        self
    }
}

impl Runtime {
    /// Creates a pipe with a buffer of `capacity` bytes (at least 1). The writer blocks (or its future
    /// stays pending) while the buffer is full. Errors: `Closed{RUNTIME_SHUTDOWN}` after shutdown.
    pub fn pipe(&self, capacity: usize) -> Result<(WriteStream, ReadStream), Closed> {
        pipe_with_parents(self, capacity, None, None, ("pipe writer", "pipe reader"))
    }
}

/// The read end of a byte stream. Dropping it releases the end: the writer then sees `PEER_DROPPED`.
///
/// Derefs to [`Node`] for `close()`, `close_and_wait()`, `state()`.
pub struct ReadStream {
    node: Node,
    pipe: Arc<Pipe>,
}

/// Marks a read (or write) in progress on one end; cleared on drop.
struct BusyGuard<'a> {
    pipe: &'a Pipe,
    read: bool,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut inner = self.pipe.lock();
        if self.read {
            inner.read_busy = false;
            inner.read_waker = None;
        } else {
            inner.write_busy = false;
            inner.write_waker = None;
        }
    }
}

fn claim(pipe: &Pipe, read: bool) -> Result<BusyGuard<'_>> {
    let mut inner = pipe.lock();
    let flag = if read { &mut inner.read_busy } else { &mut inner.write_busy };
    if *flag {
        return Err(Error::Busy(if read { "read end" } else { "write end" }));
    }
    *flag = true;
    Ok(BusyGuard { pipe, read })
}

fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

impl ReadStream {
    /// Reads up to `buf.len()` bytes, blocking until some are available.
    ///
    /// Returns `Ok(0)` only at a clean EOF. Errors: `Closed{…}` when the stream was cut short or closed
    /// (never disguised as EOF), [`Error::Busy`] when another read is in progress, [`Error::Timeout`] when
    /// `timeout` passes with nothing to read (nothing is lost), [`Error::WouldDeadlock`] on a runtime worker.
    pub fn read_blocking(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        if buf.is_empty() {
            return Err(Error::InvalidArgument("read into an empty buffer".into()));
        }
        let _op = self.node.core.begin_op()?;
        let _busy = claim(&self.pipe, true)?;
        self.wait_ready(timeout, |inner| Pipe::try_read(inner, buf))
    }

    /// Reads the next chunk of at most `max` bytes without copying; `Ok(None)` at a clean EOF.
    /// Errors as for [`read_blocking`](Self::read_blocking).
    pub fn read_chunk_blocking(&self, max: usize, timeout: Option<Duration>) -> Result<Option<Bytes>> {
        let _op = self.node.core.begin_op()?;
        let _busy = claim(&self.pipe, true)?;
        self.wait_ready(timeout, |inner| Pipe::try_read_chunk(inner, max.max(1)))
    }

    fn wait_ready<T>(
        &self,
        timeout: Option<Duration>,
        mut attempt: impl FnMut(&mut PipeInner) -> Poll<Result<T>>,
    ) -> Result<T> {
        if super::runtime::would_deadlock_here() && !super::runtime::in_callback() {
            // A blocking wait on an executor thread would stall the tasks that feed this pipe.
            let mut inner = self.pipe.lock();
            return match attempt(&mut inner) {
                Poll::Ready(r) => r,
                Poll::Pending => Err(Error::WouldDeadlock),
            };
        }
        let deadline = deadline_of(timeout);
        let mut inner = self.pipe.lock();
        loop {
            if let Poll::Ready(r) = attempt(&mut inner) {
                let waker = inner.write_waker.take();
                drop(inner);
                self.pipe.writable.notify_all();
                if let Some(w) = waker {
                    w.wake();
                }
                return r;
            }
            inner = match deadline {
                None => self.pipe.readable.wait(inner).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout(timeout.unwrap_or_default()));
                    }
                    self.pipe.readable.wait_timeout(inner, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }

    fn poll_with<T>(
        &self,
        cx: &mut Context<'_>,
        attempt: impl FnOnce(&mut PipeInner) -> Poll<Result<T>>,
    ) -> Poll<Result<T>> {
        let mut inner = self.pipe.lock();
        match attempt(&mut inner) {
            Poll::Ready(r) => {
                let waker = inner.write_waker.take();
                drop(inner);
                self.pipe.writable.notify_all();
                if let Some(w) = waker {
                    w.wake();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                inner.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Async form of [`read_blocking`](Self::read_blocking) (no timeout; wrap it in one if needed).
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Err(Error::InvalidArgument("read into an empty buffer".into()));
        }
        let _op = self.node.core.begin_op()?;
        let _busy = claim(&self.pipe, true)?;
        poll_fn(|cx| self.poll_with(cx, |inner| Pipe::try_read(inner, buf))).await
    }

    /// Polls for the next chunk, for adapters that own this read end exclusively (an HTTP body, a
    /// `futures::Stream`). No `Busy` check: the caller guarantees a single poller.
    pub(crate) fn poll_read_chunk(&self, cx: &mut Context<'_>, max: usize) -> Poll<Result<Option<Bytes>>> {
        let _op = match self.node.core.begin_op() {
            Ok(op) => op,
            Err(c) => return Poll::Ready(Err(c.into())),
        };
        self.poll_with(cx, |inner| Pipe::try_read_chunk(inner, max.max(1)))
    }

    /// Async form of [`read_chunk_blocking`](Self::read_chunk_blocking).
    pub async fn read_chunk(&self, max: usize) -> Result<Option<Bytes>> {
        let _op = self.node.core.begin_op()?;
        let _busy = claim(&self.pipe, true)?;
        poll_fn(|cx| self.poll_with(cx, |inner| Pipe::try_read_chunk(inner, max.max(1)))).await
    }

    /// Reads everything to a clean EOF. Errors: any read error; bytes read before it are dropped.
    pub async fn read_to_end(&self) -> Result<Bytes> {
        let mut out = BytesMut::new();
        while let Some(chunk) = self.read_chunk(usize::MAX).await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// Blocking form of [`read_to_end`](Self::read_to_end).
    pub fn read_to_end_blocking(&self) -> Result<Bytes> {
        let mut out = BytesMut::new();
        while let Some(chunk) = self.read_chunk_blocking(usize::MAX, None)? {
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// Number of bytes buffered and ready to read.
    pub fn buffered(&self) -> usize {
        self.pipe.lock().len
    }

    /// The underlying node (for `close`, `state`, …).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Delivers the stream to `callback` chunk by chunk on an SDK thread, until EOF or an error, each
    /// delivered once as the final event. The callback may release or close this stream (or anything
    /// else); after a release or close no further event is delivered. Takes an internal reference only:
    /// releasing every handle stops the delivery. Errors: `Busy` if a read is already in progress.
    pub fn on_data<F>(&self, mut callback: F) -> Result<()>
    where
        F: FnMut(StreamEvent) + Send + 'static,
    {
        let _op = self.node.core.begin_op()?;
        let core: Arc<NodeCore> = Arc::clone(&self.node.core);
        let pipe = self.pipe.clone();
        let rt = core.rt.clone();
        rt.tokio().spawn(async move {
            loop {
                let Ok(op) = core.begin_op() else { break };
                let Ok(busy) = claim(&pipe, true) else { break };
                let polled = poll_fn(|cx| {
                    let mut inner = pipe.lock();
                    match Pipe::try_read_chunk(&mut inner, DEFAULT_CAPACITY) {
                        Poll::Ready(r) => {
                            let waker = inner.write_waker.take();
                            drop(inner);
                            pipe.writable.notify_all();
                            if let Some(w) = waker {
                                w.wake();
                            }
                            Poll::Ready(r)
                        }
                        Poll::Pending => {
                            inner.read_waker = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    }
                })
                .await;
                drop(busy);
                // No event after the user released or closed the stream (A7).
                if !core.is_open() || !core.has_external_refs() {
                    break;
                }
                let (event, last) = match polled {
                    Ok(Some(chunk)) => (StreamEvent::Data(chunk), false),
                    Ok(None) => (StreamEvent::End, true),
                    Err(e) => (StreamEvent::Error(e), true),
                };
                {
                    // The callback counts as in-flight work: close_and_wait and shutdown wait for it.
                    let _cb = CallbackScope::enter();
                    callback(event);
                }
                drop(op);
                if last {
                    break;
                }
            }
            // The callback (and what it captured) is dropped here, on the executor, never inline.
            drop(callback);
        });
        Ok(())
    }
}

/// One delivery of [`ReadStream::on_data`].
#[derive(Debug)]
pub enum StreamEvent {
    /// A chunk of bytes.
    Data(Bytes),
    /// Clean EOF: the writer finished. Last event.
    End,
    /// The stream was cut short or closed. Last event.
    Error(Error),
}

impl Deref for ReadStream {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl std::fmt::Debug for ReadStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadStream").field("node", &self.node).field("buffered", &self.buffered()).finish()
    }
}

/// The write end of a byte stream. Call [`finish`](Self::finish) for a clean EOF; dropping it without
/// finishing makes the reader end with `Closed{PEER_DROPPED}` (strict mode V2).
pub struct WriteStream {
    node: Node,
    pipe: Arc<Pipe>,
}

impl WriteStream {
    /// Writes all of `data`, blocking while the buffer is full.
    ///
    /// Errors ([`WriteError`] says how many bytes were accepted first): `Closed{PEER_DROPPED}` when the
    /// reader went away, `Closed{…}` when this end was closed, `Busy`, `Timeout`, `WouldDeadlock` on a
    /// runtime worker when the buffer is full.
    pub fn write_blocking(&self, data: &[u8], timeout: Option<Duration>) -> Result<(), WriteError> {
        self.write_bytes_blocking(Bytes::copy_from_slice(data), timeout)
    }

    /// Like [`write_blocking`](Self::write_blocking), taking ownership of the bytes (no copy when they fit).
    pub fn write_bytes_blocking(&self, mut data: Bytes, timeout: Option<Duration>) -> Result<(), WriteError> {
        let total = data.len();
        let fail = |error: Error, rest: &Bytes| WriteError { error, accepted: total - rest.len() };
        let _op = self.node.core.begin_op().map_err(|c| fail(c.into(), &data))?;
        let _busy = claim(&self.pipe, false).map_err(|e| fail(e, &data))?;
        let deadline = deadline_of(timeout);
        let on_worker = super::runtime::would_deadlock_here() && !super::runtime::in_callback();
        let mut inner = self.pipe.lock();
        while !data.is_empty() {
            match self.pipe.try_write(&mut inner, &mut data) {
                Poll::Ready(Ok(_)) => {
                    let waker = inner.read_waker.take();
                    drop(inner);
                    self.pipe.readable.notify_all();
                    if let Some(w) = waker {
                        w.wake();
                    }
                    inner = self.pipe.lock();
                }
                Poll::Ready(Err(e)) => return Err(fail(e, &data)),
                Poll::Pending if on_worker => return Err(fail(Error::WouldDeadlock, &data)),
                Poll::Pending => {
                    inner = match deadline {
                        None => self.pipe.writable.wait(inner).unwrap_or_else(|p| p.into_inner()),
                        Some(d) => {
                            let left = d.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Err(fail(Error::Timeout(timeout.unwrap_or_default()), &data));
                            }
                            self.pipe.writable.wait_timeout(inner, left).unwrap_or_else(|p| p.into_inner()).0
                        }
                    };
                }
            }
        }
        Ok(())
    }

    /// Async form of [`write_blocking`](Self::write_blocking).
    pub async fn write(&self, data: &[u8]) -> Result<(), WriteError> {
        self.write_bytes(Bytes::copy_from_slice(data)).await
    }

    /// Async form of [`write_bytes_blocking`](Self::write_bytes_blocking).
    pub async fn write_bytes(&self, mut data: Bytes) -> Result<(), WriteError> {
        let total = data.len();
        let fail = |error: Error, rest: &Bytes| WriteError { error, accepted: total - rest.len() };
        let _op = self.node.core.begin_op().map_err(|c| fail(c.into(), &data))?;
        let _busy = claim(&self.pipe, false).map_err(|e| fail(e, &data))?;
        let result = poll_fn(|cx| {
            let mut inner = self.pipe.lock();
            loop {
                if data.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                match self.pipe.try_write(&mut inner, &mut data) {
                    Poll::Ready(Ok(_)) => {
                        if let Some(w) = inner.read_waker.take() {
                            w.wake();
                        }
                        self.pipe.readable.notify_all();
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        inner.write_waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            }
        })
        .await;
        result.map_err(|e| fail(e, &data))
    }

    /// Polls to write some of `buf` (at least one byte, at most what fits), for adapters that own this
    /// write end exclusively (`AsyncWrite`). No `Busy` check: the caller guarantees a single writer.
    pub(crate) fn poll_write_some(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize>> {
        let _op = match self.node.core.begin_op() {
            Ok(op) => op,
            Err(c) => return Poll::Ready(Err(c.into())),
        };
        let mut inner = self.pipe.lock();
        let room = self.pipe.capacity.saturating_sub(inner.len).min(buf.len());
        let mut data = Bytes::copy_from_slice(&buf[..room.max(1).min(buf.len())]);
        match self.pipe.try_write(&mut inner, &mut data) {
            Poll::Ready(Ok(n)) => {
                let waker = inner.read_waker.take();
                drop(inner);
                self.pipe.readable.notify_all();
                if let Some(w) = waker {
                    w.wake();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                inner.write_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Ends the stream cleanly: the reader drains the buffer, then sees EOF. Idempotent.
    /// Errors: `Closed{PEER_DROPPED}` if the reader already went away; `Closed{…}` if this end is closed.
    pub fn finish(&self) -> Result<()> {
        let mut result = Ok(());
        self.pipe.update(|inner| {
            if let Some(c) = inner.writer_gone {
                result = Err(c.into());
            } else if let Some(c) = inner.reader_gone {
                result = Err(peer_closed(c).into());
                inner.writer = WriterEnd::Finished;
            } else {
                match &inner.writer {
                    WriterEnd::Open | WriterEnd::Finished => inner.writer = WriterEnd::Finished,
                    WriterEnd::Failed(f) => result = Err(f.to_error()),
                }
            }
        });
        result
    }

    /// Ends the stream with an error the reader will see after draining what is buffered (used by pipes
    /// and transformers to carry `Closed{UPSTREAM(r)}` downstream). Never an EOF.
    pub fn abort_with(&self, closed: Closed) {
        self.fail(Failure::Closed(closed));
    }

    /// Ends the stream with `failure` (kept after the buffered bytes); no-op once finished or failed.
    pub(crate) fn fail(&self, failure: Failure) {
        self.pipe.update(|inner| {
            if inner.writer == WriterEnd::Open {
                inner.writer = WriterEnd::Failed(failure);
            }
        });
    }

    /// True once the reader went away (released or closed): further writes would fail.
    pub fn is_peer_gone(&self) -> bool {
        self.pipe.lock().reader_gone.is_some()
    }

    /// Resolves once the reader went away or this end was closed: the producer can stop producing.
    pub async fn peer_gone(&self) {
        poll_fn(|cx| {
            let mut inner = self.pipe.lock();
            if inner.reader_gone.is_some() || inner.writer_gone.is_some() {
                Poll::Ready(())
            } else {
                inner.write_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Waits until there is room to write or the stream ended; `ready()` of the contract.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            let mut inner = self.pipe.lock();
            if inner.len < self.pipe.capacity
                || inner.reader_gone.is_some()
                || inner.writer_gone.is_some()
                || inner.writer != WriterEnd::Open
            {
                Poll::Ready(())
            } else {
                inner.write_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// The underlying node.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

impl Deref for WriteStream {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl std::fmt::Debug for WriteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteStream").field("node", &self.node).finish()
    }
}

/// Copies `from` into `to` until EOF, then finishes `to`; returns the number of bytes copied.
///
/// Cancellation goes both ways (LIFETIMES.md X2, X3): if `to`'s reader goes away, `from` is released so its
/// producer sees `PEER_DROPPED`; if `from` ends with `Closed{r}`, `to`'s reader gets `Closed{UPSTREAM(r)}`.
/// Both ends are consumed.
pub async fn pipe(from: ReadStream, to: WriteStream) -> Result<u64> {
    let mut copied = 0u64;
    loop {
        match from.read_chunk(DEFAULT_CAPACITY).await {
            Ok(Some(chunk)) => {
                let n = chunk.len() as u64;
                if let Err(e) = to.write_bytes(chunk).await {
                    return Err(e.error);
                }
                copied += n;
            }
            Ok(None) => {
                to.finish()?;
                return Ok(copied);
            }
            Err(e) => {
                to.fail(Failure::from_error(&e));
                return Err(e);
            }
        }
    }
}

impl Runtime {
    /// Spawns [`pipe`] on this runtime's executor; returns at once. The result goes nowhere: errors end
    /// up on the destination's reader, as the contract says.
    pub fn spawn_pipe(&self, from: ReadStream, to: WriteStream) {
        self.shared.tokio().spawn(async move {
            let _ = pipe(from, to).await;
        });
    }
}
