//! Exclusive ownership of a cache directory by one process.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::vfs::{VfsError, VfsResult};

/// The name of the lock file inside a cache directory.
pub(crate) const LOCK_FILE: &str = "bcv.lock";

/// An exclusive advisory lock (`flock`) on `DIR/bcv.lock`, held for as long as this value lives.
///
/// The lock file records who holds it ("pid N"), so a second opener's [`VfsError::CacheBusy`] can say which
/// process owns the directory. Locks are per open file, so a second cache opened on the same directory inside
/// the same process is refused as well.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock or fails at once with `CacheBusy`; never waits.
    pub(crate) fn acquire(dir: &Path) -> VfsResult<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| VfsError::io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(VfsError::CacheBusy {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() { "another process".to_string() } else { holder.to_string() },
                });
            }
            Err(TryLockError::Error(e)) => return Err(VfsError::io("lock", &path, e)),
        }
        let me = format!("pid {}", std::process::id());
        let written =
            file.set_len(0).and_then(|_| file.seek(SeekFrom::Start(0))).and_then(|_| file.write_all(me.as_bytes()));
        written.map_err(|e| VfsError::io("write", &path, e))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file's path.
    #[allow(dead_code)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
