//! The on-storage container format (CBS manifest version 4): `manifest.bcv`, block ids and the delete list.

mod block_id;
mod manifest;

pub use block_id::{BlockId, MAX_NAME_BYTES, MD5_NAME_BYTES, MIN_NAME_BYTES};
pub use manifest::{
    BlockList, DatabaseEntry, DeletedBlock, MANIFEST_VERSION, Manifest, ManifestError, julian_ms_from_unix_ms,
    julian_ms_now, unix_ms_from_julian_ms,
};
