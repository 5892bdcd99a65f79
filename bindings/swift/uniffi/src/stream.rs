//! Byte streams: `ReadStream`, `WriteStream`, `pipe`, `streamFromBytes`, and `onData` delivery.

use std::sync::{Arc, Mutex};

use bcv_core::handle as core;
use bytes::Bytes;

use crate::error::{BcvError, ClosedInfo, consumed, opt_millis};
use crate::node::{AsNode, CancelToken, HasNode, cancellable, lock, node_methods};

/// The read end of a byte stream.
///
/// Ownership: the Swift object holds one reference; `deinit` releases it (O(1), any thread). Releasing
/// the last reference drops the end, so the writer sees `Closed(PEER_DROPPED)`. A transformer
/// (`gzipCompress`, `aeadEncrypt`, …) consumes the stream: afterwards this object reports
/// `Closed(SELF)` and its state is `closed`.
///
/// Errors of reads: `Closed` when the data was cut short or the stream closed (never shown as EOF),
/// `Busy` when another read is in progress, `Timeout`, `Cancelled`, `WouldDeadlock`.
#[derive(uniffi::Object)]
pub struct ReadStream {
    inner: Mutex<Option<Arc<core::ReadStream>>>,
}

impl ReadStream {
    pub(crate) fn wrap(stream: core::ReadStream) -> Arc<ReadStream> {
        Arc::new(ReadStream { inner: Mutex::new(Some(Arc::new(stream))) })
    }

    fn get(&self) -> Result<Arc<core::ReadStream>, BcvError> {
        lock(&self.inner).clone().ok_or_else(consumed)
    }

    /// Moves the core stream out (a transformer consumes it). Errors: `Closed(SELF)` if already
    /// consumed; `Busy` while a read or wait holds it.
    pub(crate) fn take(&self) -> Result<core::ReadStream, BcvError> {
        let mut slot = lock(&self.inner);
        let arc = slot.take().ok_or_else(consumed)?;
        match Arc::try_unwrap(arc) {
            Ok(stream) => Ok(stream),
            Err(arc) => {
                *slot = Some(arc);
                Err(BcvError::Busy {
                    message: "an operation is in progress on this stream; it cannot be consumed".into(),
                })
            }
        }
    }
}

impl HasNode for ReadStream {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        lock(&self.inner).clone().map(|s| s as Arc<dyn AsNode>)
    }
}

fn check_max(max: u32) -> Result<usize, BcvError> {
    if max == 0 {
        return Err(BcvError::InvalidArgument { message: "max must be at least 1".into() });
    }
    Ok(max as usize)
}

#[uniffi::export]
impl ReadStream {
    /// Reads the next chunk of at most `max` bytes, waiting until some are available.
    ///
    /// Returns `nil` only at a clean EOF (the writer called `finish()` or the producer reached its
    /// natural end). `cancel`: cancelling the token makes this call throw `Cancelled` and leaves the
    /// stream open. Errors: see the type.
    #[uniffi::method(default(cancel = None))]
    pub async fn read(&self, max: u32, cancel: Option<Arc<CancelToken>>) -> Result<Option<Vec<u8>>, BcvError> {
        let max = check_max(max)?;
        let stream = self.get()?;
        cancellable(cancel, async move { Ok(stream.read_chunk(max).await?.map(Vec::from)) }).await
    }

    /// Reads everything up to a clean EOF. Errors: any read error (the bytes read before it are
    /// dropped); `Cancelled` leaves the stream open but drops what this call had read.
    #[uniffi::method(default(cancel = None))]
    pub async fn read_to_end(&self, cancel: Option<Arc<CancelToken>>) -> Result<Vec<u8>, BcvError> {
        let stream = self.get()?;
        cancellable(cancel, async move { Ok(Vec::from(stream.read_to_end().await?)) }).await
    }
}

#[uniffi::export]
impl ReadStream {
    /// Blocking form of `read`: blocks the calling thread (never call it on an SDK thread) until a
    /// chunk, EOF (`nil`) or an error. `timeout_ms`: `Timeout` after that long with nothing to read
    /// (nothing lost); `nil` waits as long as it takes.
    #[uniffi::method(default(timeout_ms = None))]
    pub fn read_blocking(&self, max: u32, timeout_ms: Option<u64>) -> Result<Option<Vec<u8>>, BcvError> {
        let max = check_max(max)?;
        Ok(self.get()?.read_chunk_blocking(max, opt_millis(timeout_ms))?.map(Vec::from))
    }
}

#[uniffi::export]
impl ReadStream {
    /// Number of bytes buffered and ready to read (0 once consumed).
    pub fn buffered(&self) -> u64 {
        lock(&self.inner).as_ref().map_or(0, |s| s.buffered() as u64)
    }

    /// Delivers the stream to `handler` chunk by chunk on an SDK thread until EOF or an error (each
    /// delivered once, as the last event). The SDK holds `handler` only until then (LIFETIMES.md O4),
    /// and holds this stream by an internal reference only: releasing every handle (or `close()`) stops
    /// the delivery, and no event follows a release or close. Errors: `Busy` if a read is in progress;
    /// `Closed`.
    pub fn on_data(&self, handler: Arc<dyn StreamHandler>) -> Result<(), BcvError> {
        let stream = self.get()?;
        stream.on_data(move |event| {
            handler.on_event(match event {
                core::StreamEvent::Data(chunk) => StreamEvent::Data { chunk: Vec::from(chunk) },
                core::StreamEvent::End => StreamEvent::End,
                core::StreamEvent::Error(e) => StreamEvent::Failed { error: e.into() },
            })
        })?;
        Ok(())
    }
}

node_methods!(ReadStream);

/// One delivery of `ReadStream.onData`.
#[derive(Debug, uniffi::Enum)]
pub enum StreamEvent {
    /// A chunk of bytes.
    Data {
        /// The bytes.
        chunk: Vec<u8>,
    },
    /// Clean EOF: the writer finished. Last event.
    End,
    /// The stream was cut short, closed or failed. Last event.
    Failed {
        /// Why.
        error: StreamFailure,
    },
}

/// Why an `onData` delivery ended without EOF: the close details, or the message of another error.
#[derive(Debug, uniffi::Record)]
pub struct StreamFailure {
    /// Set when the stream ended with `Closed`.
    pub closed: Option<ClosedInfo>,
    /// A description of the error.
    pub message: String,
}

impl From<core::Error> for StreamFailure {
    fn from(e: core::Error) -> StreamFailure {
        StreamFailure { closed: e.closed().map(Into::into), message: e.to_string() }
    }
}

/// Receives `onData` events. Implemented in Swift; called on an SDK thread, one event at a time. It may
/// release or close the stream (or anything else); it must not block for long.
#[uniffi::export(with_foreign)]
pub trait StreamHandler: Send + Sync {
    /// One event; `End` and `Failed` are the last.
    fn on_event(&self, event: StreamEvent);
}

/// The write end of a byte stream.
///
/// Ownership: the Swift object holds one reference; `deinit` releases it. Call `finish()` for a clean
/// EOF: releasing or closing it without `finish()` makes the reader end with `Closed(PEER_DROPPED)`,
/// never EOF.
///
/// Errors of writes: `Closed(PEER_DROPPED)` when the reader went away, `Closed` when this end was
/// closed, `InvalidArgument` after `finish()`, `Busy`, `Timeout`, `WouldDeadlock`. How many bytes were
/// accepted before an error is not reported.
#[derive(uniffi::Object)]
pub struct WriteStream {
    inner: Arc<core::WriteStream>,
}

impl WriteStream {
    pub(crate) fn wrap(stream: core::WriteStream) -> Arc<WriteStream> {
        Arc::new(WriteStream { inner: Arc::new(stream) })
    }
}

impl HasNode for WriteStream {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

#[uniffi::export]
impl WriteStream {
    /// Writes all of `data`, waiting while the buffer is full (backpressure).
    pub async fn write(&self, data: Vec<u8>) -> Result<(), BcvError> {
        Ok(self.inner.write_bytes(Bytes::from(data)).await?)
    }

    /// Ends the stream cleanly: the reader drains the buffer, then sees EOF. Idempotent.
    /// Errors: `Closed(PEER_DROPPED)` if the reader already went away; `Closed` if this end is closed.
    pub fn finish(&self) -> Result<(), BcvError> {
        Ok(self.inner.finish()?)
    }

    /// True once the reader went away: further writes would fail.
    pub fn is_peer_gone(&self) -> bool {
        self.inner.is_peer_gone()
    }
}

#[uniffi::export]
impl WriteStream {
    /// Blocking form of `write` (never call it on an SDK thread). `timeout_ms`: `Timeout` if the buffer
    /// stays full that long; `nil` waits as long as it takes.
    #[uniffi::method(default(timeout_ms = None))]
    pub fn write_blocking(&self, data: Vec<u8>, timeout_ms: Option<u64>) -> Result<(), BcvError> {
        Ok(self.inner.write_bytes_blocking(Bytes::from(data), opt_millis(timeout_ms))?)
    }
}

node_methods!(WriteStream);

/// Both ends of a new pipe. Each end is owned by its object.
#[derive(uniffi::Record)]
pub struct PipeEnds {
    /// The write end.
    pub writer: Arc<WriteStream>,
    /// The read end.
    pub reader: Arc<ReadStream>,
}

/// Creates a pipe with a buffer of `capacity` bytes (at least 1; 0 means the default, 64 KiB).
/// Errors: `Closed(RUNTIME_SHUTDOWN)` after `shutdown`.
#[uniffi::export]
pub fn pipe(capacity: u32) -> Result<PipeEnds, BcvError> {
    let capacity = if capacity == 0 { core::DEFAULT_CAPACITY } else { capacity as usize };
    let (writer, reader) = core::Runtime::global().pipe(capacity)?;
    Ok(PipeEnds { writer: WriteStream::wrap(writer), reader: ReadStream::wrap(reader) })
}

/// A stream that yields `data`, then a clean EOF. Errors: `Closed(RUNTIME_SHUTDOWN)` after `shutdown`.
#[uniffi::export]
pub fn stream_from_bytes(data: Vec<u8>) -> Result<Arc<ReadStream>, BcvError> {
    Ok(ReadStream::wrap(core::Runtime::global().stream_from_bytes(data)?))
}
