//! Sealed local files: the journals, WAL files and temporary files of secure containers, stored encrypted.
//!
//! The logical file is cut into sectors of [`SECTOR`] bytes. Each is stored sealed, with its count of valid
//! bytes inside the sealed plaintext, at a fixed place in the physical file:
//!
//! ```text
//! physical sector i (at i × SEALED_SECTOR) = seal(context(LOCAL_FILE, i), data (SECTOR bytes) | valid (u32 LE))
//! ```
//!
//! Every sector but the last is full; the logical size is `(n - 1) × SECTOR + valid(last)`. A write rewrites
//! the sectors it touches (read, open, patch, seal with a fresh nonce). A torn trailing sector (a crash in the
//! middle of a write) is ignored, as SQLite ignores a torn journal or WAL tail; any other sector that does not
//! open is an authentication error, never silently returned as data.

use super::{Domain, SEAL_OVERHEAD, Sealer};
use crate::vfs::VfsError;

/// Logical bytes per sector.
pub(crate) const SECTOR: usize = 4096;
const PLAIN_SECTOR: usize = SECTOR + 4;
const SEALED_SECTOR: usize = PLAIN_SECTOR + SEAL_OVERHEAD;

/// The file under a sealed file: positioned reads and writes, size and truncation. Errors are SQLite result
/// codes from the platform file.
pub(crate) trait RawFile {
    /// Reads exactly `buf.len()` bytes at `offset` (the caller stays inside the file).
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::result::Result<(), i32>;
    /// Writes all of `data` at `offset`.
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> std::result::Result<(), i32>;
    /// The physical size.
    fn size(&mut self) -> std::result::Result<u64, i32>;
    /// Truncates (or extends) to `size` physical bytes.
    fn truncate(&mut self, size: u64) -> std::result::Result<(), i32>;
}

/// Why a sealed-file operation failed.
#[derive(Debug)]
pub(crate) enum SealedFileError {
    /// The platform file failed with this SQLite code.
    Raw(i32),
    /// A sector did not open (wrong key, tampering) or could not be sealed.
    Crypto(VfsError),
}

type Result<T> = std::result::Result<T, SealedFileError>;

/// Encrypted positioned I/O over a [`RawFile`], with the sealer of one container.
pub(crate) struct SealedFile<'a> {
    sealer: &'a Sealer,
    name: &'a str,
}

impl<'a> SealedFile<'a> {
    /// Sealed I/O with `sealer`; `name` appears in error messages.
    pub(crate) fn new(sealer: &'a Sealer, name: &'a str) -> SealedFile<'a> {
        SealedFile { sealer, name }
    }

    fn sectors(raw: &mut dyn RawFile) -> Result<u64> {
        Ok(raw.size().map_err(SealedFileError::Raw)? / SEALED_SECTOR as u64)
    }

    /// Reads and opens sector `i`: its data and valid length.
    fn load(&self, raw: &mut dyn RawFile, i: u64) -> Result<([u8; PLAIN_SECTOR], usize)> {
        let mut sealed = vec![0u8; SEALED_SECTOR];
        raw.read_exact_at(&mut sealed, i * SEALED_SECTOR as u64).map_err(SealedFileError::Raw)?;
        let mut plain = [0u8; PLAIN_SECTOR];
        self.sealer
            .open(Domain::LocalFile, i, &sealed, &mut plain, &format!("local file {} sector", self.name))
            .map_err(SealedFileError::Crypto)?;
        let valid = u32::from_le_bytes([plain[SECTOR], plain[SECTOR + 1], plain[SECTOR + 2], plain[SECTOR + 3]]);
        Ok((plain, (valid as usize).min(SECTOR)))
    }

    fn store(&self, raw: &mut dyn RawFile, i: u64, plain: &mut [u8; PLAIN_SECTOR], valid: usize) -> Result<()> {
        plain[SECTOR..].copy_from_slice(&(valid as u32).to_le_bytes());
        plain[valid..SECTOR].fill(0);
        let mut sealed = vec![0u8; SEALED_SECTOR];
        self.sealer
            .seal(Domain::LocalFile, i, plain, &mut sealed, &format!("local file {} sector", self.name))
            .map_err(SealedFileError::Crypto)?;
        raw.write_all_at(&sealed, i * SEALED_SECTOR as u64).map_err(SealedFileError::Raw)
    }

    /// The logical size.
    pub(crate) fn size(&self, raw: &mut dyn RawFile) -> Result<u64> {
        let n = Self::sectors(raw)?;
        if n == 0 {
            return Ok(0);
        }
        let (_, valid) = self.load(raw, n - 1)?;
        Ok((n - 1) * SECTOR as u64 + valid as u64)
    }

    /// Reads into `buf` at `offset`; returns the bytes inside the file (the rest of `buf` is zeroed).
    pub(crate) fn read(&self, raw: &mut dyn RawFile, buf: &mut [u8], offset: u64) -> Result<usize> {
        let size = self.size(raw)?;
        let valid = size.saturating_sub(offset).min(buf.len() as u64) as usize;
        buf[valid..].fill(0);
        let mut done = 0;
        while done < valid {
            let pos = offset + done as u64;
            let i = pos / SECTOR as u64;
            let within = (pos % SECTOR as u64) as usize;
            let n = (SECTOR - within).min(valid - done);
            let (plain, _) = self.load(raw, i)?;
            buf[done..done + n].copy_from_slice(&plain[within..within + n]);
            done += n;
        }
        Ok(valid)
    }

    /// Writes `data` at `offset`, zero-filling any gap after the current end.
    pub(crate) fn write(&self, raw: &mut dyn RawFile, data: &[u8], offset: u64) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let old_size = self.size(raw)?;
        let end = offset + data.len() as u64;
        let new_size = old_size.max(end);
        let sector = SECTOR as u64;
        // Sectors to rewrite: those the data touches, plus (when the file grows) the old last sector and any
        // gap sectors, whose valid counts change.
        let mut first = offset / sector;
        if new_size > old_size && old_size > 0 {
            first = first.min((old_size - 1) / sector);
        } else if new_size > old_size {
            first = 0;
        }
        let last = (end - 1) / sector;
        let existing = Self::sectors(raw)?;
        for i in first..=last {
            let (mut plain, _) = if i < existing { self.load(raw, i)? } else { ([0u8; PLAIN_SECTOR], 0) };
            let start = i * sector;
            let lo = offset.max(start);
            let hi = end.min(start + sector);
            if lo < hi {
                let from = (lo - offset) as usize;
                plain[(lo - start) as usize..(hi - start) as usize]
                    .copy_from_slice(&data[from..from + (hi - lo) as usize]);
            }
            let valid = new_size.saturating_sub(start).min(sector) as usize;
            self.store(raw, i, &mut plain, valid)?;
        }
        Ok(())
    }

    /// Sets the logical size to `size` (shrinking or zero-extending).
    pub(crate) fn truncate(&self, raw: &mut dyn RawFile, size: u64) -> Result<()> {
        let old = self.size(raw)?;
        if size > old {
            return self.write(raw, &vec![0u8; (size - old) as usize], old);
        }
        let sector = SECTOR as u64;
        let n = size.div_ceil(sector);
        if n > 0 {
            let (mut plain, _) = self.load(raw, n - 1)?;
            self.store(raw, n - 1, &mut plain, (size - (n - 1) * sector) as usize)?;
        }
        raw.truncate(n * SEALED_SECTOR as u64).map_err(SealedFileError::Raw)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Keyring, SecureMarker, SecureOptions};
    use super::*;

    struct Mem(Vec<u8>);

    impl RawFile for Mem {
        fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::result::Result<(), i32> {
            let o = offset as usize;
            if o + buf.len() > self.0.len() {
                return Err(522);
            }
            buf.copy_from_slice(&self.0[o..o + buf.len()]);
            Ok(())
        }
        fn write_all_at(&mut self, data: &[u8], offset: u64) -> std::result::Result<(), i32> {
            let o = offset as usize;
            if self.0.len() < o + data.len() {
                self.0.resize(o + data.len(), 0);
            }
            self.0[o..o + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn size(&mut self) -> std::result::Result<u64, i32> {
            Ok(self.0.len() as u64)
        }
        fn truncate(&mut self, size: u64) -> std::result::Result<(), i32> {
            self.0.resize(size as usize, 0);
            Ok(())
        }
    }

    fn sealer() -> Sealer {
        let opts = SecureOptions::aes_gcm(&Keyring::new(1, [3; 32]));
        let marker = SecureMarker::create("c", opts.cipher.as_ref(), 16384).unwrap();
        Sealer::for_container("c", &marker, &opts, 16384).unwrap()
    }

    #[test]
    fn behaves_like_a_plain_file() {
        let s = sealer();
        let f = SealedFile::new(&s, "t");
        let mut raw = Mem(Vec::new());
        let mut model: Vec<u8> = Vec::new();
        // Writes at varied offsets and lengths, including gaps and sector boundaries.
        let ops: [(u64, usize); 7] =
            [(0, 512), (512, 4104), (10_000, 30), (4090, 12), (20_000, 9000), (3, 1), (28_990, 20)];
        for (k, (off, len)) in ops.into_iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(k as u8 + 1)).collect();
            f.write(&mut raw, &data, off).unwrap();
            let end = off as usize + len;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&data);
            assert_eq!(f.size(&mut raw).unwrap(), model.len() as u64);
        }
        let mut all = vec![0u8; model.len() + 100];
        assert_eq!(f.read(&mut raw, &mut all, 0).unwrap(), model.len());
        assert_eq!(&all[..model.len()], &model[..]);
        assert!(all[model.len()..].iter().all(|&b| b == 0));
        let mut mid = vec![0u8; 5000];
        f.read(&mut raw, &mut mid, 4000).unwrap();
        assert_eq!(&mid[..], &model[4000..9000]);
        f.truncate(&mut raw, 4100).unwrap();
        model.truncate(4100);
        assert_eq!(f.size(&mut raw).unwrap(), 4100);
        let mut back = vec![0u8; 4100];
        f.read(&mut raw, &mut back, 0).unwrap();
        assert_eq!(back, model);
        f.truncate(&mut raw, 0).unwrap();
        assert_eq!(f.size(&mut raw).unwrap(), 0);
        assert!(raw.0.is_empty());
    }

    #[test]
    fn tampering_is_an_error_and_plaintext_never_stored() {
        let s = sealer();
        let f = SealedFile::new(&s, "t");
        let mut raw = Mem(Vec::new());
        let secret = b"very secret journal page content".repeat(200);
        f.write(&mut raw, &secret, 0).unwrap();
        assert!(!raw.0.windows(20).any(|w| w == &secret[..20]));
        raw.0[100] ^= 0x40;
        let mut buf = vec![0u8; 64];
        match f.read(&mut raw, &mut buf, 0) {
            Err(SealedFileError::Crypto(e)) => assert!(e.to_string().contains("authentication failed"), "{e}"),
            other => panic!("expected an authentication error, got {other:?}"),
        }
    }
}
