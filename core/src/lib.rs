//! # bcv core
//!
//! All of bcv's logic lives in this crate; the C ABI (`bcv-ffi`), the language bindings and the CLI only
//! convert and adapt.
//!
//! * [`handle`] — the handle and stream runtime: reference-counted nodes with a forced, cascading
//!   `close()`, bounded byte streams with backpressure, futures, transformers (gzip, AES-256-GCM) and real
//!   I/O resources (files, TCP). Its contract is `shared/design/LIFETIMES.md`.

#![warn(missing_docs)]

pub mod handle;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod vfs;
