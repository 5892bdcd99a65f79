//! Files as streams: a file resource whose read end streams its content, or whose write end fills it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::handle::future::{FutureReader, future_with_parents};
use crate::handle::reason::{Closed, Error, Result};
use crate::handle::resource::{Resource, TaskResource};
use crate::handle::runtime::Runtime;
use crate::handle::stream::{DEFAULT_CAPACITY, Failure, ReadStream, WriteStream, pipe_with_parents};

/// A file being written from a stream: the resource, the write end, and a future that resolves to the
/// number of bytes once the file is complete and synced.
pub struct FileSink {
    /// The file resource; `close()` stops writing (the file is left partial).
    pub resource: Resource,
    /// Write here, then `finish()`.
    pub writer: WriteStream,
    /// Resolves to the byte count after `finish()` and a successful `fsync`; to an error otherwise.
    pub done: FutureReader<Result<u64, String>>,
}

impl Runtime {
    /// Streams the file at `path`. The file resource is the stream's parent: closing it ends the stream
    /// with `Closed{PARENT}`. Errors: [`Error::Io`] naming the path if it cannot be opened.
    pub fn read_file(&self, path: impl AsRef<Path>) -> Result<(Resource, ReadStream)> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let (res, node) = TaskResource::create(self, "file reader", None)?;
        let (writer, reader) =
            pipe_with_parents(self, DEFAULT_CAPACITY, Some(&res.core), Some(&res.core), ("file pump", "file stream"))?;
        let writer = writer.internal();
        res.spawn(async move {
            let mut file = tokio::fs::File::from_std(file);
            loop {
                let mut buf = vec![0u8; DEFAULT_CAPACITY];
                match file.read(&mut buf).await {
                    Ok(0) => {
                        let _ = writer.finish();
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        if writer.write_bytes(Bytes::from(buf)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        writer.fail(Failure::Corrupt(format!("reading {}: {e}", path.display()).into()));
                        return;
                    }
                }
            }
        });
        Ok((Resource { node }, reader))
    }

    /// Creates (or truncates) the file at `path` and returns a sink that writes what the stream carries.
    /// A writer released or closed without `finish()` leaves the file partial and `done` fails.
    /// Errors: [`Error::Io`] naming the path if it cannot be created.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<FileSink> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let file = std::fs::File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let (res, node) = TaskResource::create(self, "file writer", None)?;
        let (writer, reader) =
            pipe_with_parents(self, DEFAULT_CAPACITY, Some(&res.core), Some(&res.core), ("file stream", "file pump"))?;
        let reader = reader.internal();
        let (done_w, done) = future_with_parents(self, Some(&res.core), Some(&res.core), ("file done", "file done"))?;
        let done_w = done_w.internal();
        res.spawn(async move {
            let mut file = tokio::fs::File::from_std(file);
            let mut total = 0u64;
            let result = loop {
                match reader.read_chunk(DEFAULT_CAPACITY).await {
                    Ok(Some(chunk)) => {
                        if let Err(e) = file.write_all(&chunk).await {
                            break Err(format!("writing {}: {e}", path.display()));
                        }
                        total += chunk.len() as u64;
                    }
                    Ok(None) => match file.sync_all().await {
                        Ok(()) => break Ok(total),
                        Err(e) => break Err(format!("syncing {}: {e}", path.display())),
                    },
                    Err(e) => break Err(format!("{} left partial: {e}", path.display())),
                }
            };
            let _ = done_w.write(result);
        });
        Ok(FileSink { resource: Resource { node }, writer, done })
    }

    /// A stream that yields `data` then a clean EOF. Errors: `Closed{RUNTIME_SHUTDOWN}` after shutdown.
    pub fn stream_from_bytes(&self, data: impl Into<Bytes>) -> Result<ReadStream, Closed> {
        let data: Bytes = data.into();
        let (writer, reader) = self.pipe(data.len().max(1))?;
        writer
            .write_bytes_blocking(data, None)
            .map_err(|e| e.error.closed().unwrap_or(Closed::new(crate::handle::CloseReason::PeerDropped)))?;
        writer.finish().map_err(|e| e.closed().unwrap_or(Closed::new(crate::handle::CloseReason::PeerDropped)))?;
        Ok(reader)
    }
}
