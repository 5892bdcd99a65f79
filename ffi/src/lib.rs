//! # The bcv C ABI
//!
//! `libbcv.a` / `libbcv.so` and the generated `include/bcv.h`. This crate holds no logic: it converts
//! handles, buffers, strings and errors between C and `bcv-core`, and catches every panic at the boundary.
//! One module per concept, mirrored by one section of the header: [`error`], [`handle`] (runtime, release,
//! close, scopes, diagnostics), [`stream`], [`future`], [`transform`], [`io`], [`tls`], [`http`], and the
//! block-cache VFS: [`store`] (store options, credentials callback, stores implemented in C), [`container`]
//! (container tools without a cache), [`vfs`] (the VFS and its background jobs), [`secure`] (key rings, key
//! providers and application ciphers of secure containers), [`lease`] (the single-writer lease lock) and
//! [`daemon`] (multi-process mode); and the Proxy-Wasm host: [`proxy`] (hosts, modules, VMs, plugins, HTTP
//! and TCP stream contexts, callouts answered by the application, properties, foreign functions, logs,
//! metrics and shared data).

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

pub mod error;
pub mod future;
pub mod handle;
pub mod http;
pub mod io;
pub mod stream;
mod table;
pub mod tls;
pub mod transform;

// The block-cache VFS: store options and callbacks, container tools, the VFS and its jobs.
pub mod container;
pub mod daemon;
pub mod lease;
pub mod secure;
pub mod store;
pub mod vfs;

// The Proxy-Wasm host: hosts, modules, VMs, plugins, stream contexts and the embedder's callbacks.
pub mod proxy;

/// The version of this C ABI. It changes whenever a signature or a constant changes incompatibly.
pub const BCV_ABI_VERSION: u32 = 5;
