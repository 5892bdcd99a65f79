//! tokio `AsyncRead`/`AsyncWrite` over a pair of bcv stream ends, so byte-stream protocols (TLS) can run
//! over bcv streams. Errors keep their `Closed{reason}` inside the `io::Error`, so a layer above can report
//! why the stream below ended.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::handle::reason::Error;
use crate::handle::stream::{ReadStream, WriteStream};

/// A duplex byte stream made of a read end (incoming) and a write end (outgoing), both owned.
pub(crate) struct StreamIo {
    pub(crate) rx: ReadStream,
    pub(crate) tx: WriteStream,
    leftover: Bytes,
}

impl StreamIo {
    pub(crate) fn new(rx: ReadStream, tx: WriteStream) -> StreamIo {
        StreamIo { rx, tx, leftover: Bytes::new() }
    }
}

/// The bcv error behind an `io::Error` made by this adapter, if any.
pub(crate) fn bcv_error(e: &std::io::Error) -> Option<&Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
}

impl AsyncRead for StreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.leftover.is_empty() {
            match this.rx.poll_read_chunk(cx, buf.remaining().max(1)) {
                Poll::Ready(Ok(Some(chunk))) => this.leftover = chunk,
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.leftover.len().min(buf.remaining());
        buf.put_slice(&this.leftover.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.tx.poll_write_some(cx, buf).map_err(Into::into)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.tx.finish().map_err(Into::into))
    }
}
