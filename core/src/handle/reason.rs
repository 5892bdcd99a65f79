//! Close reasons and the errors every handle operation can return.

use std::fmt;
use std::time::Duration;

/// Why a node was closed. The numeric values are part of the C ABI (`BCV_REASON_*`) and never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseReason {
    /// This handle was closed by its owner (`close()`).
    SelfClosed = 1,
    /// A parent was closed and the close cascaded to this dependent child.
    Parent = 2,
    /// The other end of a stream or future was released or closed without finishing.
    PeerDropped = 3,
    /// The runtime was shut down.
    RuntimeShutdown = 4,
    /// An operation was in flight when the last handle to its node was released.
    HandleReleased = 5,
    /// An error carried through a pipe or transformer; [`Closed::upstream`] holds the inner reason.
    Upstream = 6,
    /// The scope that owned this node exited.
    ScopeExited = 7,
    /// A sibling needed to produce this result was closed (e.g. trailers after the body was closed).
    Abandoned = 8,
}

impl CloseReason {
    /// The stable upper-case name used by every binding (`"PEER_DROPPED"`, …).
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::SelfClosed => "SELF",
            CloseReason::Parent => "PARENT",
            CloseReason::PeerDropped => "PEER_DROPPED",
            CloseReason::RuntimeShutdown => "RUNTIME_SHUTDOWN",
            CloseReason::HandleReleased => "HANDLE_RELEASED",
            CloseReason::Upstream => "UPSTREAM",
            CloseReason::ScopeExited => "SCOPE_EXITED",
            CloseReason::Abandoned => "ABANDONED",
        }
    }

    /// The reason with the given ABI value, if there is one.
    pub fn from_u32(v: u32) -> Option<CloseReason> {
        Some(match v {
            1 => CloseReason::SelfClosed,
            2 => CloseReason::Parent,
            3 => CloseReason::PeerDropped,
            4 => CloseReason::RuntimeShutdown,
            5 => CloseReason::HandleReleased,
            6 => CloseReason::Upstream,
            7 => CloseReason::ScopeExited,
            8 => CloseReason::Abandoned,
            _ => return None,
        })
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The typed end of a stream, future or resource that did not finish cleanly.
///
/// A reader that gets this error knows the data was cut short: bcv never reports such an ending as EOF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Why the node was closed.
    pub reason: CloseReason,
    /// For [`CloseReason::Upstream`], the reason the upstream stage ended with.
    pub upstream: Option<CloseReason>,
}

impl Closed {
    /// A `Closed` error with the given reason and no upstream cause.
    pub const fn new(reason: CloseReason) -> Closed {
        Closed { reason, upstream: None }
    }

    /// A `Closed{UPSTREAM(inner)}` error: an upstream stage ended with `inner`.
    pub fn upstream(inner: Closed) -> Closed {
        let root = if inner.reason == CloseReason::Upstream {
            inner.upstream.unwrap_or(CloseReason::PeerDropped)
        } else {
            inner.reason
        };
        Closed { reason: CloseReason::Upstream, upstream: Some(root) }
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.upstream {
            Some(inner) => write!(f, "closed: {}({inner})", self.reason),
            None => write!(f, "closed: {}", self.reason),
        }
    }
}

impl std::error::Error for Closed {}

/// The error of a handle operation (read, write, await, method call).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node (or the stream it belongs to) is closed; the data is cut short, never complete.
    #[error("{0}")]
    Closed(Closed),
    /// Another read (or write) is already in progress on this stream end.
    #[error("another operation is already in progress on this {0}")]
    Busy(&'static str),
    /// The operation did not complete within its time limit; nothing was lost and it may be retried.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The operation was refused on this thread because waiting here could deadlock.
    #[error("waiting here could deadlock (runtime, reaper or callback thread)")]
    WouldDeadlock,
    /// A child that can be taken only once (a socket's receive stream, a body) was already taken.
    #[error("{0} was already taken")]
    AlreadyTaken(&'static str),
    /// The caller passed an invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An operating-system I/O error, with the object it concerned.
    #[error("{context}: {source}")]
    Io {
        /// What was being done and on which object (path, address).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Encrypted input failed authentication: wrong key, tampered or truncated ciphertext.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// Compressed or framed input is malformed.
    #[error("corrupt input: {0}")]
    Corrupt(String),
}

impl Error {
    /// The close details when this is [`Error::Closed`].
    pub fn closed(&self) -> Option<Closed> {
        match self {
            Error::Closed(c) => Some(*c),
            _ => None,
        }
    }

    /// An [`Error::Io`] that names what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}

impl From<Closed> for Error {
    fn from(c: Closed) -> Error {
        Error::Closed(c)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        let kind = match &e {
            Error::Closed(_) => std::io::ErrorKind::BrokenPipe,
            Error::Busy(_) => std::io::ErrorKind::ResourceBusy,
            Error::Timeout(_) => std::io::ErrorKind::TimedOut,
            Error::WouldDeadlock => std::io::ErrorKind::Deadlock,
            Error::InvalidArgument(_) => std::io::ErrorKind::InvalidInput,
            Error::Io { source, .. } => source.kind(),
            Error::Authentication(_) | Error::Corrupt(_) => std::io::ErrorKind::InvalidData,
            Error::AlreadyTaken(_) => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// The result type of handle operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A write that ended early: the error plus how many bytes of the buffer were accepted before it.
#[derive(Debug, thiserror::Error)]
#[error("{error} (after accepting {accepted} bytes)")]
pub struct WriteError {
    /// Why the write stopped.
    #[source]
    pub error: Error,
    /// How many bytes of the caller's buffer were accepted into the stream before the error.
    pub accepted: usize,
}

/// The error of [`close_and_wait`](crate::handle::Node::close_and_wait).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseWaitError {
    /// The node did not become quiescent before the deadline; it is closed, and teardown goes on.
    #[error("close did not complete within the time limit")]
    Timeout,
    /// Waiting on this thread could deadlock (runtime worker, reaper or SDK callback thread).
    #[error("waiting here could deadlock (runtime, reaper or callback thread)")]
    WouldDeadlock,
}
