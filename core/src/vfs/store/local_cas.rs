//! A local directory as a container, with compare-and-swap.
//!
//! `object_store::local::LocalFileSystem` makes `PutMode::Create` atomic (a staged file `link(2)`ed into place,
//! which fails if the target exists) but returns `NotImplemented` for `PutMode::Update`. [`LocalCas`] adds Update:
//!
//! 1. take an exclusive lock (`std::fs::File::lock`: `flock` on Unix, `LockFileEx` on Windows) on the sidecar file
//!    `<root>.cas-lock`, which sits *beside* the root directory so it never shows up in a listing;
//! 2. read the object's current ETag; if it is missing or differs from the expected one, fail with
//!    `Precondition`;
//! 3. write the new content with `PutMode::Overwrite` (a staged file `rename(2)`d into place, atomic);
//! 4. unlock (closing the lock file).
//!
//! Deletes take the same lock, so an update never resurrects an object deleted after its check. Unconditional
//! overwrites do not (blocks are written in parallel and never updated); they are last-writer-wins.
//!
//! **Local disks only.** The lock is advisory: every writer must go through `LocalCas` (any bcv process does).
//! `flock` is not reliable on NFS or SMB mounts, so a container on a network file system must not be written by
//! two machines. The local ETag is `inode-mtime(ns)-size`; in theory an inode number reused within one mtime tick
//! with the same size could match a stale ETag, which is why the manifest also carries its own generation number.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::vfs::{VfsError, VfsResult};

/// An [`ObjectStore`] over a local directory that implements every [`PutMode`], including `Update`.
///
/// Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct LocalCas {
    inner: Arc<LocalFileSystem>,
    root: PathBuf,
    lock_path: Arc<PathBuf>,
}

impl LocalCas {
    /// Opens the directory `root` as a container, creating it (and its parents) if missing.
    ///
    /// The lock file `<root>.cas-lock` is created beside it on the first conditional update.
    ///
    /// # Errors
    /// [`VfsError::Io`] when the directory cannot be created; [`VfsError::Config`] when `root` has no final
    /// component (`/`) or `object_store` refuses it.
    pub fn new(root: impl AsRef<FsPath>) -> VfsResult<LocalCas> {
        LocalCas::with_options(root, false)
    }

    /// Like [`LocalCas::new`]; with `fsync` true, successful writes are made durable (fsync of the file and its
    /// directory) before they return, at a large cost in write throughput.
    ///
    /// # Errors
    /// As [`LocalCas::new`].
    pub fn with_options(root: impl AsRef<FsPath>, fsync: bool) -> VfsResult<LocalCas> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).map_err(|e| VfsError::io("create directory", root, e))?;
        let root = std::fs::canonicalize(root).map_err(|e| VfsError::io("resolve", root, e))?;
        let Some(name) = root.file_name() else {
            return Err(VfsError::Config {
                url: root.display().to_string(),
                reason: "the root directory cannot be a container (no place for the lock file beside it)".into(),
            });
        };
        let mut lock_name = name.to_os_string();
        lock_name.push(".cas-lock");
        let lock_path = root.with_file_name(lock_name);
        let inner = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| VfsError::Config { url: root.display().to_string(), reason: e.to_string() })?
            .with_fsync(fsync);
        Ok(LocalCas { inner: Arc::new(inner), root, lock_path: Arc::new(lock_path) })
    }

    /// The container directory.
    pub fn root(&self) -> &FsPath {
        &self.root
    }

    /// The sidecar lock file (`<root>.cas-lock`).
    pub fn lock_path(&self) -> &FsPath {
        &self.lock_path
    }
}

/// The body of an update, run while holding the lock: check the ETag, then overwrite.
async fn update_locked(
    inner: &LocalFileSystem,
    location: &Path,
    payload: PutPayload,
    opts: PutOptions,
    expected_tag: &str,
) -> Result<PutResult> {
    let current = match inner.head(location).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { path, source }) => {
            return Err(object_store::Error::Precondition { path, source });
        }
        Err(e) => return Err(e),
    };
    if current.e_tag.as_deref() != Some(expected_tag) {
        return Err(object_store::Error::Precondition {
            path: location.to_string(),
            source: format!("ETag {:?} does not match {expected_tag:?}", current.e_tag).into(),
        });
    }
    inner.put_opts(location, payload, PutOptions { mode: PutMode::Overwrite, ..opts }).await
}

/// Takes the exclusive lock on a blocking thread; the lock is released when the returned file is dropped.
async fn lock(path: Arc<PathBuf>) -> Result<std::fs::File> {
    let locked = {
        let path = Arc::clone(&path);
        tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path.as_path())?;
            file.lock()?;
            Ok(file)
        })
        .await?
    };
    locked.map_err(|e| object_store::Error::Generic {
        store: "LocalCas",
        source: format!("cannot lock {}: {e}", path.display()).into(),
    })
}

impl fmt::Display for LocalCas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalCas({})", self.root.display())
    }
}

#[async_trait]
impl ObjectStore for LocalCas {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let PutMode::Update(expected) = &opts.mode else {
            return self.inner.put_opts(location, payload, opts).await;
        };
        let Some(expected_tag) = expected.e_tag.clone() else {
            return Err(object_store::Error::Precondition {
                path: location.to_string(),
                source: "an update of a local object needs the ETag it was read with".into(),
            });
        };
        // The check and the write run in their own task, so a caller that gives up (a timeout drops its future)
        // cannot release the lock while the write it started still lands.
        let inner = Arc::clone(&self.inner);
        let lock_path = Arc::clone(&self.lock_path);
        let location = location.clone();
        let task = tokio::spawn(async move {
            let guard = lock(lock_path).await?;
            let result = update_locked(&inner, &location, payload, opts, &expected_tag).await;
            drop(guard);
            result
        });
        task.await?
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let lock_path = Arc::clone(&self.lock_path);
        locations
            .then(move |location| {
                let inner = Arc::clone(&inner);
                let lock_path = Arc::clone(&lock_path);
                async move {
                    let location = location?;
                    let guard = lock(lock_path).await?;
                    let result = inner.delete(&location).await;
                    drop(guard);
                    result.map(|()| location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
