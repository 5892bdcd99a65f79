//! Application-provided stores: a small blocking trait, adapted to `object_store`.
//!
//! CBS lets an application plug in its own cloud module; [`CustomStore`] is bcv's equivalent, shaped so that the
//! C ABI can implement it with a table of function pointers. Every method is blocking and is called on tokio's
//! blocking pool (`spawn_blocking`), never on an async worker thread. Object names are the container's object
//! names (`manifest.bcv`, `<hex>.bcv`, …); ETags are opaque strings that change whenever the content changes.
//!
//! [`CustomObjectStore`] implements [`ObjectStore`] over it, so retries, metering, fault injection and the
//! conditional-write self-test apply unchanged; [`ContainerStore::from_custom`](super::ContainerStore::from_custom)
//! is the shortcut.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use super::retry::PermanentError;

/// Why a [`CustomStore`] call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CustomError {
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// `put_if_absent` found the object already there.
    #[error("already exists")]
    AlreadyExists,
    /// `put_if_match` found another version (or no object).
    #[error("precondition failed")]
    Precondition,
    /// Anything else. `transient: true` means a retry may succeed (timeouts, 5xx); false means it cannot.
    #[error("{message}")]
    Other {
        /// What happened, for the error message.
        message: String,
        /// Whether bcv should retry the call.
        transient: bool,
    },
}

/// A container in an application-provided store. Blocking; called from several threads at once.
pub trait CustomStore: Send + Sync + 'static {
    /// The whole object and its ETag, or `None` if it does not exist.
    fn get(&self, name: &str) -> std::result::Result<Option<(Vec<u8>, String)>, CustomError>;

    /// `len` bytes of the object starting at `start`. Fewer bytes only if the object ends first.
    /// [`CustomError::NotFound`] if the object does not exist.
    fn get_range(&self, name: &str, start: u64, len: u64) -> std::result::Result<Vec<u8>, CustomError>;

    /// Size and ETag of the object, or `None` if it does not exist. The default reads the whole object with
    /// [`CustomStore::get`]; implement it when the store can do better.
    fn head(&self, name: &str) -> std::result::Result<Option<(u64, String)>, CustomError> {
        Ok(self.get(name)?.map(|(data, etag)| (data.len() as u64, etag)))
    }

    /// Writes the object unconditionally; returns the new ETag.
    fn put_overwrite(&self, name: &str, data: &[u8]) -> std::result::Result<String, CustomError>;

    /// Writes the object only if it does not exist ([`CustomError::AlreadyExists`] otherwise), atomically;
    /// returns the new ETag.
    fn put_if_absent(&self, name: &str, data: &[u8]) -> std::result::Result<String, CustomError>;

    /// Writes the object only if its current ETag is `etag` ([`CustomError::Precondition`] otherwise, also when
    /// it does not exist), atomically; returns the new ETag.
    fn put_if_match(&self, name: &str, data: &[u8], etag: &str) -> std::result::Result<String, CustomError>;

    /// Deletes the object. Deleting a missing object may succeed or return [`CustomError::NotFound`].
    fn delete(&self, name: &str) -> std::result::Result<(), CustomError>;

    /// Every object of the container: name and size.
    fn list(&self) -> std::result::Result<Vec<(String, u64)>, CustomError>;
}

/// An [`ObjectStore`] over a [`CustomStore`]. Object metadata has no modification time (the Unix epoch is
/// reported) and no version. Multipart uploads are not supported.
pub struct CustomObjectStore {
    custom: Arc<dyn CustomStore>,
    label: String,
}

impl CustomObjectStore {
    /// Adapts `custom`; `label` names it in `Display` and errors.
    pub fn new(custom: Arc<dyn CustomStore>, label: impl Into<String>) -> CustomObjectStore {
        CustomObjectStore { custom, label: label.into() }
    }

    async fn call<T, F>(&self, name: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn CustomStore) -> std::result::Result<T, CustomError> + Send + 'static,
    {
        let custom = Arc::clone(&self.custom);
        let answer = tokio::task::spawn_blocking(move || f(custom.as_ref())).await?;
        answer.map_err(|e| to_store_error(name, e))
    }
}

fn to_store_error(name: &str, e: CustomError) -> object_store::Error {
    let path = name.to_string();
    match e {
        CustomError::NotFound => object_store::Error::NotFound { path, source: "custom store: not found".into() },
        CustomError::AlreadyExists => {
            object_store::Error::AlreadyExists { path, source: "custom store: already exists".into() }
        }
        CustomError::Precondition => {
            object_store::Error::Precondition { path, source: "custom store: precondition failed".into() }
        }
        CustomError::Other { message, transient: true } => {
            object_store::Error::Generic { store: "CustomStore", source: message.into() }
        }
        CustomError::Other { message, transient: false } => {
            object_store::Error::Generic { store: "CustomStore", source: Box::new(PermanentError(message)) }
        }
    }
}

fn epoch() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(0, 0).unwrap_or_default()
}

fn meta(name: &str, size: u64, e_tag: Option<String>) -> Result<ObjectMeta> {
    Ok(ObjectMeta { location: Path::parse(name)?, last_modified: epoch(), size, e_tag, version: None })
}

fn not_implemented(operation: &str) -> object_store::Error {
    object_store::Error::NotImplemented { operation: operation.into(), implementer: "CustomObjectStore".into() }
}

impl fmt::Debug for CustomObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomObjectStore").field("label", &self.label).finish_non_exhaustive()
    }
}

impl fmt::Display for CustomObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomStore({})", self.label)
    }
}

fn stream_of(data: Bytes) -> GetResultPayload {
    GetResultPayload::Stream(futures::stream::once(async move { Ok(data) }).boxed())
}

#[async_trait]
impl ObjectStore for CustomObjectStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let name = location.to_string();
        let data: Bytes = payload.into();
        let n = name.clone();
        let e_tag = match opts.mode {
            PutMode::Overwrite => self.call(&name, move |c| c.put_overwrite(&n, &data)).await?,
            PutMode::Create => self.call(&name, move |c| c.put_if_absent(&n, &data)).await?,
            PutMode::Update(v) => {
                let Some(tag) = v.e_tag else {
                    return Err(object_store::Error::Precondition {
                        path: name,
                        source: "a custom store update needs the ETag it was read with".into(),
                    });
                };
                self.call(&name, move |c| c.put_if_match(&n, &data, &tag)).await?
            }
        };
        Ok(PutResult { e_tag: Some(e_tag), version: None, extensions: Default::default() })
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(not_implemented("put_multipart_opts"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let name = location.to_string();
        if options.version.is_some() {
            return Err(not_implemented("get_opts with a version"));
        }
        let n = name.clone();
        if options.head || options.range.is_some() {
            // Metadata first: a head needs nothing more, a ranged read needs the size and the ETag.
            let head = self.call(&name, move |c| c.head(&n)).await?;
            let Some((size, e_tag)) = head else {
                return Err(to_store_error(&name, CustomError::NotFound));
            };
            let meta = meta(&name, size, Some(e_tag))?;
            options.check_preconditions(&meta)?;
            if options.head {
                return Ok(GetResult {
                    payload: stream_of(Bytes::new()),
                    meta,
                    range: 0..size,
                    attributes: Default::default(),
                    extensions: Default::default(),
                });
            }
            let range = match &options.range {
                Some(GetRange::Bounded(r)) => r.start..r.end.min(size),
                Some(GetRange::Offset(o)) => *o..size,
                Some(GetRange::Suffix(s)) => size.saturating_sub(*s)..size,
                None => 0..size,
            };
            if range.start > range.end || (range.start >= size && size > 0) {
                return Err(object_store::Error::Generic {
                    store: "CustomStore",
                    source: Box::new(PermanentError(format!("range {range:?} is outside {name} ({size} bytes)"))),
                });
            }
            let (start, len) = (range.start, range.end - range.start);
            let n = name.clone();
            let data = self.call(&name, move |c| c.get_range(&n, start, len)).await?;
            return Ok(GetResult {
                payload: stream_of(Bytes::from(data)),
                meta,
                range,
                attributes: Default::default(),
                extensions: Default::default(),
            });
        }
        let got = self.call(&name, move |c| c.get(&n)).await?;
        let Some((data, e_tag)) = got else {
            return Err(to_store_error(&name, CustomError::NotFound));
        };
        let size = data.len() as u64;
        let meta = meta(&name, size, Some(e_tag))?;
        options.check_preconditions(&meta)?;
        Ok(GetResult {
            payload: stream_of(Bytes::from(data)),
            meta,
            range: 0..size,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let n = location.to_string();
            let (start, len) = (r.start, r.end.saturating_sub(r.start));
            let data = self.call(location.as_ref(), move |c| c.get_range(&n, start, len)).await?;
            out.push(Bytes::from(data));
        }
        Ok(out)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let custom = Arc::clone(&self.custom);
        locations
            .then(move |location| {
                let custom = Arc::clone(&custom);
                async move {
                    let location = location?;
                    let n = location.to_string();
                    let answer = tokio::task::spawn_blocking(move || custom.delete(&n)).await?;
                    answer.map_err(|e| to_store_error(location.as_ref(), e)).map(|()| location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let custom = Arc::clone(&self.custom);
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let listed = tokio::task::spawn_blocking(move || custom.list()).await;
            let items: Vec<Result<ObjectMeta>> = match listed {
                Err(join) => vec![Err(join.into())],
                Ok(Err(e)) => vec![Err(to_store_error("", e))],
                Ok(Ok(items)) => items
                    .into_iter()
                    .map(|(name, size)| meta(&name, size, None))
                    .filter(|m| match (m, &prefix) {
                        (Ok(m), Some(p)) => m.location.prefix_matches(p),
                        _ => true,
                    })
                    .collect(),
            };
            futures::stream::iter(items)
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut objects = Vec::new();
        let mut common_prefixes = std::collections::BTreeSet::new();
        let depth = prefix.map(|p| p.parts().count()).unwrap_or(0);
        let mut listing = self.list(prefix);
        while let Some(m) = listing.next().await {
            let m = m?;
            let parts: Vec<_> = m.location.parts().collect();
            if parts.len() > depth + 1 {
                common_prefixes.insert(Path::from_iter(parts.into_iter().take(depth + 1)));
            } else {
                objects.push(m);
            }
        }
        Ok(ListResult {
            common_prefixes: common_prefixes.into_iter().collect(),
            objects,
            extensions: Default::default(),
        })
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let src = from.to_string();
        let dst = to.to_string();
        let create = matches!(options.mode, CopyMode::Create);
        self.call(to.as_ref(), move |c| {
            let (data, _) = c.get(&src)?.ok_or(CustomError::NotFound)?;
            if create { c.put_if_absent(&dst, &data) } else { c.put_overwrite(&dst, &data) }.map(|_| ())
        })
        .await
    }
}
