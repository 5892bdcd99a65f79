//! The single-writer lease lock of a container (`bcv_lease.json`), on an attached container of a VFS and on
//! the container tools.
//!
//! While a client holds the lease, every other client's manifest write (upload, copy, delete) fails with
//! `BCV_E_LEASE_HELD`; the holder renews the lease before each of its own manifest writes and refuses to write
//! with less than the safety margin left (`BCV_E_LEASE_LOST`). Takeover of an expired lease waits for the
//! clock-skew allowance: clocks of clients must agree within `lease_max_skew_ms` (default 5 s).

use std::ffi::c_char;
use std::time::Duration;

use bcv_core::vfs::LeaseInfo;
use bcv_core::vfs::container::lease::MAX_HOLDER_BYTES;

use crate::container::{put_opt, with_tools};
use crate::error::*;
use crate::handle::bcv_handle_t;
use crate::io::c_str;
use crate::stream::try_status;
use crate::vfs::with_vfs;

/// Bytes of `bcv_lease_t.holder`: the longest holder description (256 bytes) and its NUL.
pub const BCV_LEASE_HOLDER_CAP: usize = 257;
const _: () = assert!(BCV_LEASE_HOLDER_CAP == MAX_HOLDER_BYTES + 1);
/// Bytes of `bcv_lease_t.token`: 32 lowercase hex digits and a NUL.
pub const BCV_LEASE_TOKEN_CAP: usize = 33;

/// A lease as recorded in the container. Plain data: having one does not mean holding the lease.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_lease_t {
    /// The holder's description as given to obtain (NUL-terminated UTF-8).
    pub holder: [c_char; BCV_LEASE_HOLDER_CAP],
    /// The holding's token (NUL-terminated): new at each obtain, kept by extends. Not a secret; another
    /// process of the application adopts, extends or releases the holding with it.
    pub token: [c_char; BCV_LEASE_TOKEN_CAP],
    /// Grows by one at each change of holder.
    pub generation: u64,
    /// When this holding began (Unix milliseconds, by the holder's clock).
    pub acquired_unix_ms: i64,
    /// When it expires unless extended (Unix milliseconds, by the holder's clock).
    pub expires_unix_ms: i64,
}

fn copy_text<const N: usize>(text: &str, out: &mut [c_char; N]) {
    let bytes = text.as_bytes();
    let n = bytes.len().min(N - 1);
    for (o, b) in out.iter_mut().zip(&bytes[..n]) {
        *o = *b as c_char;
    }
    out[n] = 0;
}

fn lease_of(info: &LeaseInfo) -> bcv_lease_t {
    let mut out = bcv_lease_t {
        holder: [0; BCV_LEASE_HOLDER_CAP],
        token: [0; BCV_LEASE_TOKEN_CAP],
        generation: info.generation,
        acquired_unix_ms: info.acquired_unix_ms,
        expires_unix_ms: info.expires_unix_ms,
    };
    copy_text(&info.holder, &mut out.holder);
    copy_text(&info.token, &mut out.token);
    out
}

fn duration_of(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn opt_token<'a>(token: *const c_char) -> Result<Option<&'a str>, bcv_status_t> {
    if token.is_null() { Ok(None) } else { c_str(token, "token").map(Some) }
}

/// Writes a lease result to `*out` (may be NULL).
fn put_lease(result: bcv_core::vfs::VfsResult<LeaseInfo>, out: *mut bcv_lease_t) -> bcv_status_t {
    match result {
        Ok(info) => {
            put_opt(out, lease_of(&info));
            BCV_OK
        }
        Err(e) => fail_vfs(&e),
    }
}

/// Writes an optional lease to `*out` and whether there is one to `*found` (either may be NULL).
fn put_maybe_lease(
    result: bcv_core::vfs::VfsResult<Option<LeaseInfo>>,
    out: *mut bcv_lease_t,
    found: *mut bool,
) -> bcv_status_t {
    match result {
        Ok(info) => {
            put_opt(found, info.is_some());
            if let Some(info) = info {
                put_opt(out, lease_of(&info));
            }
            BCV_OK
        }
        Err(e) => fail_vfs(&e),
    }
}

/// Obtains the lease of the container attached as `alias` for `holder` (a description naming this client,
/// 1–256 bytes) for `duration_ms`, and writes it to `*out` (may be NULL). From then on, other clients'
/// manifest writes fail; this VFS's uploads renew it. Errors: `BCV_E_LEASE_HELD` (another client holds it: the
/// message names the holder and its expiry), `BCV_E_INVALID` (holder, a duration not longer than the safety
/// margin, or this VFS holds it already), `BCV_E_STORE` (also a store ignoring conditional writes),
/// `BCV_E_CORRUPT` (an unreadable lease object), `BCV_E_NOT_FOUND`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_lease_obtain(
    vfs: bcv_handle_t,
    alias: *const c_char,
    holder: *const c_char,
    duration_ms: u64,
    out: *mut bcv_lease_t,
) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        let holder = try_status!(c_str(holder, "holder"));
        with_vfs(vfs, |v| put_lease(v.lease_obtain(alias, holder, duration_of(duration_ms)), out))
    })
}

/// Extends the lease this VFS holds on `alias` to expire `duration_ms` from now (same token and generation)
/// and writes it to `*out` (may be NULL). Errors: `BCV_E_LEASE_LOST` (it holds none, it expired, or another
/// client took it over), `BCV_E_INVALID` (duration), `BCV_E_STORE` (the lease is kept: retry),
/// `BCV_E_NOT_FOUND`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_lease_extend(
    vfs: bcv_handle_t,
    alias: *const c_char,
    duration_ms: u64,
    out: *mut bcv_lease_t,
) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| put_lease(v.lease_extend(alias, duration_of(duration_ms)), out))
    })
}

/// Releases the lease this VFS holds on `alias` (another client can obtain it at once). Detaching releases it
/// too. Errors: `BCV_E_LEASE_LOST` (it held none, or another client had taken it over), `BCV_E_STORE`,
/// `BCV_E_NOT_FOUND`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_lease_release(vfs: bcv_handle_t, alias: *const c_char) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| status_of(v.lease_release(alias)))
    })
}

/// Reads the lease of `alias` from the container now: writes whether one is recorded to `*found` and, if so,
/// the lease to `*out` (either may be NULL). A released lease is "none"; an expired one nobody took over is
/// returned (compare `expires_unix_ms` with the time). Errors: `BCV_E_CORRUPT`, `BCV_E_STORE`,
/// `BCV_E_NOT_FOUND`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_lease_status(
    vfs: bcv_handle_t,
    alias: *const c_char,
    out: *mut bcv_lease_t,
    found: *mut bool,
) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| put_maybe_lease(v.lease_status(alias), out, found))
    })
}

/// The lease this VFS holds on `alias`, as it last wrote it (no request): `*found` false when it holds none.
/// Errors: `BCV_E_NOT_FOUND`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_lease_held(
    vfs: bcv_handle_t,
    alias: *const c_char,
    out: *mut bcv_lease_t,
    found: *mut bool,
) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| put_maybe_lease(v.lease_held(alias), out, found))
    })
}

/// Makes this VFS the holder of the lease of `alias` obtained elsewhere under `token` (e.g. by `bcv lease
/// obtain`), writing nothing; writes it to `*out` (may be NULL). Errors: `BCV_E_LEASE_LOST` (the container's
/// lease is not the unexpired holding `token`), `BCV_E_CORRUPT`, `BCV_E_STORE`, `BCV_E_NOT_FOUND`,
/// `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_lease_adopt(
    vfs: bcv_handle_t,
    alias: *const c_char,
    token: *const c_char,
    out: *mut bcv_lease_t,
) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        let token = try_status!(c_str(token, "token"));
        with_vfs(vfs, |v| put_lease(v.lease_adopt(alias, token), out))
    })
}

/// Obtains the container's lease for `holder` for `duration_ms` through the container tools (whose
/// copy/delete/upload calls are then fenced as the holder's) and writes it to `*out` (may be NULL). Errors: as
/// `bcv_vfs_lease_obtain`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_lease_obtain(
    container: bcv_handle_t,
    holder: *const c_char,
    duration_ms: u64,
    out: *mut bcv_lease_t,
) -> bcv_status_t {
    guard(|| {
        let holder = try_status!(c_str(holder, "holder"));
        with_tools(container, |t| put_lease(t.lease_obtain(holder, duration_of(duration_ms)), out))
    })
}

/// Extends a holding to expire `duration_ms` from now: the one these tools hold when `token` is NULL,
/// otherwise the holding `token` (obtained by any process). Writes it to `*out` (may be NULL). Errors: as
/// `bcv_vfs_lease_extend`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_lease_extend(
    container: bcv_handle_t,
    token: *const c_char,
    duration_ms: u64,
    out: *mut bcv_lease_t,
) -> bcv_status_t {
    guard(|| {
        let token = try_status!(opt_token(token));
        let duration = duration_of(duration_ms);
        with_tools(container, |t| match token {
            Some(token) => put_lease(t.lease_extend_with_token(token, duration), out),
            None => put_lease(t.lease_extend(duration), out),
        })
    })
}

/// Releases a holding: the one these tools hold when `token` is NULL, otherwise the holding `token`. Errors:
/// as `bcv_vfs_lease_release`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_lease_release(container: bcv_handle_t, token: *const c_char) -> bcv_status_t {
    guard(|| {
        let token = try_status!(opt_token(token));
        with_tools(container, |t| match token {
            Some(token) => status_of(t.lease_release_with_token(token)),
            None => status_of(t.lease_release()),
        })
    })
}

/// Reads the container's lease now, as `bcv_vfs_lease_status`. Errors: `BCV_E_CORRUPT`, `BCV_E_STORE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_lease_status(
    container: bcv_handle_t,
    out: *mut bcv_lease_t,
    found: *mut bool,
) -> bcv_status_t {
    guard(|| with_tools(container, |t| put_maybe_lease(t.lease_status(), out, found)))
}

/// Makes these tools the holder of the holding `token` obtained elsewhere, as `bcv_vfs_lease_adopt`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_lease_adopt(
    container: bcv_handle_t,
    token: *const c_char,
    out: *mut bcv_lease_t,
) -> bcv_status_t {
    guard(|| {
        let token = try_status!(c_str(token, "token"));
        with_tools(container, |t| put_lease(t.lease_adopt(token), out))
    })
}
