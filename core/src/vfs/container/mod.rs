//! The on-storage container format (CBS manifest version 4): `manifest.bcv`, block ids and the delete list; and
//! bcv's own addition, the lease lock object `bcv_lease.json` ([`lease`], invisible to CBS).

mod block_id;
pub mod lease;
mod manifest;

pub use block_id::{BlockId, MAX_NAME_BYTES, MD5_NAME_BYTES, MIN_NAME_BYTES};
pub use lease::{
    DEFAULT_MAX_SKEW, DEFAULT_SAFETY_MARGIN, LEASE_FORMAT_VERSION, LEASE_OBJECT, LeaseInfo, LeaseOptions,
    MAX_HOLDER_BYTES, rfc3339_utc,
};
pub use manifest::{
    BlockList, DatabaseEntry, DeletedBlock, MANIFEST_VERSION, Manifest, ManifestError, julian_ms_from_unix_ms,
    julian_ms_now, unix_ms_from_julian_ms,
};
