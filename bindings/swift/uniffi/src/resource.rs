//! Resources: transformers (gzip, AES-256-GCM) and files.

use std::sync::Arc;

use bcv_core::handle as core;

use crate::error::{BcvError, opt_millis};
use crate::node::{AsNode, CancelToken, HasNode, cancellable, node_methods};
use crate::stream::{ReadStream, WriteStream};

/// A resource with no methods beyond the node's own: a transformer or a file.
///
/// Ownership: the Swift object holds one reference; `deinit` releases it, which does **not** stop the
/// resource's work (its output stream keeps it alive, LIFETIMES.md X1). `close()` stops the work: the
/// output ends with `Closed(PARENT)` and the consumed input is dropped (`PEER_DROPPED` upstream).
#[derive(uniffi::Object)]
pub struct Resource {
    inner: Arc<core::Resource>,
}

impl Resource {
    pub(crate) fn wrap(resource: core::Resource) -> Arc<Resource> {
        Arc::new(Resource { inner: Arc::new(resource) })
    }
}

impl HasNode for Resource {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

node_methods!(Resource);

/// A resource and the stream it produces (a transformer and its output, a file and its content).
/// The stream is a dependent child: closing the resource ends it with `Closed(PARENT)`.
#[derive(uniffi::Record)]
pub struct ResourceStream {
    /// The transformer or file.
    pub resource: Arc<Resource>,
    /// Its output.
    pub stream: Arc<ReadStream>,
}

fn resource_stream(pair: (core::Resource, core::ReadStream)) -> ResourceStream {
    ResourceStream { resource: Resource::wrap(pair.0), stream: ReadStream::wrap(pair.1) }
}

/// Gzip-compresses `input` at `level` 0–9. `input` is consumed: afterwards its object reports
/// `Closed(SELF)`. Errors: `InvalidArgument` for a bad level; `Busy` while a read on `input` is in
/// flight; `Closed` if `input` or the runtime is closed.
#[uniffi::export]
pub fn gzip_compress(input: Arc<ReadStream>, level: u8) -> Result<ResourceStream, BcvError> {
    Ok(resource_stream(core::Runtime::global().gzip_compress(input.take()?, u32::from(level))?))
}

/// Gzip-decompresses `input` (consumed). Corrupt or truncated input ends the output with `Corrupt`
/// (or `Closed(UPSTREAM)` if the input was cut short), never EOF. Errors as for `gzipCompress`.
#[uniffi::export]
pub fn gzip_decompress(input: Arc<ReadStream>) -> Result<ResourceStream, BcvError> {
    Ok(resource_stream(core::Runtime::global().gzip_decompress(input.take()?)?))
}

/// Encrypts `input` (consumed) with AES-256-GCM in authenticated 64 KiB chunks. `key` must be 32
/// bytes. Errors: `InvalidArgument` for a bad key; otherwise as for `gzipCompress`.
#[uniffi::export]
pub fn aead_encrypt(input: Arc<ReadStream>, key: Vec<u8>) -> Result<ResourceStream, BcvError> {
    Ok(resource_stream(core::Runtime::global().aead_encrypt(input.take()?, &key)?))
}

/// Decrypts a stream made by `aeadEncrypt` (consumed). Plaintext is released only after its chunk's
/// tag checked out: a wrong key, tampering or truncation ends the output with `Authentication` (or
/// `Closed(UPSTREAM)` when the input was cut short), never EOF. Errors as for `aeadEncrypt`.
#[uniffi::export]
pub fn aead_decrypt(input: Arc<ReadStream>, key: Vec<u8>) -> Result<ResourceStream, BcvError> {
    Ok(resource_stream(core::Runtime::global().aead_decrypt(input.take()?, &key)?))
}

/// Streams the file at `path`: the file resource and its content stream.
/// Errors: `Io` naming the path if it cannot be opened; `Closed(RUNTIME_SHUTDOWN)`.
#[uniffi::export]
pub fn read_file(path: String) -> Result<ResourceStream, BcvError> {
    Ok(resource_stream(core::Runtime::global().read_file(path)?))
}

/// Resolves once a file written through `writeFile` is complete and synced.
///
/// Ownership: as for every object; releasing it does not affect the file.
#[derive(uniffi::Object)]
pub struct FileDone {
    inner: Arc<core::FutureReader<Result<u64, String>>>,
}

impl HasNode for FileDone {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

fn file_result(r: Result<Result<u64, String>, core::Error>) -> Result<u64, BcvError> {
    match r {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(message)) => Err(BcvError::Io { message }),
        Err(e) => Err(e.into()),
    }
}

#[uniffi::export]
impl FileDone {
    /// The number of bytes written, once the writer finished and the file was synced.
    /// Errors: `Io` when writing failed or the writer ended without `finish()` (the file is partial);
    /// `Closed` when the file was closed; `AlreadyTaken` on a second successful wait; `Cancelled`.
    #[uniffi::method(default(cancel = None))]
    pub async fn wait(&self, cancel: Option<Arc<CancelToken>>) -> Result<u64, BcvError> {
        let inner = self.inner.clone();
        cancellable(cancel, async move { file_result(inner.wait().await) }).await
    }
}

#[uniffi::export]
impl FileDone {
    /// Blocking form of `wait`; `Timeout` after `timeout_ms` (nothing lost).
    #[uniffi::method(default(timeout_ms = None))]
    pub fn wait_blocking(&self, timeout_ms: Option<u64>) -> Result<u64, BcvError> {
        file_result(self.inner.wait_blocking(opt_millis(timeout_ms)))
    }
}

node_methods!(FileDone);

/// A file being written from a stream.
#[derive(uniffi::Record)]
pub struct FileSink {
    /// The file resource; `close()` stops writing and leaves the file partial.
    pub resource: Arc<Resource>,
    /// Write the content here, then call `finish()`.
    pub writer: Arc<WriteStream>,
    /// Resolves to the byte count once the file is complete and synced.
    pub done: Arc<FileDone>,
}

/// Creates (or truncates) the file at `path` and returns a sink that writes what the stream carries.
/// A writer released or closed without `finish()` leaves the file partial and `done` fails.
/// Errors: `Io` naming the path if it cannot be created; `Closed(RUNTIME_SHUTDOWN)`.
#[uniffi::export]
pub fn write_file(path: String) -> Result<FileSink, BcvError> {
    let sink = core::Runtime::global().write_file(path)?;
    Ok(FileSink {
        resource: Resource::wrap(sink.resource),
        writer: WriteStream::wrap(sink.writer),
        done: Arc::new(FileDone { inner: Arc::new(sink.done) }),
    })
}
