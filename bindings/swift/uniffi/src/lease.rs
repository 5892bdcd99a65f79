//! The single-writer lease of a container, as Swift sees it: the `Lease` record. The lease calls themselves
//! are methods of `Vfs` (by alias) and `Container` (vfs.rs); all of the protocol is in core.

use std::time::Duration;

use bcv_core::vfs as cv;

/// A lease as recorded in the container: who holds it, which holding it is, and until when. Plain data:
/// having a `Lease` value does not mean holding the lease. The `BCV` module adds `acquired`/`expires` as
/// `Date`, `expiresIn` and `isExpired`.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Lease {
    /// The holder's description, as given to obtain.
    pub holder: String,
    /// Names this holding (new at each obtain, kept by extends); lets another process adopt, extend or
    /// release it. Not a secret.
    pub token: String,
    /// Grows by one at each change of holder.
    pub generation: u64,
    /// When this holding began, Unix milliseconds (the holder's clock).
    pub acquired_unix_ms: i64,
    /// When it expires unless extended, Unix milliseconds (the holder's clock).
    pub expires_unix_ms: i64,
    /// `acquired_unix_ms` in RFC 3339 UTC.
    pub acquired_utc: String,
    /// `expires_unix_ms` in RFC 3339 UTC.
    pub expires_utc: String,
}

impl From<cv::LeaseInfo> for Lease {
    fn from(l: cv::LeaseInfo) -> Lease {
        Lease {
            acquired_utc: l.acquired_utc(),
            expires_utc: l.expires_utc(),
            holder: l.holder,
            token: l.token,
            generation: l.generation,
            acquired_unix_ms: l.acquired_unix_ms,
            expires_unix_ms: l.expires_unix_ms,
        }
    }
}

/// Time left on `lease` by this machine's clock in milliseconds, or `nil` once its expiry has passed
/// (core's `LeaseInfo::expires_in`).
#[uniffi::export]
pub fn lease_expires_in_ms(lease: Lease) -> Option<u64> {
    let info = cv::LeaseInfo {
        holder: lease.holder,
        token: lease.token,
        generation: lease.generation,
        acquired_unix_ms: lease.acquired_unix_ms,
        expires_unix_ms: lease.expires_unix_ms,
    };
    info.expires_in().map(|d| d.as_millis().min(u64::MAX as u128) as u64)
}

/// Core's lease options from optional millisecond values (`nil`: core's default).
pub(crate) fn lease_options(max_skew_ms: Option<u64>, safety_margin_ms: Option<u64>) -> cv::LeaseOptions {
    let mut options = cv::LeaseOptions::default();
    if let Some(ms) = max_skew_ms {
        options.max_skew = Duration::from_millis(ms);
    }
    if let Some(ms) = safety_margin_ms {
        options.safety_margin = Duration::from_millis(ms);
    }
    options
}
