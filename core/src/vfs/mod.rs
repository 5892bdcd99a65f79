//! The block-cache VFS: SQLite databases stored as immutable blocks plus a manifest in a cloud container,
//! format-compatible with SQLite's Cloud Backed SQLite (CBS), read lazily through a bounded local cache.
//!
//! * [`container`] — the on-storage format: `manifest.bcv`, block ids, the delete list.
//! * [`store`] — object stores (local directory, memory, S3, Azure, GCS) behind one container-level API, with
//!   compare-and-swap, metering and fault injection.
//! * [`BlockVfs`] — a cache directory with attached containers, registered as an SQLite VFS serving
//!   `/ALIAS/DB`; poll, upload, revert, copy, delete.
//! * [`ContainerTools`] — the same container operations without a cache: create, destroy, upload and download
//!   a database file, list, cleanup.
//! * Leases ([`container::lease`]) — one writer at a time per container: [`BlockVfs::lease_obtain`] /
//!   [`ContainerTools::lease_obtain`] and friends, enforced before every manifest write.

mod attached;
mod cache;
mod connection;
pub mod container;
mod crypto;
mod daemon;
mod database;
mod error;
mod fs;
mod job;
mod kv;
mod runtime;
mod sqlite;
pub mod store;
mod tools;

pub use attached::{DatabaseStatus, KV_OBJECT, MANIFEST_OBJECT, PollReport, UploadOptions, UploadReport};
pub use cache::{CHUNK_SIZE, CacheStats, CacheUsage, DEFAULT_CACHE_SIZE};
pub use connection::{ConnectOptions, Connection, Statement, Value};
pub use container::{LEASE_OBJECT, LeaseInfo, LeaseOptions};
pub use crypto::{
    AesGcmCipher, BlockCipher, CipherError, KEY_LEN, KeyProvider, Keyring, SEAL_OVERHEAD, SECURE_OBJECT, SecureMarker,
    SecureOptions,
};
pub use daemon::{Daemon, DaemonConfig, DaemonStats, SOCKET_FILE as DAEMON_SOCKET_FILE};
pub use database::PrefetchReport;
pub use error::{VfsError, VfsResult};
pub use fs::{AttachOptions, BlockVfs, VfsConfig};
pub use job::{JobOutcome, JobStatus, VfsJob};
pub use sqlite::{SqliteError, last_error};
pub use tools::{
    CleanupReport, ContainerTools, DEFAULT_BLOCK_SIZE, DEFAULT_NAME_BYTES, DatabaseInfo, Progress, list_of,
    manifest_summary,
};
