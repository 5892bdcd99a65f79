//! The send side shared by byte-stream connections (TCP, TLS): a stream's read end drained into a writer.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::handle::reason::Error;
use crate::handle::stream::{DEFAULT_CAPACITY, ReadStream};

/// How a send pump ended.
pub(crate) enum SendEnd {
    /// The app finished its send stream; the writer was shut down cleanly (FIN, close_notify).
    Finished,
    /// The connection refused a write; nothing more can be sent.
    WriteFailed,
    /// The send stream was cut short (released unfinished, closed): the caller must make the peer see an
    /// abort, never a clean end.
    CutShort(Error),
}

/// Writes everything `from` carries into `to`; on a clean end shuts `to` down.
pub(crate) async fn send_all<W: AsyncWrite + Unpin>(from: &ReadStream, to: &mut W) -> SendEnd {
    loop {
        match from.read_chunk(DEFAULT_CAPACITY).await {
            Ok(Some(chunk)) => {
                if to.write_all(&chunk).await.is_err() {
                    return SendEnd::WriteFailed;
                }
            }
            Ok(None) => {
                let _ = to.shutdown().await;
                return SendEnd::Finished;
            }
            Err(e) => return SendEnd::CutShort(e),
        }
    }
}
