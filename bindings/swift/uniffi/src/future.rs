//! One-shot futures of bytes: `futurePair()`, `FutureWriter`, `FutureReader`.

use std::sync::Arc;

use bcv_core::handle as core;

use crate::error::{BcvError, CloseReason, opt_millis};
use crate::node::{AsNode, CancelToken, HasNode, cancellable, node_methods};

/// The write end of a one-shot future of bytes.
///
/// Ownership: the Swift object holds one reference; releasing it without a value resolves the reader
/// with `Closed(PEER_DROPPED)`.
#[derive(uniffi::Object)]
pub struct FutureWriter {
    inner: Arc<core::FutureWriter<Vec<u8>>>,
}

impl HasNode for FutureWriter {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

#[uniffi::export]
impl FutureWriter {
    /// Delivers `value`. Errors: `Closed(PEER_DROPPED)` if the reader went away; `Closed(SELF)` if
    /// this end was closed or already written (the value stays with the caller).
    pub fn write(&self, value: Vec<u8>) -> Result<(), BcvError> {
        self.inner.write(value).map_err(|undelivered| undelivered.closed.into())
    }

    /// Resolves the reader with `Closed(reason)` instead of a value. No-op once resolved.
    pub fn fail(&self, reason: CloseReason) {
        self.inner.fail(core::Closed::new(reason.into()));
    }

    /// True once the reader went away.
    pub fn is_peer_gone(&self) -> bool {
        self.inner.is_peer_gone()
    }
}

node_methods!(FutureWriter);

/// The read end of a one-shot future of bytes.
///
/// Ownership: the Swift object holds one reference; releasing it makes the writer's `write` fail with
/// `Closed(PEER_DROPPED)`.
#[derive(uniffi::Object)]
pub struct FutureReader {
    inner: Arc<core::FutureReader<Vec<u8>>>,
}

impl HasNode for FutureReader {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

#[uniffi::export]
impl FutureReader {
    /// Waits for the value. Errors: `Closed` when the writer went away or either end was closed;
    /// `AlreadyTaken` after a successful wait; `Cancelled` (the future stays open).
    #[uniffi::method(default(cancel = None))]
    pub async fn wait(&self, cancel: Option<Arc<CancelToken>>) -> Result<Vec<u8>, BcvError> {
        let inner = self.inner.clone();
        cancellable(cancel, async move { Ok(inner.wait().await?) }).await
    }
}

#[uniffi::export]
impl FutureReader {
    /// Blocking form of `wait`; `Timeout` after `timeout_ms` (nothing lost).
    #[uniffi::method(default(timeout_ms = None))]
    pub fn wait_blocking(&self, timeout_ms: Option<u64>) -> Result<Vec<u8>, BcvError> {
        Ok(self.inner.wait_blocking(opt_millis(timeout_ms))?)
    }
}

#[uniffi::export]
impl FutureReader {
    /// True once a value or an error is available.
    pub fn is_resolved(&self) -> bool {
        self.inner.is_resolved()
    }
}

node_methods!(FutureReader);

/// Both ends of a new one-shot future.
#[derive(uniffi::Record)]
pub struct FuturePair {
    /// Delivers the value.
    pub writer: Arc<FutureWriter>,
    /// Waits for it.
    pub reader: Arc<FutureReader>,
}

/// Creates a one-shot future of bytes. Errors: `Closed(RUNTIME_SHUTDOWN)` after `shutdown`.
#[uniffi::export]
pub fn future_pair() -> Result<FuturePair, BcvError> {
    let (writer, reader) = core::Runtime::global().future::<Vec<u8>>()?;
    Ok(FuturePair {
        writer: Arc::new(FutureWriter { inner: Arc::new(writer) }),
        reader: Arc::new(FutureReader { inner: Arc::new(reader) }),
    })
}
