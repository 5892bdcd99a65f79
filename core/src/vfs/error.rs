//! The one error type of the block-cache VFS: every variant names the object it concerns and keeps the cause.

use std::path::PathBuf;

use super::container::ManifestError;

/// Result alias for the block-cache VFS.
pub type VfsResult<T> = std::result::Result<T, VfsError>;

/// What went wrong in the block-cache VFS, naming the container, object or path concerned.
///
/// Variants that come from the object store keep the `object_store` error as their source, so the remote status
/// (HTTP code, precondition, not-found) stays visible through [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VfsError {
    /// `manifest.bcv` of a container could not be parsed or is inconsistent.
    #[error("container {container}: manifest.bcv: {source}")]
    Manifest {
        /// The container (store URL) whose manifest is bad.
        container: String,
        /// What exactly is wrong, with the byte offset where known.
        #[source]
        source: ManifestError,
    },
    /// A store request failed for a reason other than the ones below (network, 5xx after retries, auth).
    #[error("container {container}: {op} {object} failed: {source}")]
    Store {
        /// The container (store URL).
        container: String,
        /// The object name inside the container.
        object: String,
        /// The operation: "GET", "PUT", "DELETE", "LIST", "HEAD".
        op: &'static str,
        /// The store's error, with the remote status.
        #[source]
        source: Box<object_store::Error>,
    },
    /// The object does not exist.
    #[error("container {container}: object {object} does not exist")]
    NotFound {
        /// The container (store URL).
        container: String,
        /// The missing object.
        object: String,
    },
    /// A conditional write lost: the object changed since this client read it (someone else uploaded).
    #[error("container {container}: {object} was changed by another client since it was read; poll and retry")]
    Conflict {
        /// The container (store URL).
        container: String,
        /// The object whose version no longer matches.
        object: String,
    },
    /// A create-if-absent write found the object already there.
    #[error("container {container}: {object} already exists")]
    AlreadyExists {
        /// The container (store URL).
        container: String,
        /// The object that exists.
        object: String,
    },
    /// The store does not honour conditional writes, so bcv refuses to write to it.
    #[error("container {container}: the store does not honour conditional writes ({detail}); refusing to write")]
    ConditionalWritesUnsupported {
        /// The container (store URL).
        container: String,
        /// Which check failed.
        detail: String,
    },
    /// The container's lease is held by another client and has not expired (by more than the clock-skew
    /// margin): obtaining it, or a manifest write by a client that does not hold it, is refused. Nothing was
    /// written. Retry after `until`, or ask the holder to release it.
    #[error("container {container}: the lease is held by {holder:?} until {until} ({remaining})")]
    LeaseHeld {
        /// The container (store URL).
        container: String,
        /// The holder's description, as it gave it when obtaining the lease.
        holder: String,
        /// The expiry, RFC 3339 UTC (the holder's clock).
        until: String,
        /// The expiry in Unix milliseconds.
        until_unix_ms: i64,
        /// The generation of the holding found (grows at each change of holder).
        generation: u64,
        /// How long until then, in words ("in 25 s", or how long until it can be taken over).
        remaining: String,
    },
    /// This client held the container's lease but no longer does (it expired, or another client took it over
    /// after it expired, or the token given names no current holding). The client has forgotten it; whatever
    /// needed the lease (a manifest write) was not done.
    #[error("container {container}: this client does not hold the lease any more: {reason}")]
    LeaseLost {
        /// The container (store URL).
        container: String,
        /// What happened, naming the new holder when there is one.
        reason: String,
    },
    /// The lease object `bcv_lease.json` cannot be used: not a lease record, or written by a newer bcv.
    #[error("container {container}: bcv_lease.json: {reason}")]
    LeaseObject {
        /// The container (store URL).
        container: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A read returned fewer (or more) bytes than asked for, after retries.
    #[error("container {container}: {object}: read {got} bytes of range {start}..{end}")]
    ShortRead {
        /// The container (store URL).
        container: String,
        /// The object read.
        object: String,
        /// Range start.
        start: u64,
        /// Range end (exclusive).
        end: u64,
        /// Bytes received.
        got: u64,
    },
    /// A block object is not what the manifest says (wrong size).
    #[error("container {container}: block {object} is corrupt: {reason}")]
    CorruptBlock {
        /// The container (store URL).
        container: String,
        /// The block object name.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// A store URL or option is invalid.
    #[error("invalid store configuration {url:?}: {reason}")]
    Config {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cache directory is owned by another process (or another VFS in this one).
    #[error("cache directory {} is busy: owned by {holder}", dir.display())]
    CacheBusy {
        /// The cache directory.
        dir: PathBuf,
        /// Who holds it, as recorded in its lock file.
        holder: String,
    },
    /// A local file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "read", "write", "sync", "lock"…).
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An SQLite call made by bcv itself (cache index, bcv_kv) failed.
    #[error("{context}: {source}")]
    Sqlite {
        /// What bcv was doing.
        context: String,
        /// SQLite's error.
        #[source]
        source: super::sqlite::SqliteError,
    },
    /// No database of that name in the container.
    #[error("container {container}: no database named {database:?}")]
    NoSuchDatabase {
        /// The container (store URL or alias).
        container: String,
        /// The database name asked for.
        database: String,
    },
    /// A database of that name already exists in the container.
    #[error("container {container}: a database named {database:?} already exists")]
    DatabaseExists {
        /// The container.
        container: String,
        /// The name.
        database: String,
    },
    /// No container is attached under that alias.
    #[error("no container is attached as {alias:?}")]
    NoSuchAlias {
        /// The alias asked for.
        alias: String,
    },
    /// The alias is already taken.
    #[error("a container is already attached as {alias:?}")]
    AliasInUse {
        /// The alias.
        alias: String,
    },
    /// The operation needs the database or container to be idle (no open connection, no transaction).
    #[error("{what} is busy: {reason}")]
    Busy {
        /// The object concerned.
        what: String,
        /// Why it is busy.
        reason: String,
    },
    /// A secure container's data did not decrypt (a wrong key, tampered or truncated bytes), its marker is bad,
    /// or the cipher failed.
    #[error("container {container}: {object}: {reason}")]
    Crypto {
        /// The container (store URL).
        container: String,
        /// What failed: a block object and chunk, the marker, a cache slot, a local file sector.
        object: String,
        /// Why, e.g. "authentication failed (wrong key or tampered data)".
        reason: String,
    },
    /// The container is secure (its blocks are encrypted) and no key or cipher was given, or a key was given
    /// for a container that is not secure.
    #[error("container {container}: {reason}")]
    Secure {
        /// The container (store URL).
        container: String,
        /// What is wrong.
        reason: String,
    },
    /// The VFS is a read-only client of a daemon: it cannot write, upload or change containers.
    #[error("{what}: this VFS is a read-only client of the daemon owning {}", dir.display())]
    ReadOnly {
        /// What was refused.
        what: String,
        /// The daemon's cache directory.
        dir: PathBuf,
    },
    /// The daemon a client VFS uses went away (stopped, crashed, restarted); the next call reconnects.
    #[error("the daemon owning cache directory {} went away ({cause}); the next call reconnects", dir.display())]
    DaemonGone {
        /// The daemon's cache directory.
        dir: PathBuf,
        /// What the connection reported.
        cause: String,
    },
    /// The daemon refused or failed a request.
    #[error("daemon of {}: {message}", dir.display())]
    Daemon {
        /// The daemon's cache directory.
        dir: PathBuf,
        /// The daemon's message (naming the container and object where it applies).
        message: String,
    },
    /// An argument is invalid (a name too long, a block size out of range…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The object was closed.
    #[error("{0} is closed")]
    Closed(String),
    /// A background job failed; the message is its original error's (the original went to its first waiter).
    #[error("{0}")]
    Job(String),
    /// The handle runtime refused or timed out (blocking call on a runtime thread, runtime shut down).
    #[error(transparent)]
    Runtime(#[from] crate::handle::Error),
}

impl VfsError {
    /// A closed handle-runtime node, as a VFS error.
    pub(crate) fn node_closed(closed: crate::handle::Closed) -> Self {
        VfsError::Closed(closed.to_string())
    }

    /// Wraps a local I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VfsError::Io { op, path: path.into(), source }
    }

    /// Wraps an SQLite error with what bcv was doing.
    pub fn sqlite(context: impl Into<String>, source: super::sqlite::SqliteError) -> Self {
        VfsError::Sqlite { context: context.into(), source }
    }

    /// True when retrying after a poll can succeed (a lost conditional write).
    pub fn is_conflict(&self) -> bool {
        matches!(self, VfsError::Conflict { .. })
    }

    /// True for the lease errors that mean "another client has the container" ([`VfsError::LeaseHeld`]) or
    /// "this client's lease is gone" ([`VfsError::LeaseLost`]).
    pub fn is_lease_error(&self) -> bool {
        matches!(self, VfsError::LeaseHeld { .. } | VfsError::LeaseLost { .. })
    }
}
