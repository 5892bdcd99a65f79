//! The lease lock: at most one writer at a time per container, through the object `bcv_lease.json`.
//!
//! CBS has no lock of its own: two clients that upload to one container at the same time are kept consistent by
//! the conditional manifest PUT (the loser re-bases or gets a conflict), but nothing stops them from taking turns
//! on the same database. The lease gives an application one *holder* per container for a bounded time, renewed
//! as it works, and makes bcv refuse manifest writes by anyone else while it is held.
//!
//! # The object
//!
//! `bcv_lease.json` sits next to `manifest.bcv`. CBS never reads it, so containers stay format-compatible. It is
//! a small JSON document:
//!
//! ```json
//! {"version":1,"holder":"host-a pid 123","token":"8c1f…(32 hex digits)","acquired_unix_ms":1767225600000,
//!  "expires_unix_ms":1767225630000,"duration_ms":30000,"generation":7}
//! ```
//!
//! * `holder` is free text chosen by the application, shown to whoever finds the lease held;
//! * `token` is 128 random bits (hex) naming one holding: obtaining makes a new one, extending keeps it;
//! * `generation` grows by one at every change of holder, never otherwise;
//! * `duration_ms` is the duration asked at the last obtain or extend (fenced renewals reuse it).
//!
//! A released lease is the same record with `holder` and `token` null and a `released_unix_ms` field: it is
//! rewritten rather than deleted, because conditional deletes do not exist on every store. A record with a
//! `version` greater than 1 was written by a newer bcv and is refused ([`VfsError::LeaseObject`]).
//!
//! # Operations
//!
//! Every write is conditional on the version (ETag) of the object as last read or written, so two clients can
//! never both believe they won:
//!
//! * **obtain** — create the object if absent, or replace a released or expired record; a lost race is
//!   reported as [`VfsError::LeaseHeld`] naming the winner;
//! * **extend** — rewrite this client's record with a later expiry; if the object changed meanwhile (someone
//!   took the lease over after it expired) or it already expired locally, [`VfsError::LeaseLost`];
//! * **release** — rewrite the record as released; [`VfsError::LeaseLost`] if it was taken over already;
//! * **status** — read the record.
//!
//! # Fencing
//!
//! Right before each conditional PUT of `manifest.bcv` (an upload through the VFS, copy, delete, cleanup,
//! `upload_file`…), bcv checks the lease, at the cost of one small request:
//!
//! * a client that holds the lease renews it with a conditional PUT, which proves it still holds it at that
//!   moment and pushes the expiry out by the last duration asked; at least the *safety margin* must then be left,
//!   otherwise the manifest is not written ([`VfsError::Busy`]: retry). If the renewal finds the lease expired
//!   or taken over, [`VfsError::LeaseLost`] and nothing is installed;
//! * a client that does not hold it reads it: held by someone else and not expired → [`VfsError::LeaseHeld`] and
//!   nothing is installed; absent, released or expired → the write goes ahead as it always did, so clients that
//!   never use leases keep working.
//!
//! A refused upload may already have written block objects; no manifest references them, so cleanup removes
//! them as orphans. A client that does not use leases checks the lease and then writes the manifest: a lease
//! obtained by someone else between those two requests does not stop that one write (it landed "before" the
//! lease, and the holder's own conditional manifest write then re-bases over it, losing nothing).
//!
//! # Example
//!
//! Two clients of one container (here an in-memory store; any store URL works the same way):
//!
//! ```
//! use std::time::Duration;
//! use bcv_core::vfs::store::{ContainerStore, StoreOptions};
//! use bcv_core::vfs::{ContainerTools, VfsError};
//!
//! let open = || ContainerStore::open("memory://lease-doc", &StoreOptions::default());
//! let (a, b) = (ContainerTools::new(open()?, 4), ContainerTools::new(open()?, 4));
//! a.create(65536, 16, false)?;
//!
//! let lease = a.lease_obtain("host-a pid 1", Duration::from_secs(30))?;
//! match b.lease_obtain("host-b pid 2", Duration::from_secs(30)) {
//!     Err(VfsError::LeaseHeld { holder, until, .. }) => {
//!         assert_eq!(holder, "host-a pid 1");
//!         assert_eq!(until, lease.expires_utc());
//!     }
//!     other => panic!("expected LeaseHeld, got {other:?}"),
//! }
//! // b's manifest writes are refused while a holds the lease; a's renew it.
//! assert!(matches!(b.create(65536, 16, true), Err(VfsError::LeaseHeld { .. })));
//! a.create(65536, 16, true)?;
//!
//! a.lease_release()?;
//! assert_eq!(b.lease_obtain("host-b pid 2", Duration::from_secs(30))?.generation, 2);
//! # Ok::<(), VfsError>(())
//! ```
//!
//! # Clocks
//!
//! Expiry times are wall-clock milliseconds written by the holder and compared by others. The lease is safe
//! under three assumptions:
//!
//! 1. the clocks of all clients agree within `max_skew` ([`LeaseOptions::max_skew`], default 5 s): an expired
//!    lease is taken over only when `now > expires + max_skew`, and a non-holder counts a lease as active until
//!    then;
//! 2. a holder finishes each manifest write well before its lease expires (the holder measures its own expiry
//!    on a monotonic clock, from the moment it *sent* the write that set it);
//! 3. a fenced manifest write starts with at least the safety margin ([`LeaseOptions::safety_margin`], default
//!    5 s) of lease left, and lands within that time.
//!
//! A holder that stalls longer than its lease (a paused VM, a stuck request) can lose it without noticing until
//! its next renewal; its late manifest PUT is still conditional on the manifest it read, so it cannot overwrite
//! the new holder's changes, only fail or re-base.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::vfs::store::{ContainerStore, ObjectVersion};
use crate::vfs::{VfsError, VfsResult};

/// The lease object of a container.
pub const LEASE_OBJECT: &str = "bcv_lease.json";
/// The format version of the lease object this bcv writes (and the newest it reads).
pub const LEASE_FORMAT_VERSION: u32 = 1;
/// Default [`LeaseOptions::max_skew`]: 5 s.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(5);
/// Default [`LeaseOptions::safety_margin`]: 5 s.
pub const DEFAULT_SAFETY_MARGIN: Duration = Duration::from_secs(5);
/// Longest holder text, in bytes.
pub const MAX_HOLDER_BYTES: usize = 256;

/// How many times obtain writes before it reports who won (a lost race whose winner released at once is retried).
const OBTAIN_ATTEMPTS: usize = 3;

/// How a client treats leases: the clock-skew allowance and the safety margin of fenced writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How far the clocks of two clients may disagree. An expired lease is taken over only when
    /// `now > expires + max_skew`; until then a non-holder still treats it as held. Default 5 s.
    pub max_skew: Duration,
    /// The lease time that must be left after the renewal that precedes each manifest write of a holder;
    /// obtain and extend refuse durations not longer than this. Default 5 s.
    pub safety_margin: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions { max_skew: DEFAULT_MAX_SKEW, safety_margin: DEFAULT_SAFETY_MARGIN }
    }
}

/// A lease as recorded in the container: who holds it, which holding it is, and until when.
///
/// Plain data: holding a `LeaseInfo` does not mean holding the lease. The token is not a secret (anyone who
/// can read the container can read it); it names one holding, so that another process of the same application
/// can extend or release it ([`lease_release_with_token`](crate::vfs::ContainerTools::lease_release_with_token)).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseInfo {
    /// The holder's description, as given to obtain.
    pub holder: String,
    /// 128 random bits in lowercase hex, new at each obtain, kept by extends.
    pub token: String,
    /// Grows by one at each change of holder.
    pub generation: u64,
    /// When this holding began (Unix milliseconds, the holder's clock).
    pub acquired_unix_ms: i64,
    /// When it expires unless extended (Unix milliseconds, the holder's clock).
    pub expires_unix_ms: i64,
}

impl LeaseInfo {
    /// Time left by this machine's clock, or `None` when the expiry has passed.
    pub fn expires_in(&self) -> Option<Duration> {
        let left = self.expires_unix_ms - unix_now_ms();
        (left > 0).then(|| Duration::from_millis(left as u64))
    }

    /// True when the expiry has passed by this machine's clock (the lease may still not be taken over for
    /// another `max_skew`).
    pub fn is_expired(&self) -> bool {
        self.expires_in().is_none()
    }

    /// When this holding began, in RFC 3339 UTC (`2026-01-01T12:00:00.000Z`).
    pub fn acquired_utc(&self) -> String {
        rfc3339_utc(self.acquired_unix_ms)
    }

    /// The expiry, in RFC 3339 UTC.
    pub fn expires_utc(&self) -> String {
        rfc3339_utc(self.expires_unix_ms)
    }
}

/// A Unix time in milliseconds as RFC 3339 UTC with milliseconds; the number itself if out of range.
pub fn rfc3339_utc(unix_ms: i64) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(unix_ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => format!("{unix_ms} ms after the Unix epoch"),
    }
}

/// The content of `bcv_lease.json`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct LeaseRecord {
    version: u32,
    holder: Option<String>,
    token: Option<String>,
    acquired_unix_ms: i64,
    expires_unix_ms: i64,
    #[serde(default)]
    duration_ms: u64,
    generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    released_unix_ms: Option<i64>,
}

impl LeaseRecord {
    fn decode(bytes: &[u8]) -> Result<LeaseRecord, String> {
        let r: LeaseRecord = serde_json::from_slice(bytes).map_err(|e| format!("not a lease record: {e}"))?;
        if r.version == 0 || r.version > LEASE_FORMAT_VERSION {
            return Err(format!(
                "format version {} (this bcv reads up to {LEASE_FORMAT_VERSION}); refusing to touch it",
                r.version
            ));
        }
        match (&r.holder, &r.token) {
            (Some(_), Some(t)) if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(r),
            (Some(_), _) => Err("a held lease without a valid token".into()),
            (None, _) => Ok(r),
        }
    }

    fn encode(&self) -> Bytes {
        // Serializing plain strings and integers cannot fail; an empty body would be refused by decode anyway.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The holding this record describes, if it is held.
    fn info(&self) -> Option<LeaseInfo> {
        match (&self.holder, &self.token) {
            (Some(holder), Some(token)) => Some(LeaseInfo {
                holder: holder.clone(),
                token: token.clone(),
                generation: self.generation,
                acquired_unix_ms: self.acquired_unix_ms,
                expires_unix_ms: self.expires_unix_ms,
            }),
            _ => None,
        }
    }

    /// Held, and not expired by more than `skew` at `now`: nobody may take it over.
    fn is_active(&self, now_ms: i64, skew: Duration) -> bool {
        self.holder.is_some() && now_ms <= self.expires_unix_ms.saturating_add(skew.as_millis() as i64)
    }

    fn holding(info: &LeaseInfo, now_ms: i64, duration: Duration) -> LeaseRecord {
        LeaseRecord {
            version: LEASE_FORMAT_VERSION,
            holder: Some(info.holder.clone()),
            token: Some(info.token.clone()),
            acquired_unix_ms: info.acquired_unix_ms,
            expires_unix_ms: now_ms.saturating_add(duration.as_millis() as i64),
            duration_ms: duration.as_millis() as u64,
            generation: info.generation,
            released_unix_ms: None,
        }
    }
}

/// The lease this client holds on one container.
#[derive(Clone, Debug)]
struct HeldLease {
    info: LeaseInfo,
    /// The version of the lease object as this client last wrote it.
    version: ObjectVersion,
    /// The duration asked at the last obtain or extend; fenced renewals reuse it.
    duration: Duration,
    /// The expiry on this machine's monotonic clock, counted from before the write that set it was sent.
    deadline: Instant,
}

/// One client's view of the lease of one container: the lease it holds (if any) and the operations on it.
///
/// Operations are serialized (an async mutex), so a renewal by an upload and an explicit extend never race
/// each other with the same ETag.
pub(crate) struct LeaseSlot {
    store: ContainerStore,
    options: LeaseOptions,
    held: tokio::sync::Mutex<Option<HeldLease>>,
}

impl std::fmt::Debug for LeaseSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSlot").field("container", &self.store.label()).field("options", &self.options).finish()
    }
}

impl LeaseSlot {
    /// A slot holding nothing.
    pub(crate) fn new(store: ContainerStore, options: LeaseOptions) -> LeaseSlot {
        LeaseSlot { store, options, held: tokio::sync::Mutex::new(None) }
    }

    fn label(&self) -> String {
        self.store.label().to_string()
    }

    fn lost(&self, reason: impl Into<String>) -> VfsError {
        VfsError::LeaseLost { container: self.label(), reason: reason.into() }
    }

    fn held_error(&self, record: &LeaseRecord, now_ms: i64) -> VfsError {
        let left_ms = record.expires_unix_ms - now_ms;
        let remaining = if left_ms > 0 {
            format!("in {} s", ceil_s(left_ms))
        } else {
            let skew_ms = self.options.max_skew.as_millis() as i64;
            format!(
                "expired {} s ago; it can be taken over in {} s, after the clock-skew margin of {} s",
                -left_ms / 1000,
                ceil_s(left_ms + skew_ms),
                ceil_s(skew_ms)
            )
        };
        VfsError::LeaseHeld {
            container: self.label(),
            holder: record.holder.clone().unwrap_or_default(),
            until: rfc3339_utc(record.expires_unix_ms),
            until_unix_ms: record.expires_unix_ms,
            generation: record.generation,
            remaining,
        }
    }

    fn check_duration(&self, duration: Duration) -> VfsResult<()> {
        if duration <= self.options.safety_margin || duration.as_millis() > i64::MAX as u128 / 4 {
            return Err(VfsError::InvalidArgument(format!(
                "a lease duration of {duration:?} on {}: it must be longer than the safety margin of {:?}",
                self.label(),
                self.options.safety_margin
            )));
        }
        Ok(())
    }

    /// Reads the lease object: `None` when absent.
    async fn read(&self) -> VfsResult<Option<(LeaseRecord, ObjectVersion)>> {
        match self.store.get(LEASE_OBJECT).await {
            Ok(f) => {
                let record = LeaseRecord::decode(&f.bytes)
                    .map_err(|reason| VfsError::LeaseObject { container: self.label(), reason })?;
                Ok(Some((record, f.version)))
            }
            Err(VfsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Obtains the lease for `holder` for `duration`. See [`crate::vfs::BlockVfs::lease_obtain`].
    pub(crate) async fn obtain(&self, holder: &str, duration: Duration) -> VfsResult<LeaseInfo> {
        if holder.is_empty() || holder.len() > MAX_HOLDER_BYTES {
            return Err(VfsError::InvalidArgument(format!(
                "lease holder {holder:?}: 1 to {MAX_HOLDER_BYTES} bytes of text"
            )));
        }
        self.check_duration(duration)?;
        let mut slot = self.held.lock().await;
        let mine = match slot.take() {
            Some(h) if Instant::now() < h.deadline => {
                let token = h.info.token.clone();
                *slot = Some(h);
                return Err(VfsError::InvalidArgument(format!(
                    "this client already holds the lease of {} (token {token}); extend or release it",
                    self.label()
                )));
            }
            // Expired locally: the record may still name it, and this client may replace its own record at once.
            Some(h) => Some(h.info.token),
            None => None,
        };
        self.store.check_conditional_writes().await?;
        for _ in 0..OBTAIN_ATTEMPTS {
            let current = self.read().await?;
            let now_ms = unix_now_ms();
            let generation = match &current {
                None => 1,
                Some((record, _)) => {
                    let own = record.token.is_some() && record.token == mine;
                    if !own && record.is_active(now_ms, self.options.max_skew) {
                        return Err(self.held_error(record, now_ms));
                    }
                    record.generation.saturating_add(1)
                }
            };
            let info = LeaseInfo {
                holder: holder.to_string(),
                token: new_token()?,
                generation,
                acquired_unix_ms: now_ms,
                expires_unix_ms: 0,
            };
            let record = LeaseRecord::holding(&info, now_ms, duration);
            let sent = Instant::now();
            let written = match &current {
                None => self.store.put_if_absent(LEASE_OBJECT, record.encode()).await,
                Some((_, version)) => self.store.put_if_match(LEASE_OBJECT, record.encode(), version).await,
            };
            match written {
                Ok(version) => {
                    let info = LeaseInfo { expires_unix_ms: record.expires_unix_ms, ..info };
                    tracing::debug!(container = %self.label(), holder, generation, "lease obtained");
                    *slot = Some(HeldLease { info: info.clone(), version, duration, deadline: sent + duration });
                    return Ok(info);
                }
                // Someone else wrote first: read again; held → LeaseHeld, released already → try again.
                Err(VfsError::Conflict { .. } | VfsError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        let now_ms = unix_now_ms();
        match self.read().await? {
            Some((record, _)) if record.is_active(now_ms, self.options.max_skew) => {
                Err(self.held_error(&record, now_ms))
            }
            _ => Err(VfsError::Conflict { container: self.label(), object: LEASE_OBJECT.into() }),
        }
    }

    /// Rewrites the held lease with a new expiry. On a lost condition the slot is cleared and the error says who
    /// has the lease now.
    async fn renew(&self, slot: &mut Option<HeldLease>, duration: Duration) -> VfsResult<HeldLease> {
        let Some(held) = slot.clone() else {
            return Err(self.lost("this client holds no lease on it"));
        };
        if Instant::now() >= held.deadline {
            *slot = None;
            return Err(self.lost(format!("it expired at {}", held.info.expires_utc())));
        }
        let now_ms = unix_now_ms();
        let record = LeaseRecord::holding(&held.info, now_ms, duration);
        let sent = Instant::now();
        match self.store.put_if_match(LEASE_OBJECT, record.encode(), &held.version).await {
            Ok(version) => {
                let renewed = HeldLease {
                    info: LeaseInfo { expires_unix_ms: record.expires_unix_ms, ..held.info },
                    version,
                    duration,
                    deadline: sent + duration,
                };
                *slot = Some(renewed.clone());
                Ok(renewed)
            }
            Err(VfsError::Conflict { .. } | VfsError::NotFound { .. }) => {
                *slot = None;
                Err(self.lost(self.describe_loss(&held).await))
            }
            Err(e) => Err(e),
        }
    }

    /// Why the object no longer matches `held`, in words (best effort: a failed read says so).
    async fn describe_loss(&self, held: &HeldLease) -> String {
        match self.read().await {
            Ok(None) => "the lease object was deleted".into(),
            Ok(Some((r, _))) => match r.info() {
                Some(now) if now.token == held.info.token => "the lease object was rewritten by another client".into(),
                Some(now) => format!(
                    "it was taken over by {:?} (generation {}, until {})",
                    now.holder,
                    now.generation,
                    now.expires_utc()
                ),
                None => "it was released".into(),
            },
            Err(e) => format!("the lease object changed (and could not be read again: {e})"),
        }
    }

    /// Extends the held lease to `duration` from now. See [`crate::vfs::BlockVfs::lease_extend`].
    pub(crate) async fn extend(&self, duration: Duration) -> VfsResult<LeaseInfo> {
        self.check_duration(duration)?;
        let mut slot = self.held.lock().await;
        self.renew(&mut slot, duration).await.map(|h| h.info)
    }

    /// Releases the held lease. See [`crate::vfs::BlockVfs::lease_release`].
    pub(crate) async fn release(&self) -> VfsResult<()> {
        let mut slot = self.held.lock().await;
        let Some(held) = slot.take() else {
            return Err(self.lost("this client holds no lease on it"));
        };
        self.write_released(&held.info, &held.version).await.map_err(|e| match e {
            LeaseWrite::Lost => self.lost("it was taken over before it was released"),
            LeaseWrite::Other(e) => e,
        })
    }

    async fn write_released(&self, info: &LeaseInfo, version: &ObjectVersion) -> Result<(), LeaseWrite> {
        let now_ms = unix_now_ms();
        let record = LeaseRecord {
            version: LEASE_FORMAT_VERSION,
            holder: None,
            token: None,
            acquired_unix_ms: info.acquired_unix_ms,
            expires_unix_ms: info.expires_unix_ms.min(now_ms),
            duration_ms: 0,
            generation: info.generation,
            released_unix_ms: Some(now_ms),
        };
        match self.store.put_if_match(LEASE_OBJECT, record.encode(), version).await {
            Ok(_) => {
                tracing::debug!(container = %self.label(), generation = info.generation, "lease released");
                Ok(())
            }
            Err(VfsError::Conflict { .. } | VfsError::NotFound { .. }) => Err(LeaseWrite::Lost),
            Err(e) => Err(LeaseWrite::Other(e)),
        }
    }

    /// The lease as recorded: `None` when absent or released (an expired, unreleased lease is returned).
    pub(crate) async fn status(&self) -> VfsResult<Option<LeaseInfo>> {
        Ok(self.read().await?.and_then(|(r, _)| r.info()))
    }

    /// Forgets the held lease without writing anything (its object is being deleted).
    pub(crate) async fn forget(&self) {
        *self.held.lock().await = None;
    }

    /// The lease this client holds, as it last wrote it (no request).
    pub(crate) async fn held(&self) -> Option<LeaseInfo> {
        self.held.lock().await.as_ref().map(|h| h.info.clone())
    }

    /// Takes over the holding named by `token` (obtained by another process of the application), so that this
    /// client extends, releases and writes as its holder.
    pub(crate) async fn adopt(&self, token: &str) -> VfsResult<LeaseInfo> {
        let mut slot = self.held.lock().await;
        let adopted = self.read_holding(token).await?;
        let info = adopted.info.clone();
        *slot = Some(adopted);
        Ok(info)
    }

    /// Reads the object and checks that it is the unexpired holding `token`.
    async fn read_holding(&self, token: &str) -> VfsResult<HeldLease> {
        let token = token.trim().to_ascii_lowercase();
        let Some((record, version)) = self.read().await? else {
            return Err(self.lost("the container has no lease object"));
        };
        let info = match record.info() {
            Some(info) if info.token == token => info,
            Some(other) => return Err(self.lost(format!("it is held by {:?} under another token", other.holder))),
            None => return Err(self.lost("it was released")),
        };
        let left_ms = info.expires_unix_ms - unix_now_ms();
        if left_ms <= 0 {
            return Err(self.lost(format!("it expired at {}", info.expires_utc())));
        }
        let duration = Duration::from_millis(record.duration_ms.max(1));
        Ok(HeldLease { info, version, duration, deadline: Instant::now() + Duration::from_millis(left_ms as u64) })
    }

    /// Extends the holding `token` and holds it from now on. See
    /// [`crate::vfs::ContainerTools::lease_extend_with_token`].
    pub(crate) async fn extend_with_token(&self, token: &str, duration: Duration) -> VfsResult<LeaseInfo> {
        self.check_duration(duration)?;
        let mut slot = self.held.lock().await;
        let adopted = self.read_holding(token).await?;
        *slot = Some(adopted);
        self.renew(&mut slot, duration).await.map(|h| h.info)
    }

    /// Releases the holding `token`. See [`crate::vfs::ContainerTools::lease_release_with_token`].
    pub(crate) async fn release_with_token(&self, token: &str) -> VfsResult<()> {
        let mut slot = self.held.lock().await;
        let wanted = token.trim().to_ascii_lowercase();
        if slot.as_ref().is_some_and(|h| h.info.token == wanted) {
            *slot = None;
        }
        let Some((record, version)) = self.read().await? else {
            return Err(self.lost("the container has no lease object"));
        };
        let info = match record.info() {
            Some(info) if info.token == wanted => info,
            Some(other) => return Err(self.lost(format!("it is held by {:?} under another token", other.holder))),
            None => return Err(self.lost("it was released already")),
        };
        self.write_released(&info, &version).await.map_err(|e| match e {
            LeaseWrite::Lost => self.lost("it was taken over before it was released"),
            LeaseWrite::Other(e) => e,
        })
    }

    /// The check before a manifest write (see the module documentation): renew the held lease and require the
    /// safety margin, or refuse while someone else holds it.
    pub(crate) async fn fence(&self) -> VfsResult<()> {
        let mut slot = self.held.lock().await;
        if let Some(held) = slot.clone() {
            let renewed = self.renew(&mut slot, held.duration).await?;
            let left = renewed.deadline.saturating_duration_since(Instant::now());
            if left < self.options.safety_margin {
                return Err(VfsError::Busy {
                    what: format!("the lease of {}", self.label()),
                    reason: format!(
                        "only {left:?} of it was left after renewing it, less than the safety margin of {:?}; the \
                         manifest was not written (retry)",
                        self.options.safety_margin
                    ),
                });
            }
            return Ok(());
        }
        drop(slot);
        if let Some((record, _)) = self.read().await? {
            let now_ms = unix_now_ms();
            if record.is_active(now_ms, self.options.max_skew) {
                return Err(self.held_error(&record, now_ms));
            }
        }
        Ok(())
    }
}

/// How a conditional lease write failed.
enum LeaseWrite {
    /// The object is not the version the write was based on.
    Lost,
    /// Any other failure.
    Other(VfsError),
}

fn ceil_s(ms: i64) -> i64 {
    if ms <= 0 { 0 } else { (ms + 999) / 1000 }
}

fn new_token() -> VfsResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| VfsError::InvalidArgument(format!("no randomness for a lease token: {e}")))?;
    Ok(hex::encode(bytes))
}

fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_record() -> LeaseRecord {
        LeaseRecord {
            version: 1,
            holder: Some("host-a pid 1".into()),
            token: Some("00112233445566778899aabbccddeeff".into()),
            acquired_unix_ms: 1_000,
            expires_unix_ms: 31_000,
            duration_ms: 30_000,
            generation: 3,
            released_unix_ms: None,
        }
    }

    #[test]
    fn records_round_trip() {
        let r = held_record();
        assert_eq!(LeaseRecord::decode(&r.encode()), Ok(r.clone()));
        let released = LeaseRecord { holder: None, token: None, released_unix_ms: Some(5), ..r };
        let text = String::from_utf8(released.encode().to_vec()).unwrap();
        assert!(text.contains("\"holder\":null") && text.contains("\"released_unix_ms\":5"), "{text}");
        assert_eq!(LeaseRecord::decode(text.as_bytes()), Ok(released.clone()));
        assert!(released.info().is_none());
    }

    #[test]
    fn bad_records_are_refused() {
        assert!(LeaseRecord::decode(b"").is_err());
        assert!(LeaseRecord::decode(b"{}").is_err());
        let newer = LeaseRecord { version: 2, ..held_record() };
        assert!(LeaseRecord::decode(&newer.encode()).unwrap_err().contains("format version 2"));
        let no_token = LeaseRecord { token: None, ..held_record() };
        assert!(LeaseRecord::decode(&no_token.encode()).is_err());
        let short = LeaseRecord { token: Some("abc".into()), ..held_record() };
        assert!(LeaseRecord::decode(&short.encode()).is_err());
        // Unknown fields (a later minor addition) are ignored.
        let extra = br#"{"version":1,"holder":null,"token":null,"acquired_unix_ms":0,"expires_unix_ms":0,
            "generation":0,"x":1}"#;
        assert!(LeaseRecord::decode(extra).is_ok());
    }

    #[test]
    fn activity_honours_the_skew() {
        let r = held_record();
        let skew = Duration::from_secs(5);
        assert!(r.is_active(31_000, skew));
        assert!(r.is_active(36_000, skew));
        assert!(!r.is_active(36_001, skew));
        assert!(!r.is_active(31_001, Duration::ZERO));
        let released = LeaseRecord { holder: None, token: None, ..r };
        assert!(!released.is_active(0, skew));
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(ceil_s(1), 1);
        assert_eq!(ceil_s(1000), 1);
        assert_eq!(ceil_s(1001), 2);
        assert_eq!(ceil_s(-5), 0);
    }
}
