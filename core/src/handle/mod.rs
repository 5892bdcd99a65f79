//! The handle and stream runtime: every object handed to a user is a reference-counted node.
//!
//! The contract is `shared/design/LIFETIMES.md`: release (drop) gives up one reference and never blocks;
//! `close()` is a forced, cascading end; `close_and_wait` waits boundedly; strict mode only reports; a
//! stream that was cut short never looks complete.

mod future;
mod io;
mod lifecycle;
mod node;
mod reason;
mod resource;
mod runtime;
mod scope;
mod stream;
mod strict;
mod sync;
mod transform;

pub use future::{FutureReader, FutureWriter, Undelivered};
pub use io::{
    FileSink, HttpFields, HttpHead, HttpServer, IncomingMessage, SelfSigned, TcpListener, TcpSocket, TlsSession,
    self_signed_certificate,
};
pub use node::{Node, NodeKind, NodeState};
pub(crate) use node::{NodeCore, NodeHooks};
pub use reason::{CloseReason, CloseWaitError, Closed, Error, Result, WriteError};
pub use resource::Resource;
pub(crate) use resource::TaskResource;
pub use runtime::{CallbackScope, DiagnosticsSnapshot, Runtime, RuntimeBuilder, ShutdownError};
pub use scope::Scope;
pub use stream::{DEFAULT_CAPACITY, ReadStream, StreamEvent, WriteStream, pipe};
pub use strict::{
    Diagnostic, Diagnostics, StrictConfig, StrictHook, StrictLevel, StrictProfile, ViolationKind, take_pending,
};
pub use transform::{AEAD_CHUNK_SIZE, AEAD_HEADER_LEN, AEAD_KEY_LEN};
