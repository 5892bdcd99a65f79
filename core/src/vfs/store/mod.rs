//! Object stores behind one container-level API.
//!
//! A *container* is one bucket (S3, GCS), one blob container (Azure), one local directory or one named in-memory
//! store. [`ContainerStore`] is the only door the VFS uses to reach it:
//!
//! * it is opened from a URL ([`ContainerStore::open`], forms in [`url`](self::url)) or wraps any
//!   `object_store::ObjectStore` ([`ContainerStore::from_object_store`]) or an application's [`CustomStore`];
//! * every request has a timeout and is retried on transient errors (5xx-like, network, timeouts, short reads)
//!   with exponential backoff and jitter; not-found, precondition, already-exists and auth errors are never
//!   retried. `object_store`'s own retry loop is switched off for the stores bcv builds, so there is exactly one;
//! * a conditional write whose attempt failed ambiguously (the request may have landed) and whose retry then
//!   loses its condition reads the object back: if it holds exactly the bytes written, the write succeeded;
//! * every request is metered ([`Meter`]);
//! * [`ContainerStore::check_conditional_writes`] proves, once, that the store honours create-if-absent and
//!   update-if-match before bcv relies on them for its lease and manifest.
//!
//! Local directories use [`LocalCas`] (compare-and-swap with a lock file, local disks only); tests inject faults
//! with [`FaultStore`].

mod auth;
mod custom;
mod faults;
mod local_cas;
mod memory;
mod meter;
mod retry;
pub mod url;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};

pub use auth::{AuthProvider, AuthRequest, AuthToken};
pub use custom::{CustomError, CustomObjectStore, CustomStore};
pub use faults::{FaultAction, FaultPlan, FaultRule, FaultStore, FaultWhen};
pub use local_cas::LocalCas;
pub use memory::{memory_container, remove_memory_container};
pub use meter::{KindSnapshot, Meter, MeterSnapshot, OpKind, PriceTable};
pub use retry::{PermanentError, TimedOut, is_transient};

use crate::vfs::{VfsError, VfsResult};

/// Ranges of one `get_ranges` call closer than this are fetched by one request.
pub const COALESCE_GAP: u64 = 64 * 1024;

/// How a [`ContainerStore`] talks to its store. `Default` gives the documented defaults.
#[derive(Clone)]
pub struct StoreOptions {
    /// Retries after a transient failure (so at most `retries + 1` attempts). Default 4.
    pub retries: u32,
    /// Delay before the first retry; doubled for each next one (capped at 5 s), with jitter. Default 50 ms.
    pub retry_base_delay: Duration,
    /// Time limit of one attempt, body included. Default 30 s.
    pub request_timeout: Duration,
    /// Requests in flight at once through one `ContainerStore` (all clones together): `get_ranges` fans out up
    /// to this, and callers are queued beyond it. Default 8; 0 is treated as 1.
    pub max_concurrency: usize,
    /// The application's credential callback for cloud stores (see [`AuthProvider`]); `None` uses the URL's
    /// keys or the environment.
    pub auth: Option<Arc<dyn AuthProvider>>,
    /// Extra `object_store` configuration keys for cloud stores (`aws_*`, `azure_*`, `google_*`, client keys),
    /// applied after the URL's. Values may be secrets; they are never shown.
    pub options: Vec<(String, String)>,
    /// Prices for the meter's cost estimate; `None` uses [`PriceTable::default`] (illustrative).
    pub price_table: Option<PriceTable>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retries: 4,
            retry_base_delay: Duration::from_millis(50),
            request_timeout: Duration::from_secs(30),
            max_concurrency: 8,
            auth: None,
            options: Vec::new(),
            price_table: None,
        }
    }
}

impl fmt::Debug for StoreOptions {
    /// Shows option keys but not their values, which may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StoreOptions")
            .field("retries", &self.retries)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field("auth", &self.auth.as_ref().map(|_| "<callback>"))
            .field("options", &keys)
            .field("price_table", &self.price_table)
            .finish()
    }
}

/// The version of an object as the store identifies it: ETag and/or version id. Opaque: compare for equality,
/// store it, hand it back to [`ContainerStore::put_if_match`] or [`ContainerStore::get_if_changed`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectVersion {
    /// The ETag (Azure `"0x8D…"`, S3 MD5 in quotes, local `inode-mtime-size`, memory a counter).
    pub e_tag: Option<String>,
    /// The version id (GCS generation, S3 version id when versioning is on).
    pub version: Option<String>,
}

impl From<ObjectVersion> for UpdateVersion {
    fn from(v: ObjectVersion) -> Self {
        UpdateVersion { e_tag: v.e_tag, version: v.version }
    }
}

impl From<UpdateVersion> for ObjectVersion {
    fn from(v: UpdateVersion) -> Self {
        ObjectVersion { e_tag: v.e_tag, version: v.version }
    }
}

/// A whole object and the version it was read at.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The content.
    pub bytes: Bytes,
    /// The version of that content.
    pub version: ObjectVersion,
}

/// One entry of [`ContainerStore::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch (0 when the store does not know).
    pub last_modified_unix_ms: i64,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    label: String,
    options: StoreOptions,
    meter: Meter,
    permits: tokio::sync::Semaphore,
    cas_checked: tokio::sync::Mutex<bool>,
}

/// One container in one object store: all the VFS's traffic goes through it. Cheap to clone (an `Arc` inside);
/// clones share the meter, the concurrency limit and the conditional-write check.
///
/// All methods are async and need a tokio runtime (timers, blocking pool). Errors name the container (its
/// [`label`](ContainerStore::label), never a secret) and the object.
#[derive(Clone)]
pub struct ContainerStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for ContainerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerStore").field("label", &self.inner.label).finish_non_exhaustive()
    }
}

/// Why one attempt failed.
enum Failure {
    Store(object_store::Error),
    /// The body had `got` bytes instead of the `range` announced or asked for.
    Short {
        range: Range<u64>,
        got: u64,
    },
}

impl From<object_store::Error> for Failure {
    fn from(e: object_store::Error) -> Self {
        Failure::Store(e)
    }
}

impl Failure {
    fn transient(&self) -> bool {
        match self {
            Failure::Store(e) => is_transient(e),
            Failure::Short { .. } => true,
        }
    }
}

fn version_of(e_tag: Option<String>, version: Option<String>) -> ObjectVersion {
    ObjectVersion { e_tag, version }
}

impl ContainerStore {
    /// Opens the container a URL names (forms in [`url`](self::url)): a local directory (created if missing),
    /// `memory://NAME`, `s3://`, `az://`, `gs://`. No request is made.
    ///
    /// # Errors
    /// [`VfsError::Config`] for a malformed URL, an unknown query key or option (named), a scheme whose feature
    /// is not compiled in, or a store `object_store` refuses to build; [`VfsError::Io`] when a local directory
    /// cannot be created.
    pub fn open(url: &str, options: &StoreOptions) -> VfsResult<ContainerStore> {
        let opened = url::open(url, options)?;
        Ok(ContainerStore::from_object_store(opened.store, &opened.label, options))
    }

    /// Wraps any `object_store` store (a test double, a `FaultStore`, a store configured by the application).
    /// `label` names it in errors and must not contain secrets.
    pub fn from_object_store(store: Arc<dyn ObjectStore>, label: &str, options: &StoreOptions) -> ContainerStore {
        let meter = Meter::new(options.price_table.clone().unwrap_or_default());
        let permits = tokio::sync::Semaphore::new(options.max_concurrency.max(1));
        ContainerStore {
            inner: Arc::new(Inner {
                store,
                label: label.to_string(),
                options: options.clone(),
                meter,
                permits,
                cas_checked: tokio::sync::Mutex::new(false),
            }),
        }
    }

    /// Wraps an application-provided [`CustomStore`]. `label` names it in errors and must not contain secrets.
    pub fn from_custom(store: Arc<dyn CustomStore>, label: &str, options: &StoreOptions) -> ContainerStore {
        let adapted = CustomObjectStore::new(store, label);
        ContainerStore::from_object_store(Arc::new(adapted), label, options)
    }

    /// The container as shown in errors: its URL without secrets.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The request counters of this container (shared by all clones).
    pub fn meter(&self) -> &Meter {
        &self.inner.meter
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The underlying `object_store` store (for multipart uploads and other calls this API does not cover;
    /// those are neither metered nor retried).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    fn path(&self, object: &str) -> VfsResult<Path> {
        Path::parse(object).map_err(|e| {
            VfsError::InvalidArgument(format!("container {}: bad object name {object:?}: {e}", self.inner.label))
        })
    }

    fn store_error(&self, object: &str, op: &'static str, source: object_store::Error) -> VfsError {
        match source {
            object_store::Error::NotFound { .. } => {
                VfsError::NotFound { container: self.inner.label.clone(), object: object.to_string() }
            }
            source => VfsError::Store {
                container: self.inner.label.clone(),
                object: object.to_string(),
                op,
                source: Box::new(source),
            },
        }
    }

    fn failure_error(&self, object: &str, op: &'static str, failure: Failure) -> VfsError {
        match failure {
            Failure::Store(e) => self.store_error(object, op, e),
            Failure::Short { range, got } => VfsError::ShortRead {
                container: self.inner.label.clone(),
                object: object.to_string(),
                start: range.start,
                end: range.end,
                got,
            },
        }
    }

    /// Runs `attempt` with the concurrency limit, the timeout, metering and retries. Returns the final failure
    /// and whether any earlier attempt failed in a way that may have let a write land (`ambiguous`).
    async fn run<T, F, Fut>(&self, kind: OpKind, bytes_up: u64, mut attempt: F) -> Result<T, (Failure, bool)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let inner = &self.inner;
        let mut ambiguous = false;
        let mut tries = 0u32;
        loop {
            let result = {
                let _permit = inner.permits.acquire().await;
                inner.meter.record_request(kind, bytes_up);
                match tokio::time::timeout(inner.options.request_timeout, attempt()).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure::Store(object_store::Error::Generic {
                        store: "bcv",
                        source: Box::new(TimedOut(inner.options.request_timeout)),
                    })),
                }
            };
            let failure = match result {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            inner.meter.record_error(kind);
            let transient = failure.transient();
            if !transient || tries >= inner.options.retries {
                return Err((failure, ambiguous));
            }
            ambiguous = true;
            tries += 1;
            inner.meter.record_retry(kind);
            if let Failure::Store(e) = &failure {
                tracing::debug!(container = %inner.label, kind = kind.name(), retry = tries, error = %e, "retrying");
            }
            tokio::time::sleep(retry::backoff(inner.options.retry_base_delay, tries)).await;
        }
    }

    /// Reads a whole object.
    ///
    /// # Errors
    /// [`VfsError::NotFound`]; [`VfsError::ShortRead`] if the body stayed shorter than announced after retries;
    /// [`VfsError::Store`] for other failures after retries.
    pub async fn get(&self, object: &str) -> VfsResult<Fetched> {
        let path = self.path(object)?;
        let store = &self.inner.store;
        let got = self
            .run(OpKind::Get, 0, || async {
                let r = store.get_opts(&path, GetOptions::new()).await?;
                let expected = r.range.end.saturating_sub(r.range.start);
                let version = version_of(r.meta.e_tag.clone(), r.meta.version.clone());
                let bytes = r.bytes().await?;
                self.inner.meter.record_bytes_down(OpKind::Get, bytes.len() as u64);
                if bytes.len() as u64 != expected {
                    return Err(Failure::Short { range: 0..expected, got: bytes.len() as u64 });
                }
                Ok(Fetched { bytes, version })
            })
            .await;
        got.map_err(|(f, _)| self.failure_error(object, "GET", f))
    }

    /// Reads a whole object unless its version is still `known`: `Ok(None)` means unchanged. Uses
    /// `If-None-Match` where the store supports it (one cheap 304), and compares versions otherwise.
    ///
    /// # Errors
    /// As [`ContainerStore::get`].
    pub async fn get_if_changed(&self, object: &str, known: &ObjectVersion) -> VfsResult<Option<Fetched>> {
        let path = self.path(object)?;
        let store = &self.inner.store;
        let got = self
            .run(OpKind::Get, 0, || async {
                let options = GetOptions::new().with_if_none_match(known.e_tag.clone());
                let r = match store.get_opts(&path, options).await {
                    Ok(r) => r,
                    Err(object_store::Error::NotModified { .. }) => return Ok(None),
                    Err(e) => return Err(Failure::Store(e)),
                };
                let expected = r.range.end.saturating_sub(r.range.start);
                let version = version_of(r.meta.e_tag.clone(), r.meta.version.clone());
                if &version == known {
                    return Ok(None);
                }
                let bytes = r.bytes().await?;
                self.inner.meter.record_bytes_down(OpKind::Get, bytes.len() as u64);
                if bytes.len() as u64 != expected {
                    return Err(Failure::Short { range: 0..expected, got: bytes.len() as u64 });
                }
                Ok(Some(Fetched { bytes, version }))
            })
            .await;
        got.map_err(|(f, _)| self.failure_error(object, "GET", f))
    }

    /// Reads `range` of an object; the result has exactly `range.end - range.start` bytes.
    ///
    /// # Errors
    /// [`VfsError::NotFound`]; [`VfsError::ShortRead`] if fewer (or more) bytes kept coming back (also when the
    /// range goes past the end of the object); [`VfsError::Store`] otherwise. An empty range returns no bytes and
    /// makes no request.
    pub async fn get_range(&self, object: &str, range: Range<u64>) -> VfsResult<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let path = self.path(object)?;
        self.fetch_range(object, &path, range).await
    }

    async fn fetch_range(&self, object: &str, path: &Path, range: Range<u64>) -> VfsResult<Bytes> {
        let store = &self.inner.store;
        let want = range.end - range.start;
        let got = self
            .run(OpKind::RangedGet, 0, || async {
                let r = store.get_opts(path, GetOptions::new().with_range(Some(range.clone()))).await?;
                let bytes = r.bytes().await?;
                self.inner.meter.record_bytes_down(OpKind::RangedGet, bytes.len() as u64);
                if bytes.len() as u64 != want {
                    return Err(Failure::Short { range: range.clone(), got: bytes.len() as u64 });
                }
                Ok(bytes)
            })
            .await;
        got.map_err(|(f, _)| self.failure_error(object, "GET", f))
    }

    /// Reads several ranges of one object, in the order given. Ranges closer than [`COALESCE_GAP`] are merged
    /// into one request; up to `max_concurrency` requests run at once. Each result has exactly the length asked.
    ///
    /// # Errors
    /// The first error of any request, as [`ContainerStore::get_range`].
    pub async fn get_ranges(&self, object: &str, ranges: &[Range<u64>]) -> VfsResult<Vec<Bytes>> {
        let path = self.path(object)?;
        let merged = merge_ranges(ranges, COALESCE_GAP);
        let fetched: Vec<Bytes> = futures::stream::iter(merged.iter().cloned())
            .map(|r| self.fetch_range(object, &path, r))
            .buffered(self.inner.options.max_concurrency.max(1))
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            if r.start >= r.end {
                out.push(Bytes::new());
                continue;
            }
            // The merged range containing r: the last one starting at or before r.start.
            let idx = merged.partition_point(|m| m.start <= r.start).saturating_sub(1);
            let (m, data) = (&merged[idx], &fetched[idx]);
            let from = usize::try_from(r.start - m.start).unwrap_or(usize::MAX);
            let to = usize::try_from(r.end - m.start).unwrap_or(usize::MAX);
            if to > data.len() || from > to {
                return Err(VfsError::ShortRead {
                    container: self.inner.label.clone(),
                    object: object.to_string(),
                    start: r.start,
                    end: r.end,
                    got: data.len() as u64,
                });
            }
            out.push(data.slice(from..to));
        }
        Ok(out)
    }

    /// Size and version of an object, or `None` if it does not exist.
    ///
    /// # Errors
    /// [`VfsError::Store`] after retries.
    pub async fn head(&self, object: &str) -> VfsResult<Option<(u64, ObjectVersion)>> {
        let path = self.path(object)?;
        let store = &self.inner.store;
        let got = self
            .run(OpKind::Head, 0, || async {
                match store.get_opts(&path, GetOptions::new().with_head(true)).await {
                    Ok(r) => Ok(Some((r.meta.size, version_of(r.meta.e_tag, r.meta.version)))),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(Failure::Store(e)),
                }
            })
            .await;
        got.map_err(|(f, _)| self.failure_error(object, "HEAD", f))
    }

    async fn put_mode(&self, object: &str, bytes: Bytes, mode: PutMode) -> Result<ObjectVersion, (Failure, bool)> {
        let path = self.path(object).map_err(|e| {
            (
                Failure::Store(object_store::Error::Generic {
                    store: "bcv",
                    source: Box::new(PermanentError(e.to_string())),
                }),
                false,
            )
        })?;
        let kind = if matches!(mode, PutMode::Overwrite) { OpKind::Put } else { OpKind::ConditionalPut };
        let is_update = matches!(mode, PutMode::Update(_));
        let store = &self.inner.store;
        self.run(kind, bytes.len() as u64, || {
            let payload = PutPayload::from_bytes(bytes.clone());
            let opts = PutOptions { mode: mode.clone(), ..Default::default() };
            let path = &path;
            async move {
                match store.put_opts(path, payload, opts).await {
                    Ok(r) => Ok(version_of(r.e_tag, r.version)),
                    // S3 answers 409 (mapped to AlreadyExists) when concurrent If-Match requests collide: that
                    // is "try again", not "exists".
                    Err(object_store::Error::AlreadyExists { source, .. }) if is_update => {
                        Err(Failure::Store(object_store::Error::Generic { store: "bcv", source }))
                    }
                    Err(e) => Err(Failure::Store(e)),
                }
            }
        })
        .await
    }

    /// Writes an object unconditionally (overwrites). Returns the new version.
    ///
    /// # Errors
    /// [`VfsError::Store`] after retries; [`VfsError::InvalidArgument`] for a bad object name.
    pub async fn put(&self, object: &str, bytes: Bytes) -> VfsResult<ObjectVersion> {
        self.path(object)?;
        self.put_mode(object, bytes, PutMode::Overwrite).await.map_err(|(f, _)| self.failure_error(object, "PUT", f))
    }

    /// Writes an object only if it does not exist yet. Returns the new version.
    ///
    /// # Errors
    /// [`VfsError::AlreadyExists`] if it exists (unless an earlier attempt of this call failed ambiguously and the
    /// object now holds exactly `bytes`: then that attempt landed and this returns its version);
    /// [`VfsError::Store`] after retries.
    pub async fn put_if_absent(&self, object: &str, bytes: Bytes) -> VfsResult<ObjectVersion> {
        self.path(object)?;
        match self.put_mode(object, bytes.clone(), PutMode::Create).await {
            Ok(v) => Ok(v),
            Err((Failure::Store(object_store::Error::AlreadyExists { .. }), ambiguous)) => {
                if ambiguous && let Some(v) = self.landed(object, &bytes).await? {
                    return Ok(v);
                }
                Err(VfsError::AlreadyExists { container: self.inner.label.clone(), object: object.to_string() })
            }
            Err((f, _)) => Err(self.failure_error(object, "PUT", f)),
        }
    }

    /// Writes an object only if its current version is `expected` (compare-and-swap). Returns the new version.
    ///
    /// # Errors
    /// [`VfsError::Conflict`] if the object changed or does not exist (unless an earlier attempt of this call
    /// failed ambiguously and the object now holds exactly `bytes`: then that attempt landed and this returns its
    /// version); [`VfsError::Store`] after retries (a store without conditional updates fails here with
    /// `NotImplemented` as the source).
    pub async fn put_if_match(&self, object: &str, bytes: Bytes, expected: &ObjectVersion) -> VfsResult<ObjectVersion> {
        self.path(object)?;
        let mode = PutMode::Update(expected.clone().into());
        match self.put_mode(object, bytes.clone(), mode).await {
            Ok(v) => Ok(v),
            Err((Failure::Store(object_store::Error::Precondition { .. }), ambiguous)) => {
                if ambiguous && let Some(v) = self.landed(object, &bytes).await? {
                    return Ok(v);
                }
                Err(VfsError::Conflict { container: self.inner.label.clone(), object: object.to_string() })
            }
            Err((f, _)) => Err(self.failure_error(object, "PUT", f)),
        }
    }

    /// After an ambiguous conditional write lost its condition: did our own earlier attempt land? Reads the
    /// object back; `Some(version)` if it holds exactly `bytes`.
    async fn landed(&self, object: &str, bytes: &Bytes) -> VfsResult<Option<ObjectVersion>> {
        match self.get(object).await {
            Ok(f) if f.bytes == *bytes => {
                tracing::debug!(container = %self.inner.label, object, "an ambiguous conditional write had landed");
                Ok(Some(f.version))
            }
            Ok(_) | Err(VfsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object. Deleting a missing object succeeds (stores disagree on whether it is an error).
    ///
    /// # Errors
    /// [`VfsError::Store`] after retries.
    pub async fn delete(&self, object: &str) -> VfsResult<()> {
        let path = self.path(object)?;
        let store = &self.inner.store;
        let got = self
            .run(OpKind::Delete, 0, || async {
                let mut results = store.delete_stream(futures::stream::once(futures::future::ok(path.clone())).boxed());
                while let Some(r) = results.next().await {
                    match r {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(Failure::Store(e)),
                    }
                }
                Ok(())
            })
            .await;
        got.map_err(|(f, _)| self.failure_error(object, "DELETE", f))
    }

    /// Every object in the container (names, sizes, modification times), in no particular order.
    ///
    /// # Errors
    /// [`VfsError::Store`] after retries (the whole listing is retried).
    pub async fn list(&self) -> VfsResult<Vec<ObjectInfo>> {
        let store = &self.inner.store;
        let got = self
            .run(OpKind::List, 0, || async {
                let metas: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await?;
                Ok(metas
                    .into_iter()
                    .map(|m| ObjectInfo {
                        name: m.location.to_string(),
                        size: m.size,
                        last_modified_unix_ms: m.last_modified.timestamp_millis(),
                    })
                    .collect::<Vec<_>>())
            })
            .await;
        got.map_err(|(f, _)| self.failure_error("", "LIST", f))
    }

    /// Proves that the store honours conditional writes, once per `ContainerStore` (clones share the result;
    /// concurrent callers wait for one check). On a probe object `.bcv-cas-probe-<random>`:
    /// create it; create it again (must be refused as existing); update it with a made-up version (must be
    /// refused as a conflict); update it with its real version (must succeed); delete it.
    ///
    /// # Errors
    /// [`VfsError::ConditionalWritesUnsupported`] naming the check that failed; other errors (network, auth) as
    /// they come, in which case the check runs again next time.
    pub async fn check_conditional_writes(&self) -> VfsResult<()> {
        let mut checked = self.inner.cas_checked.lock().await;
        if *checked {
            return Ok(());
        }
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| VfsError::InvalidArgument(format!("no randomness: {e}")))?;
        let probe = format!(".bcv-cas-probe-{}", hex::encode(suffix));
        let result = self.probe_conditional_writes(&probe).await;
        if result.is_err() {
            // Best effort: a failed probe must not leave its object behind.
            let _ = self.delete(&probe).await;
        }
        result?;
        *checked = true;
        Ok(())
    }

    async fn probe_conditional_writes(&self, probe: &str) -> VfsResult<()> {
        let unsupported =
            |detail: String| VfsError::ConditionalWritesUnsupported { container: self.inner.label.clone(), detail };
        let first = match self.put_if_absent(probe, Bytes::from_static(b"bcv probe 1")).await {
            Ok(v) => v,
            Err(VfsError::Store { source: e, .. }) if not_available(&e) => {
                return Err(unsupported(format!("create-if-absent is not available: {e}")));
            }
            Err(e) => return Err(e),
        };
        match self.put_if_absent(probe, Bytes::from_static(b"bcv probe 2")).await {
            Err(VfsError::AlreadyExists { .. }) => {}
            Ok(_) => return Err(unsupported("create-if-absent overwrote an existing object".into())),
            Err(e) => return Err(e),
        }
        let bogus = ObjectVersion {
            e_tag: Some("\"bcv-made-up-etag-0000\"".into()),
            version: first.version.as_ref().map(|_| "1".to_string()),
        };
        match self.put_if_match(probe, Bytes::from_static(b"bcv probe 3"), &bogus).await {
            Err(VfsError::Conflict { .. }) => {}
            Ok(_) => return Err(unsupported("update-if-match accepted a made-up version".into())),
            Err(VfsError::Store { source: e, .. }) if not_available(&e) => {
                return Err(unsupported(format!("update-if-match is not available: {e}")));
            }
            Err(e) => return Err(e),
        }
        match self.put_if_match(probe, Bytes::from_static(b"bcv probe 4"), &first).await {
            Ok(_) => {}
            Err(VfsError::Conflict { .. }) => {
                return Err(unsupported("update-if-match refused the object's current version".into()));
            }
            Err(e) => return Err(e),
        }
        self.delete(probe).await
    }
}

/// Sorts and merges ranges that overlap or are less than `gap` bytes apart. Empty ranges are dropped.
fn merge_ranges(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    sorted.sort_unstable_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// True for a store error that means "this store cannot do that at all".
fn not_available(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging() {
        assert_eq!(merge_ranges(&[], 10), Vec::<Range<u64>>::new());
        assert_eq!(merge_ranges(&[5..6, 0..2, 3..4], 1), vec![0..6]);
        assert_eq!(merge_ranges(&[0..2, 10..12], 5), vec![0..2, 10..12]);
        assert_eq!(merge_ranges(&[0..20, 5..8], 0), vec![0..20]);
        assert_eq!(merge_ranges(&[0..0, 4..4], 0), Vec::<Range<u64>>::new());
    }
}
