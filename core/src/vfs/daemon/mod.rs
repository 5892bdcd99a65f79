//! Multi-process mode: `bcv daemon` owns a cache directory and several read-only processes share its blocks and
//! its one size limit.
//!
//! A [`BlockVfs`](crate::vfs::BlockVfs) created on a directory whose daemon is listening on `DIR/daemon.sock`
//! becomes its client: it attaches containers through the daemon (which fetches each manifest with the
//! client's credentials: its proof of access), asks it to fetch and pin the blocks it reads, and then reads
//! them straight from the shared slot file, so a warm read costs no round trip. Such a VFS is read-only
//! (writes, uploads and container changes fail with [`VfsError::ReadOnly`](crate::vfs::VfsError::ReadOnly)).
//! Polls go through the daemon, which polls only when a client asks and never writes to cloud storage.
//!
//! Secure containers: blocks stay sealed in the shared cache. A client that has the key uses it; one that
//! does not gets it from the daemon (configured with [`DaemonConfig::keys`]) only after its attach proved
//! access. The socket is created with mode 0600: only processes of the daemon's user connect.
//!
//! A client whose daemon stops or restarts gets [`VfsError::DaemonGone`](crate::vfs::VfsError::DaemonGone) once;
//! its next call connects to the new daemon and attaches its containers again.

mod client;
mod server;
mod wire;

pub(crate) use client::DaemonClient;
pub use server::{Daemon, DaemonConfig, DaemonStats};

/// The daemon's socket inside its cache directory.
pub const SOCKET_FILE: &str = "daemon.sock";
