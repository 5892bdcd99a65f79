//! The error, close-reason and state types shared by every object, mirrored from `bcv_core::handle`.

use std::time::Duration;

use bcv_core::handle as core;

/// Why a node was closed. Mirrors `bcv_core::handle::CloseReason` (the C ABI's `BCV_REASON_*` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum CloseReason {
    /// This handle was closed by its owner (`close()`), or it was consumed by a transformer.
    SelfClosed,
    /// A parent was closed and the close cascaded to this dependent child.
    Parent,
    /// The other end of a stream or future was released or closed without finishing.
    PeerDropped,
    /// The runtime was shut down (`shutdown(timeoutMs:)`).
    RuntimeShutdown,
    /// An operation was in flight when the last handle to its node was released.
    HandleReleased,
    /// An error carried through a pipe or transformer; `upstream` holds the inner reason.
    Upstream,
    /// The scope that owned this node exited.
    ScopeExited,
    /// A sibling needed to produce this result was closed.
    Abandoned,
}

impl From<core::CloseReason> for CloseReason {
    fn from(r: core::CloseReason) -> CloseReason {
        match r {
            core::CloseReason::SelfClosed => CloseReason::SelfClosed,
            core::CloseReason::Parent => CloseReason::Parent,
            core::CloseReason::PeerDropped => CloseReason::PeerDropped,
            core::CloseReason::RuntimeShutdown => CloseReason::RuntimeShutdown,
            core::CloseReason::HandleReleased => CloseReason::HandleReleased,
            core::CloseReason::Upstream => CloseReason::Upstream,
            core::CloseReason::ScopeExited => CloseReason::ScopeExited,
            core::CloseReason::Abandoned => CloseReason::Abandoned,
        }
    }
}

impl From<CloseReason> for core::CloseReason {
    fn from(r: CloseReason) -> core::CloseReason {
        match r {
            CloseReason::SelfClosed => core::CloseReason::SelfClosed,
            CloseReason::Parent => core::CloseReason::Parent,
            CloseReason::PeerDropped => core::CloseReason::PeerDropped,
            CloseReason::RuntimeShutdown => core::CloseReason::RuntimeShutdown,
            CloseReason::HandleReleased => core::CloseReason::HandleReleased,
            CloseReason::Upstream => core::CloseReason::Upstream,
            CloseReason::ScopeExited => core::CloseReason::ScopeExited,
            CloseReason::Abandoned => core::CloseReason::Abandoned,
        }
    }
}

/// How a node ended: its close reason and, for `Upstream`, the reason the upstream stage ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ClosedInfo {
    /// Why the node was closed.
    pub reason: CloseReason,
    /// For `Upstream`, the root reason upstream; `nil` otherwise.
    pub upstream: Option<CloseReason>,
}

impl From<core::Closed> for ClosedInfo {
    fn from(c: core::Closed) -> ClosedInfo {
        ClosedInfo { reason: c.reason.into(), upstream: c.upstream.map(Into::into) }
    }
}

/// The lifecycle state of a node (LIFETIMES.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum NodeState {
    /// Working; at least one handle is alive.
    Open,
    /// Working, but only children or in-flight operations hold it.
    Orphaned,
    /// `close()` was called; in-flight operations are being cancelled.
    Closing,
    /// Closed and its OS resources released.
    Closed,
}

impl From<core::NodeState> for NodeState {
    fn from(s: core::NodeState) -> NodeState {
        match s {
            core::NodeState::Open => NodeState::Open,
            core::NodeState::Orphaned => NodeState::Orphaned,
            core::NodeState::Closing => NodeState::Closing,
            core::NodeState::Closed => NodeState::Closed,
        }
    }
}

/// Every error a bcv call can throw. In Swift: `BcvError`, an `Error` enum with associated values.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum BcvError {
    /// The node (or the stream it belongs to) is closed: the data was cut short, never complete.
    /// `upstream` is set when `reason` is `Upstream`.
    #[error("closed: {reason:?}{}", upstream.map(|u| format!("({u:?})")).unwrap_or_default())]
    Closed {
        /// Why the node was closed.
        reason: CloseReason,
        /// For `Upstream`, the reason the upstream stage ended with.
        upstream: Option<CloseReason>,
    },
    /// Another read (or write) is already in progress on this end, or the handle is in use by an
    /// operation and cannot be consumed right now.
    #[error("busy: {message}")]
    Busy {
        /// What was busy.
        message: String,
    },
    /// The time limit passed; nothing was lost and the call may be retried.
    #[error("timed out: {message}")]
    Timeout {
        /// What timed out (for `shutdown`, the ids of the nodes still busy).
        message: String,
    },
    /// Refused because waiting on this thread could deadlock (an SDK callback or runtime thread).
    #[error("waiting here could deadlock")]
    WouldDeadlock,
    /// Encrypted input failed authentication: wrong key, tampered or truncated ciphertext. For a secure
    /// container also: a bad marker (`bcv_secure.json`), a cipher of another name, or a failing cipher; the
    /// message names the container and the object.
    #[error("authentication failed: {message}")]
    Authentication {
        /// Details.
        message: String,
    },
    /// Compressed or framed input is malformed.
    #[error("corrupt input: {message}")]
    Corrupt {
        /// Details.
        message: String,
    },
    /// An operating-system I/O error, naming the path or address concerned.
    #[error("i/o error: {message}")]
    Io {
        /// What was being done and the OS error.
        message: String,
    },
    /// The caller passed an invalid argument (bad key length, bad address, write after finish, …).
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// Details.
        message: String,
    },
    /// A child that can be taken only once (a socket's receive stream, a future's value) was taken.
    #[error("already taken: {message}")]
    AlreadyTaken {
        /// What was already taken.
        message: String,
    },
    /// The call was cancelled through its `CancelToken` (the Swift layer turns this into
    /// `CancellationError`). The stream or future is left open and nothing was lost.
    #[error("cancelled")]
    Cancelled,
    /// Another client changed the container object (manifest, `bcv_kv`) since this client read it. Nothing
    /// was overwritten and no local change was lost: poll (or revert) and retry.
    #[error("conflict: {message}")]
    Conflict {
        /// Which container and object.
        message: String,
    },
    /// A container, database, alias or object does not exist.
    #[error("not found: {message}")]
    NotFound {
        /// What is missing, and where.
        message: String,
    },
    /// It exists already (an alias in use, a database or container name taken).
    #[error("already exists: {message}")]
    Exists {
        /// What exists.
        message: String,
    },
    /// The object store failed (network, server error, refused credentials), after retries.
    #[error("storage error: {message}")]
    Storage {
        /// The container, object, operation and cause.
        message: String,
    },
    /// The cache directory is owned by another process.
    #[error("cache busy: {message}")]
    CacheBusy {
        /// The directory and its owner.
        message: String,
    },
    /// A secure container cannot be used as asked: it is secure and no key or cipher was given, a key was
    /// given for a plaintext container, or the daemon has no key for it. (A wrong key or tampered data is
    /// `Authentication`, naming the object, e.g. `bcv_secure.json`.)
    #[error("secure container: {message}")]
    Secure {
        /// The container and what is wrong.
        message: String,
    },
    /// This VFS is a read-only client of the daemon owning its cache directory: writing, uploading or
    /// changing a container is refused.
    #[error("read-only: {message}")]
    ReadOnly {
        /// What was refused, and the daemon's directory.
        message: String,
    },
    /// The daemon this VFS is a client of went away (stopped, crashed, restarted). Nothing is retried
    /// automatically: the next call connects again (to a new daemon) and attaches the containers again.
    #[error("daemon gone: {message}")]
    DaemonGone {
        /// The daemon's directory and what the connection reported.
        message: String,
    },
    /// The daemon refused or failed a request (e.g. its fetch of the manifest with this client's access).
    #[error("daemon error: {message}")]
    Daemon {
        /// The daemon's directory and message.
        message: String,
    },
    /// The container's lease is held by another client (`holder`) until `untilUnixMs`: obtaining it, or a
    /// manifest write (upload, copy, delete) by a client that does not hold it, is refused. Nothing was written.
    #[error("lease held: {message}")]
    LeaseHeld {
        /// The holder's description, as it gave it when obtaining the lease.
        holder: String,
        /// The expiry in Unix milliseconds (the holder's clock).
        until_unix_ms: i64,
        /// The generation of the holding found.
        generation: u64,
        /// The whole message: container, holder, expiry and time left.
        message: String,
    },
    /// This client held the lease but no longer does (expired, taken over, or the token names no current
    /// holding); what needed it was not done.
    #[error("lease lost: {message}")]
    LeaseLost {
        /// The container and what happened.
        message: String,
    },
    /// A Proxy-Wasm module was refused: not wasm, no ABI marker, no allocator, or imports the host lacks.
    #[error("invalid module: {message}")]
    InvalidModule {
        /// The module's name and what is wrong.
        message: String,
    },
    /// A Proxy-Wasm plugin was not accepted: its canary or its real `on_vm_start`/`on_configure` failed
    /// or returned false. The VM keeps working.
    #[error("plugin rejected: {message}")]
    PluginRejected {
        /// The plugin's name.
        plugin: String,
        /// The whole message, with the reason.
        message: String,
    },
    /// A Proxy-Wasm VM could not start, or has failed (a trap, its CPU deadline, its memory cap).
    #[error("vm failed: {message}")]
    VmFailed {
        /// The VM id and the failure.
        message: String,
    },
    /// The Proxy-Wasm context has finished (`finish()` ran): it takes no more calls.
    #[error("context finished: {message}")]
    ContextFinished {
        /// The context and what was refused.
        message: String,
    },
    /// A Proxy-Wasm service callback called back into the VM that is running it; refused instead of
    /// deadlocking.
    #[error("reentrant call: {message}")]
    Reentrant {
        /// The VM concerned.
        message: String,
    },
    /// SQLite reported an error; `code` is its extended result code (e.g. 19 constraint, 517 busy snapshot).
    #[error("sqlite error {code}: {message}")]
    Sqlite {
        /// SQLite's extended result code.
        code: i32,
        /// SQLite's message, with the I/O cause behind an SQLITE_IOERR.
        message: String,
    },
}

impl From<bcv_core::vfs::VfsError> for BcvError {
    fn from(e: bcv_core::vfs::VfsError) -> BcvError {
        use bcv_core::vfs::VfsError as V;
        let message = e.to_string();
        match e {
            V::Conflict { .. } => BcvError::Conflict { message },
            V::NotFound { .. } | V::NoSuchDatabase { .. } | V::NoSuchAlias { .. } => BcvError::NotFound { message },
            V::AlreadyExists { .. } | V::DatabaseExists { .. } | V::AliasInUse { .. } => BcvError::Exists { message },
            V::Store { .. } | V::ConditionalWritesUnsupported { .. } | V::ShortRead { .. } => {
                BcvError::Storage { message }
            }
            V::Manifest { .. } | V::CorruptBlock { .. } | V::LeaseObject { .. } => BcvError::Corrupt { message },
            V::Crypto { .. } => BcvError::Authentication { message },
            V::Secure { .. } => BcvError::Secure { message },
            V::ReadOnly { .. } => BcvError::ReadOnly { message },
            V::DaemonGone { .. } => BcvError::DaemonGone { message },
            V::Daemon { .. } => BcvError::Daemon { message },
            V::LeaseHeld { holder, until_unix_ms, generation, .. } => {
                BcvError::LeaseHeld { holder, until_unix_ms, generation, message }
            }
            V::LeaseLost { .. } => BcvError::LeaseLost { message },
            V::CacheBusy { .. } => BcvError::CacheBusy { message },
            V::Busy { .. } => BcvError::Busy { message },
            V::Io { .. } => BcvError::Io { message },
            V::Sqlite { source, .. } => {
                if source.code & 0xff == 5 && source.code >> 8 == 2 {
                    // SQLITE_BUSY_SNAPSHOT: a bcv_kv commit lost a race.
                    BcvError::Conflict { message }
                } else {
                    BcvError::Sqlite { code: source.code, message }
                }
            }
            V::Config { .. } | V::InvalidArgument(_) => BcvError::InvalidArgument { message },
            V::Closed(_) => BcvError::Closed { reason: CloseReason::SelfClosed, upstream: None },
            V::Runtime(inner) => inner.into(),
            _ => BcvError::Io { message },
        }
    }
}

impl From<core::Closed> for BcvError {
    fn from(c: core::Closed) -> BcvError {
        BcvError::Closed { reason: c.reason.into(), upstream: c.upstream.map(Into::into) }
    }
}

impl From<core::Error> for BcvError {
    fn from(e: core::Error) -> BcvError {
        match e {
            core::Error::Closed(c) => c.into(),
            core::Error::Busy(what) => {
                BcvError::Busy { message: format!("another operation is in progress on this {what}") }
            }
            core::Error::Timeout(d) => BcvError::Timeout { message: format!("after {d:?}") },
            core::Error::WouldDeadlock => BcvError::WouldDeadlock,
            core::Error::AlreadyTaken(what) => BcvError::AlreadyTaken { message: what.to_string() },
            core::Error::InvalidArgument(m) => BcvError::InvalidArgument { message: m },
            e @ core::Error::Io { .. } => BcvError::Io { message: e.to_string() },
            core::Error::Authentication(m) => BcvError::Authentication { message: m },
            core::Error::Corrupt(m) => BcvError::Corrupt { message: m },
            // `core::Error` is non-exhaustive: a kind added later still reaches Swift with its message.
            other => BcvError::Io { message: other.to_string() },
        }
    }
}

impl From<core::WriteError> for BcvError {
    fn from(e: core::WriteError) -> BcvError {
        e.error.into()
    }
}

impl From<core::CloseWaitError> for BcvError {
    fn from(e: core::CloseWaitError) -> BcvError {
        match e {
            core::CloseWaitError::Timeout => BcvError::Timeout { message: "close did not complete in time".into() },
            core::CloseWaitError::WouldDeadlock => BcvError::WouldDeadlock,
        }
    }
}

impl From<core::ShutdownError> for BcvError {
    fn from(e: core::ShutdownError) -> BcvError {
        match e {
            core::ShutdownError::Timeout { stuck_node_ids } => {
                BcvError::Timeout { message: format!("shutdown: nodes still busy: {stuck_node_ids:?}") }
            }
            core::ShutdownError::WouldDeadlock => BcvError::WouldDeadlock,
        }
    }
}

/// The error of a handle that was consumed (moved into a transformer): `Closed{SELF}` (LIFETIMES.md O1).
pub(crate) fn consumed() -> BcvError {
    BcvError::Closed { reason: CloseReason::SelfClosed, upstream: None }
}

/// A millisecond count from Swift as a `Duration`.
pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// An optional millisecond time limit (`nil` = wait as long as it takes).
pub(crate) fn opt_millis(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}
