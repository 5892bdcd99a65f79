//! One static library for Swift and C: `libbcv_all.a` carries both the C ABI (`bcv_*`, from `bcv-ffi`)
//! and the UniFFI surface (`uniffi_bcv_uniffi_*`, from `bcv-uniffi`).
//!
//! Two Rust staticlibs must never be linked into one binary: each carries its own copy of std, and the
//! linker reports hundreds of duplicate symbols (BINDINGS.md P7). Re-exporting both crates from this one
//! crate puts a single std and both symbol sets into one archive.

pub use bcv as c_api;
pub use bcv_uniffi as uniffi_api;
