//! bcv for Swift: UniFFI objects that adapt `bcv_core::handle` (LIFETIMES.md §4.5). No logic lives here:
//! every call forwards to core on the process-wide [`Runtime::global`](bcv_core::handle::Runtime::global).
//!
//! Ownership model: every object is an `Arc` shared with Swift; the Swift class owns one strong count and
//! releases it in `deinit` (O(1), any thread, never blocks), which releases the core handle (option 2).
//! `close()` is the forced, cascading end; `closeAndWait` waits boundedly for quiescence.
//!
//! Async calls need no particular executor on the polling side: reads, writes and waits are
//! waker-based, and what needs tokio (the connect itself, `closeAndWait`'s timer) runs on core's own
//! executor while the exported future only awaits it. Swift task cancellation is not forwarded to Rust
//! futures by UniFFI, so cancellable calls take a [`CancelToken`](node::CancelToken).
//!
//! The Proxy-Wasm host (`bcv_core::proxy`, feature `proxy`) is in `src/proxy.rs`: `ProxyHost` → `ProxyVm` →
//! `ProxyPlugin` → `ProxyHttpContext` / `ProxyTcpContext`, with the application's services as one foreign
//! trait ([`ProxyServicesCallback`]).

mod daemon;
mod error;
mod future;
mod lease;
mod node;
mod proxy;
mod resource;
mod scope;
mod secure;
mod stream;
mod tcp;
mod vfs;

use bcv_core::handle as core;

pub use daemon::{CacheStats, CacheUsage, Daemon, DaemonStats};
pub use error::{BcvError, CloseReason, ClosedInfo, NodeState};
pub use future::{FuturePair, FutureReader, FutureWriter, future_pair};
pub use lease::{Lease, lease_expires_in_ms};
pub use node::CancelToken;
pub use proxy::{
    ProxyAction, ProxyCalloutReply, ProxyFailure, ProxyFailureKind, ProxyGrpcCallout, ProxyHeader, ProxyHost,
    ProxyHostConfig, ProxyHttpCallout, ProxyHttpContext, ProxyLocalResponse, ProxyLogLevel, ProxyLogRecord,
    ProxyMetric, ProxyMetricKind, ProxyModule, ProxyPeer, ProxyPlugin, ProxyPluginConfig, ProxyPropertyRequest,
    ProxyServiceError, ProxyServicesCallback, ProxySharedValue, ProxyStream, ProxyTcpContext, ProxyVm, ProxyVmConfig,
};
pub use resource::{
    FileDone, FileSink, Resource, ResourceStream, aead_decrypt, aead_encrypt, gzip_compress, gzip_decompress,
    read_file, write_file,
};
pub use scope::Scope;
pub use secure::{CipherCallback, CipherError, KeyProviderCallback, Keyring, SecureOptions, generate_key};
pub use stream::{
    PipeEnds, ReadStream, StreamEvent, StreamFailure, StreamHandler, WriteStream, pipe, stream_from_bytes,
};
pub use tcp::{TcpListener, TcpSocket, tcp_connect, tcp_listen};
pub use vfs::{
    CleanupReport, Container, Database, DatabaseInfo, DatabaseStatus, JobOutcome, JobProgress, JobStatus, PollReport,
    PrefetchReport, QueryResult, SqlValue, Statement, UploadReport, UploadedDatabase, Vfs, VfsJob,
};

uniffi::setup_scaffolding!();

/// The runtime's counters (`bcv_diagnostics()`).
#[derive(Debug, uniffi::Record)]
pub struct Diagnostics {
    /// Nodes created and not yet torn down.
    pub live_nodes: u64,
    /// Nodes created since the runtime started.
    pub created_nodes: u64,
    /// Strict-mode violations by kind, V1…V6 (index 0 is V1).
    pub violations: Vec<u64>,
}

/// A snapshot of the live-node count, creations and strict-mode counters.
#[uniffi::export]
pub fn diagnostics() -> Diagnostics {
    let d = core::Runtime::global().diagnostics();
    Diagnostics { live_nodes: d.live_nodes as u64, created_nodes: d.created_nodes, violations: d.violations.to_vec() }
}

/// Waits until every release made so far has been processed by the reaper (tests, diagnostics).
/// Errors: `WouldDeadlock` on the reaper thread.
#[uniffi::export]
pub fn reaper_flush() -> Result<(), BcvError> {
    Ok(core::Runtime::global().reaper_flush()?)
}

/// Waits until the live-node count is 0 (flushing the reaper) or `timeout_ms` passes; returns the final
/// count. Blocks the calling thread.
#[uniffi::export]
pub fn wait_idle(timeout_ms: u64) -> u64 {
    core::Runtime::global().wait_idle(error::millis(timeout_ms)) as u64
}

/// Shuts the process-wide runtime down: closes every node with `RUNTIME_SHUTDOWN`, cancels in-flight
/// operations and waits until no node is live or `timeout_ms` passes. Afterwards releases only free
/// memory and every call throws `Closed(RUNTIME_SHUTDOWN)`; the runtime cannot be restarted.
/// Idempotent. Blocks the calling thread. Errors: `Timeout` naming the stuck node ids; `WouldDeadlock`
/// on an SDK thread.
#[uniffi::export]
pub fn shutdown(timeout_ms: u64) -> Result<(), BcvError> {
    Ok(core::Runtime::global().shutdown(error::millis(timeout_ms))?)
}

/// True once `shutdown` has started.
#[uniffi::export]
pub fn is_shut_down() -> bool {
    core::Runtime::global().is_shut_down()
}
