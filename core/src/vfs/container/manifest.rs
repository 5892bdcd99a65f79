//! `manifest.bcv`: the one mutable object of a container, byte-compatible with CBS manifest version 4.
//!
//! See [`Manifest`] for the layout, the decoding rules and the mutation invariants.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use super::block_id::{BlockId, MAX_NAME_BYTES, MD5_NAME_BYTES, MIN_NAME_BYTES};

/// The manifest format version bcv reads and writes (the one CBS writes today).
pub const MANIFEST_VERSION: u32 = 4;

/// Size of the manifest header.
const HEADER_BYTES: usize = 24;
/// Size of one database header.
const DB_HEADER_BYTES: usize = 152;
/// Size of the name field of a database header.
const NAME_FIELD_BYTES: usize = 128;
/// Longest database name: the name field must keep a terminating NUL.
const MAX_DB_NAME_BYTES: usize = NAME_FIELD_BYTES - 1;
/// The top bit of the nBlocks field: the database has no local blocks (deleted locally).
const NO_LOCAL_BLOCKS_FLAG: u32 = 0x8000_0000;
/// Largest block count a database can have (nBlocks shares its field with the flag).
const MAX_BLOCKS: u32 = NO_LOCAL_BLOCKS_FLAG - 1;
/// Smallest block size.
const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size.
const MAX_BLOCK_SIZE: u32 = 1 << 28;

// ---------------------------------------------------------------------------------------------------------------
// Time: SQLite julian-day milliseconds
// ---------------------------------------------------------------------------------------------------------------

/// The Unix epoch (1970-01-01 00:00 UTC, julian day 2440587.5) in julian-day milliseconds.
const UNIX_EPOCH_JULIAN_MS: i128 = 210_866_760_000_000;

/// The current time as SQLite julian-day milliseconds (what `sqlite_timestamp()` gives CBS for delete-list entries).
///
/// A clock set before 1970 gives the corresponding earlier value; the result never wraps.
pub fn julian_ms_now() -> u64 {
    let unix_ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    };
    julian_ms_from_unix_ms(unix_ms)
}

/// Converts milliseconds since the Unix epoch to julian-day milliseconds (e.g. 1795217956311, i.e.
/// 2026-11-20 23:39:16.311 UTC, gives 212661977956311). Times before julian day 0 give 0.
pub fn julian_ms_from_unix_ms(ms: i64) -> u64 {
    let j = i128::from(ms) + UNIX_EPOCH_JULIAN_MS;
    u64::try_from(j.max(0)).unwrap_or(u64::MAX)
}

/// Converts julian-day milliseconds to milliseconds since the Unix epoch (negative before 1970); saturates at
/// `i64::MAX` for values beyond its range.
pub fn unix_ms_from_julian_ms(j: u64) -> i64 {
    let ms = i128::from(j) - UNIX_EPOCH_JULIAN_MS;
    i64::try_from(ms).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------------------------

/// One delete-list entry: a block no database references any more, kept until cleanup removes the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedBlock {
    /// The unreferenced block.
    pub id: BlockId,
    /// When it became unreferenced, in SQLite julian-day milliseconds (see [`julian_ms_now`]).
    pub timestamp_ms: u64,
}

/// The block list of a database as stored in the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockList {
    /// No parent: block `i` of the database is element `i`; the length equals the database's `n_blocks`.
    Full(Vec<BlockId>),
    /// A sparse diff against the database with id `parent`: block `i` is the entry for index `i` if there is one,
    /// otherwise block `i` of the parent. `entries` is sorted by index without duplicates; every index at or beyond
    /// the parent's block count is listed.
    Diff {
        /// Id of the parent database (never 0).
        parent: u32,
        /// `(block index, block id)` pairs, sorted by index.
        entries: Vec<(u32, BlockId)>,
    },
}

/// One database of a container, as described by its manifest header and block list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseEntry {
    /// The database id (≥ 1), unique in the container and never reused.
    pub id: u32,
    /// The database name: 1 to 127 bytes of UTF-8 without NUL.
    pub name: String,
    /// Incremented by each upload of this database; 1 after creation or copy.
    pub version: u32,
    /// Number of blocks of the database image (without the flag bit; at most 2^31 − 1).
    pub n_blocks: u32,
    /// The 0x80000000 flag of the nBlocks field (CBS: "no local blocks"), kept so round trips are byte-exact.
    pub no_local_blocks: bool,
    /// The stored block list.
    pub blocks: BlockList,
}

impl DatabaseEntry {
    /// The parent database id: the diff's parent, or 0 for a full list.
    pub fn parent(&self) -> u32 {
        match self.blocks {
            BlockList::Full(_) => 0,
            BlockList::Diff { parent, .. } => parent,
        }
    }
}

/// The decoded content of `manifest.bcv`.
///
/// # Layout
/// All integers are unsigned big-endian.
///
/// | bytes | content |
/// |---|---|
/// | 24 | header: version (4), block size, nDb, nDelete, namebytes, largest database id ever assigned |
/// | nDb × 152 | database headers sorted by id: id, parent id (0 = none), version, byte offset of the block list, nBlocks (top bit = "no local blocks"), number of diff entries, 128-byte NUL-padded UTF-8 name |
/// | nDelete × (namebytes + 8) | delete list: block id, julian-day millisecond timestamp of when it became unused |
/// | … | block lists, anywhere in the file (each database header gives the offset) |
///
/// A database without a parent has a *full* list of nBlocks ids (block `i` covers bytes `[i·szBlk, (i+1)·szBlk)` of
/// the database image). A database with a parent (made by a copy) has a *diff* list of `(u32 index, id)` entries,
/// sorted by index: block `i` is the entry for `i` if there is one, otherwise block `i` of the parent. Every index at
/// or beyond the parent's nBlocks must have an entry.
///
/// # Decoding rules
/// [`Manifest::decode`] never panics and validates everything it relies on later:
/// * the version must be [`MANIFEST_VERSION`], the block size a power of two in 512..=2^28, namebytes 12..=32;
/// * database ids must be non-zero, strictly increasing (sorted, no duplicates) and at most the stored largest id;
///   names must be non-empty, NUL-terminated within their 128 bytes, valid UTF-8 and unique (bytes after the
///   terminating NUL are ignored);
/// * every block list must lie inside the file. Lists may overlap each other or the headers: CBS never writes that,
///   but nothing breaks, so it is accepted;
/// * a diff must name an existing parent (a missing parent is an error: its content cannot be known), parents must
///   not form a cycle (a database that is its own parent is a cycle), diff entries must be strictly increasing and
///   below the database's nBlocks, and every index at or beyond the parent's nBlocks must be listed.
///
/// Hence [`Manifest::resolve`] succeeds for every database of a decoded manifest. The diff-entry count of a
/// database without a parent is ignored (CBS writes 0 there); the delete list is taken as stored (duplicates or
/// still-referenced ids are not rejected, the mutation methods clean them up).
///
/// # Encoding
/// [`Manifest::encode`] writes the header, the database headers, the delete list, then the block lists one after
/// the other in database order, which is exactly what CBS writes: re-encoding a decoded CBS manifest gives the same
/// bytes.
///
/// # Mutations
/// [`Manifest::add_database`], [`Manifest::copy_database`], [`Manifest::replace_blocks`] and
/// [`Manifest::remove_database`] keep these invariants: the resolved content of every database other than the one
/// changed stays the same, every block id that stops being referenced by any database goes to the delete list
/// exactly once, and no referenced id is on the delete list (an id found dead and then reused, e.g. by MD5 dedup,
/// leaves the delete list again). Each method either fully succeeds or leaves the manifest unchanged.
///
/// # Ownership
/// A `Manifest` is a plain value: decoding copies everything out of the input bytes, and `encode` returns a new
/// buffer. The fields are public for inspection. The mutation methods keep the invariants above; code that edits the
/// fields directly is responsible for them ([`encode`](Self::encode) writes whatever it is given, and
/// [`decode`](Self::decode) will reject an inconsistent result).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Size of every block object in bytes (a power of two, 512..=2^28), fixed when the container is created.
    pub block_size: u32,
    /// Length of every block id in bytes (12..=32).
    pub name_bytes: u32,
    /// The largest database id ever assigned; new databases get the next one.
    pub max_db_id: u32,
    /// The databases, sorted by id.
    pub databases: Vec<DatabaseEntry>,
    /// Blocks waiting for cleanup, in the order they were added.
    pub delete_list: Vec<DeletedBlock>,
}

/// Why a manifest could not be decoded, or why a change to it was refused.
///
/// Decoding errors name the database (by index in the header table and, once known, by id and name) and the byte
/// offset of the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file ends before a fixed-size part (header, database headers, delete list) does.
    #[error("manifest is {len} bytes long but its header and tables need {need} bytes")]
    TooShort {
        /// Bytes needed up to the end of the delete list (or of the header when the file is shorter than it).
        need: u64,
        /// Actual file length.
        len: usize,
    },
    /// The version field is not [`MANIFEST_VERSION`].
    #[error("unsupported manifest version {0} (bcv reads version {MANIFEST_VERSION})")]
    UnsupportedVersion(u32),
    /// The block size is not a power of two in 512..=2^28.
    #[error("invalid block size {0} (must be a power of two from 512 to 2^28)")]
    BadBlockSize(u32),
    /// namebytes is outside 12..=32.
    #[error("invalid namebytes {0} (must be 12 to 32)")]
    BadNameBytes(u32),
    /// A block id of a length outside 12..=32 bytes was given to [`BlockId::from_bytes`].
    #[error("a block id must be 12 to 32 bytes long, not {len}")]
    BadIdLength {
        /// The length given.
        len: usize,
    },
    /// A block id given to a mutation does not have the container's namebytes length.
    #[error("block id {id} is {} bytes long but the container uses {expected}-byte ids", id.len())]
    WrongIdLength {
        /// The offending id.
        id: BlockId,
        /// The container's namebytes.
        expected: u32,
    },
    /// A database header has id 0.
    #[error("database header #{index} at offset {offset}: database id 0 is invalid")]
    ZeroDatabaseId {
        /// Position in the header table (0-based).
        index: u32,
        /// Byte offset of the id field.
        offset: u64,
    },
    /// Database ids are not strictly increasing (duplicated or unsorted).
    #[error(
        "database header #{index} at offset {offset}: id {id} follows id {previous} (ids must be unique and sorted)"
    )]
    UnsortedDatabaseIds {
        /// Position in the header table.
        index: u32,
        /// Byte offset of the id field.
        offset: u64,
        /// The id found.
        id: u32,
        /// The id of the previous header.
        previous: u32,
    },
    /// A database id exceeds the "largest id ever assigned" of the header.
    #[error("database header #{index} at offset {offset}: id {id} exceeds the largest assigned id {max_db_id}")]
    DatabaseIdAboveMax {
        /// Position in the header table.
        index: u32,
        /// Byte offset of the id field.
        offset: u64,
        /// The id found.
        id: u32,
        /// The header's largest assigned id.
        max_db_id: u32,
    },
    /// A stored database name is empty, not NUL-terminated or not UTF-8.
    #[error("database header #{index} (id {id}) at offset {offset}: invalid name: {reason}")]
    BadDatabaseName {
        /// Position in the header table.
        index: u32,
        /// The database id.
        id: u32,
        /// Byte offset of the name field.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two stored databases have the same name.
    #[error("databases {first} and {second} are both named {name:?}")]
    DuplicateName {
        /// The name.
        name: String,
        /// Id of the first database with the name.
        first: u32,
        /// Id of the second one.
        second: u32,
    },
    /// A block list does not lie inside the file.
    #[error(
        "database {id} ({name:?}), header at offset {offset}: block list at offset {list_offset} of {list_bytes} bytes \
         ends past the end of the {file_len}-byte manifest"
    )]
    ListOutOfRange {
        /// The database id.
        id: u32,
        /// The database name.
        name: String,
        /// Byte offset of the database header.
        offset: u64,
        /// The list offset found in the header.
        list_offset: u32,
        /// Size of the list in bytes.
        list_bytes: u64,
        /// Manifest length.
        file_len: usize,
    },
    /// A diff entry's index is not below the database's block count.
    #[error(
        "database {id} ({name:?}): diff entry at offset {offset} has block index {index} but the database has \
         {n_blocks} blocks"
    )]
    DiffIndexOutOfRange {
        /// The database id.
        id: u32,
        /// The database name.
        name: String,
        /// Byte offset of the entry.
        offset: u64,
        /// The index found.
        index: u32,
        /// The database's block count.
        n_blocks: u32,
    },
    /// Diff entries are not strictly increasing by index.
    #[error(
        "database {id} ({name:?}): diff entry at offset {offset} has block index {index} after index {previous} \
         (entries must be sorted and unique)"
    )]
    UnsortedDiff {
        /// The database id.
        id: u32,
        /// The database name.
        name: String,
        /// Byte offset of the entry.
        offset: u64,
        /// The index found.
        index: u32,
        /// The index of the previous entry.
        previous: u32,
    },
    /// A block at or beyond the parent's length has no diff entry, so its content is unknown.
    #[error(
        "database {id} ({name:?}): block {index} is beyond its parent's {parent_blocks} blocks but has no diff entry"
    )]
    MissingDiffEntry {
        /// The database id.
        id: u32,
        /// The database name.
        name: String,
        /// The first unlisted index.
        index: u32,
        /// The parent's block count.
        parent_blocks: u32,
    },
    /// A diff names a parent database that does not exist.
    #[error("database {id} ({name:?}), header at offset {offset}: parent database {parent} does not exist")]
    UnknownParent {
        /// The database id.
        id: u32,
        /// The database name.
        name: String,
        /// Byte offset of the database header (0 when not decoding).
        offset: u64,
        /// The missing parent id.
        parent: u32,
    },
    /// Following parents from this database never reaches a full list (includes a database being its own parent).
    #[error("database {id} ({name:?}): its chain of parent databases forms a cycle")]
    ParentCycle {
        /// The database id.
        id: u32,
        /// The database name.
        name: String,
    },
    /// A full list's length differs from `n_blocks` (only possible in a manifest edited by hand, never decoded).
    #[error("database {id} ({name:?}): full block list has {list_len} ids but n_blocks is {n_blocks}")]
    BlockCountMismatch {
        /// The database id.
        id: u32,
        /// The database name.
        name: String,
        /// The stored `n_blocks`.
        n_blocks: u32,
        /// Length of the full list.
        list_len: usize,
    },
    /// No database has that name.
    #[error("no database named {name:?}")]
    NoSuchDatabase {
        /// The name asked for.
        name: String,
    },
    /// No database has that id.
    #[error("no database with id {id}")]
    NoSuchDatabaseId {
        /// The id asked for.
        id: u32,
    },
    /// A database with that name exists already.
    #[error("a database named {name:?} already exists")]
    DatabaseExists {
        /// The name.
        name: String,
    },
    /// The name cannot be stored in a manifest.
    #[error("invalid database name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A database would have more than 2^31 − 1 blocks.
    #[error("database {name:?} would have {count} blocks; at most 2147483647 fit in a manifest")]
    TooManyBlocks {
        /// The database name.
        name: String,
        /// The block count asked for.
        count: usize,
    },
    /// All 2^32 − 1 database ids have been assigned.
    #[error("all database ids have been assigned")]
    IdsExhausted,
    /// The database's version counter would overflow.
    #[error("database {name:?} has reached the largest version number")]
    VersionOverflow {
        /// The database name.
        name: String,
    },
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding helpers
// ---------------------------------------------------------------------------------------------------------------

/// Checked big-endian reads from the manifest bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    /// The `n` bytes at `off`, or `TooShort` naming the end that was needed.
    fn slice(&self, off: usize, n: usize) -> Result<&[u8], ManifestError> {
        let end = off.checked_add(n);
        end.and_then(|end| self.bytes.get(off..end))
            .ok_or(ManifestError::TooShort { need: (off as u64).saturating_add(n as u64), len: self.bytes.len() })
    }

    fn u32(&self, off: usize) -> Result<u32, ManifestError> {
        let s = self.slice(off, 4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&self, off: usize) -> Result<u64, ManifestError> {
        let s = self.slice(off, 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(s);
        Ok(u64::from_be_bytes(b))
    }

    fn id(&self, off: usize, name_bytes: usize) -> Result<BlockId, ManifestError> {
        BlockId::from_bytes(self.slice(off, name_bytes)?)
    }
}

/// A database header as read, before its list is parsed and cross-checked.
struct RawHeader {
    offset: usize,
    id: u32,
    parent: u32,
    version: u32,
    list_offset: u32,
    n_blocks: u32,
    no_local_blocks: bool,
    n_entries: u32,
    name: String,
}

fn check_block_size(block_size: u32) -> Result<(), ManifestError> {
    if block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        Ok(())
    } else {
        Err(ManifestError::BadBlockSize(block_size))
    }
}

fn check_name_bytes(name_bytes: u32) -> Result<(), ManifestError> {
    if (MIN_NAME_BYTES as u32..=MAX_NAME_BYTES as u32).contains(&name_bytes) {
        Ok(())
    } else {
        Err(ManifestError::BadNameBytes(name_bytes))
    }
}

/// Parses the 128-byte name field: bytes up to the first NUL, which must exist, non-empty, UTF-8.
fn parse_name(field: &[u8], index: u32, id: u32, offset: usize) -> Result<String, ManifestError> {
    let bad = |reason| ManifestError::BadDatabaseName { index, id, offset: offset as u64, reason };
    let end = field.iter().position(|&b| b == 0).ok_or_else(|| bad("no terminating NUL in the 128-byte field"))?;
    if end == 0 {
        return Err(bad("empty"));
    }
    let name = field.get(..end).ok_or_else(|| bad("no terminating NUL in the 128-byte field"))?;
    std::str::from_utf8(name).map(str::to_owned).map_err(|_| bad("not valid UTF-8"))
}

/// The diff entries expressing `child` against `parent`: every index where they differ or that lies beyond the
/// parent's length.
fn diff_entries(parent: &[BlockId], child: &[BlockId]) -> Vec<(u32, BlockId)> {
    child
        .iter()
        .enumerate()
        .filter(|&(i, id)| parent.get(i) != Some(id))
        // Lists are at most MAX_BLOCKS long (checked by the callers), so the index fits.
        .map(|(i, id)| (i as u32, *id))
        .collect()
}

/// Checks a name given to [`Manifest::add_database`] or [`Manifest::copy_database`].
fn check_new_name(name: &str) -> Result<(), ManifestError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_DB_NAME_BYTES {
        "longer than 127 bytes"
    } else if name.contains('\0') {
        "contains a NUL character"
    } else {
        return Ok(());
    };
    Err(ManifestError::InvalidName { name: name.to_owned(), reason })
}

fn check_count(name: &str, count: usize) -> Result<u32, ManifestError> {
    u32::try_from(count)
        .ok()
        .filter(|&n| n <= MAX_BLOCKS)
        .ok_or_else(|| ManifestError::TooManyBlocks { name: name.to_owned(), count })
}

/// Writes `id` as exactly `name_bytes` bytes (zero-padded or truncated if the caller broke the length invariant).
fn put_id(out: &mut Vec<u8>, id: &BlockId, name_bytes: usize) {
    let bytes = id.as_bytes();
    let n = bytes.len().min(name_bytes);
    out.extend_from_slice(&bytes[..n]);
    out.resize(out.len() + (name_bytes - n), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------------------------------------------

impl Manifest {
    /// An empty manifest for a new container.
    ///
    /// # Errors
    /// [`ManifestError::BadBlockSize`] unless `block_size` is a power of two in 512..=2^28;
    /// [`ManifestError::BadNameBytes`] unless `name_bytes` is 12..=32.
    pub fn new(block_size: u32, name_bytes: u32) -> Result<Manifest, ManifestError> {
        check_block_size(block_size)?;
        check_name_bytes(name_bytes)?;
        Ok(Manifest { block_size, name_bytes, max_db_id: 0, databases: Vec::new(), delete_list: Vec::new() })
    }

    /// Parses `manifest.bcv`. Never panics, whatever the input; see the [type documentation](Manifest) for what is
    /// checked and what is tolerated.
    ///
    /// # Errors
    /// A [`ManifestError`] naming the first problem found, with the database and byte offset concerned.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let len = bytes.len();
        if len < HEADER_BYTES {
            return Err(ManifestError::TooShort { need: HEADER_BYTES as u64, len });
        }
        let rd = Reader { bytes };
        let version = rd.u32(0)?;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        let block_size = rd.u32(4)?;
        check_block_size(block_size)?;
        let n_db = rd.u32(8)?;
        let n_delete = rd.u32(12)?;
        let name_bytes = rd.u32(16)?;
        check_name_bytes(name_bytes)?;
        let max_db_id = rd.u32(20)?;
        let nb = name_bytes as usize;

        // Size the fixed tables in u64 so no count can overflow, and check them before allocating anything.
        let delete_start = HEADER_BYTES as u64 + u64::from(n_db) * DB_HEADER_BYTES as u64;
        let tables_end = delete_start + u64::from(n_delete) * (nb as u64 + 8);
        if tables_end > len as u64 {
            return Err(ManifestError::TooShort { need: tables_end, len });
        }
        // Both fit in usize now: they are at most `len`.
        let delete_start = delete_start as usize;

        let mut headers = Vec::with_capacity(n_db as usize);
        let mut previous: Option<u32> = None;
        for index in 0..n_db {
            let offset = HEADER_BYTES + index as usize * DB_HEADER_BYTES;
            let id = rd.u32(offset)?;
            if id == 0 {
                return Err(ManifestError::ZeroDatabaseId { index, offset: offset as u64 });
            }
            if let Some(previous) = previous.filter(|&p| p >= id) {
                return Err(ManifestError::UnsortedDatabaseIds { index, offset: offset as u64, id, previous });
            }
            if id > max_db_id {
                return Err(ManifestError::DatabaseIdAboveMax { index, offset: offset as u64, id, max_db_id });
            }
            previous = Some(id);
            let raw_n = rd.u32(offset + 16)?;
            let name_offset = offset + 24;
            let name = parse_name(rd.slice(name_offset, NAME_FIELD_BYTES)?, index, id, name_offset)?;
            headers.push(RawHeader {
                offset,
                id,
                parent: rd.u32(offset + 4)?,
                version: rd.u32(offset + 8)?,
                list_offset: rd.u32(offset + 12)?,
                n_blocks: raw_n & !NO_LOCAL_BLOCKS_FLAG,
                no_local_blocks: raw_n & NO_LOCAL_BLOCKS_FLAG != 0,
                n_entries: rd.u32(offset + 20)?,
                name,
            });
        }

        let mut by_name: HashMap<&str, u32> = HashMap::with_capacity(headers.len());
        for h in &headers {
            if let Some(first) = by_name.insert(&h.name, h.id) {
                return Err(ManifestError::DuplicateName { name: h.name.clone(), first, second: h.id });
            }
        }

        let mut delete_list = Vec::with_capacity(n_delete as usize);
        for i in 0..n_delete as usize {
            let off = delete_start + i * (nb + 8);
            delete_list.push(DeletedBlock { id: rd.id(off, nb)?, timestamp_ms: rd.u64(off + nb)? });
        }

        let mut databases = Vec::with_capacity(headers.len());
        for h in &headers {
            databases.push(Self::decode_list(&rd, h, nb)?);
        }

        let manifest = Manifest { block_size, name_bytes, max_db_id, databases, delete_list };
        manifest.check_parents(&headers)?;
        Ok(manifest)
    }

    /// Reads the block list of one database header, checking its range and (for diffs) its entries.
    fn decode_list(rd: &Reader<'_>, h: &RawHeader, nb: usize) -> Result<DatabaseEntry, ManifestError> {
        let (count, item) = if h.parent == 0 { (h.n_blocks, nb) } else { (h.n_entries, nb + 4) };
        let list_bytes = u64::from(count) * item as u64;
        if u64::from(h.list_offset) + list_bytes > rd.bytes.len() as u64 {
            return Err(ManifestError::ListOutOfRange {
                id: h.id,
                name: h.name.clone(),
                offset: h.offset as u64,
                list_offset: h.list_offset,
                list_bytes,
                file_len: rd.bytes.len(),
            });
        }
        let start = h.list_offset as usize;
        let blocks = if h.parent == 0 {
            let mut ids = Vec::with_capacity(count as usize);
            for i in 0..count as usize {
                ids.push(rd.id(start + i * nb, nb)?);
            }
            BlockList::Full(ids)
        } else {
            let mut entries: Vec<(u32, BlockId)> = Vec::with_capacity(count as usize);
            for i in 0..count as usize {
                let off = start + i * item;
                let index = rd.u32(off)?;
                if index >= h.n_blocks {
                    return Err(ManifestError::DiffIndexOutOfRange {
                        id: h.id,
                        name: h.name.clone(),
                        offset: off as u64,
                        index,
                        n_blocks: h.n_blocks,
                    });
                }
                if let Some(&(previous, _)) = entries.last().filter(|&&(p, _)| p >= index) {
                    return Err(ManifestError::UnsortedDiff {
                        id: h.id,
                        name: h.name.clone(),
                        offset: off as u64,
                        index,
                        previous,
                    });
                }
                entries.push((index, rd.id(off + 4, nb)?));
            }
            BlockList::Diff { parent: h.parent, entries }
        };
        Ok(DatabaseEntry {
            id: h.id,
            name: h.name.clone(),
            version: h.version,
            n_blocks: h.n_blocks,
            no_local_blocks: h.no_local_blocks,
            blocks,
        })
    }

    /// Decode-time checks of the parent graph: parents exist, no cycles, indexes beyond a parent's end are listed.
    /// After this, [`resolve`](Self::resolve) succeeds for every database.
    fn check_parents(&self, headers: &[RawHeader]) -> Result<(), ManifestError> {
        let index_of: HashMap<u32, usize> = self.databases.iter().enumerate().map(|(i, d)| (d.id, i)).collect();
        for (db, h) in self.databases.iter().zip(headers) {
            let BlockList::Diff { parent, entries } = &db.blocks else { continue };
            let Some(&p) = index_of.get(parent) else {
                return Err(ManifestError::UnknownParent {
                    id: db.id,
                    name: db.name.clone(),
                    offset: h.offset as u64,
                    parent: *parent,
                });
            };
            let parent_blocks = self.databases[p].n_blocks;
            // Entries are sorted, unique and below n_blocks, so the tail is covered iff it has one entry per index.
            let tail = entries.iter().filter(|&&(i, _)| i >= parent_blocks).count() as u64;
            let needed = u64::from(db.n_blocks.saturating_sub(parent_blocks));
            if tail != needed {
                let listed: HashSet<u32> = entries.iter().map(|&(i, _)| i).collect();
                let index = (parent_blocks..db.n_blocks).find(|i| !listed.contains(i)).unwrap_or(parent_blocks);
                return Err(ManifestError::MissingDiffEntry { id: db.id, name: db.name.clone(), index, parent_blocks });
            }
        }

        // Cycle detection in linear time: 0 = not visited, 1 = on the current walk, 2 = reaches a full list.
        let mut state = vec![0u8; self.databases.len()];
        for start in 0..self.databases.len() {
            let mut path = Vec::new();
            let mut cur = start;
            loop {
                match state[cur] {
                    2 => break,
                    1 => {
                        let db = &self.databases[start];
                        return Err(ManifestError::ParentCycle { id: db.id, name: db.name.clone() });
                    }
                    _ => {}
                }
                state[cur] = 1;
                path.push(cur);
                match self.databases[cur].blocks {
                    BlockList::Full(_) => break,
                    // Parents were checked to exist above.
                    BlockList::Diff { parent, .. } => match index_of.get(&parent) {
                        Some(&p) => cur = p,
                        None => break,
                    },
                }
            }
            for i in path {
                state[i] = 2;
            }
        }
        Ok(())
    }

    /// Serializes the manifest exactly as CBS does: header, database headers, delete list, then the block lists in
    /// database order. Re-encoding a decoded CBS manifest reproduces its bytes.
    ///
    /// The manifest is written as given: a hand-edited manifest that breaks the invariants (ids of the wrong length,
    /// names longer than 127 bytes, a `Diff` with parent 0) yields bytes that [`decode`](Self::decode) rejects or
    /// reads differently (ids are zero-padded or truncated to `name_bytes`, names truncated to 127 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let nb = self.name_bytes as usize;
        let list_len = |db: &DatabaseEntry| match &db.blocks {
            BlockList::Full(ids) => ids.len() * nb,
            BlockList::Diff { entries, .. } => entries.len() * (nb + 4),
        };
        let lists_start = HEADER_BYTES + self.databases.len() * DB_HEADER_BYTES + self.delete_list.len() * (nb + 8);
        let total = lists_start + self.databases.iter().map(list_len).sum::<usize>();
        let mut out = Vec::with_capacity(total);

        for v in [
            MANIFEST_VERSION,
            self.block_size,
            self.databases.len() as u32,
            self.delete_list.len() as u32,
            self.name_bytes,
            self.max_db_id,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }

        let mut list_offset = lists_start;
        for db in &self.databases {
            let (parent, n_entries) = match &db.blocks {
                BlockList::Full(_) => (0, 0),
                BlockList::Diff { parent, entries } => (*parent, entries.len() as u32),
            };
            let flag = if db.no_local_blocks { NO_LOCAL_BLOCKS_FLAG } else { 0 };
            for v in [db.id, parent, db.version, list_offset as u32, (db.n_blocks & MAX_BLOCKS) | flag, n_entries] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            let name = db.name.as_bytes();
            let name = &name[..name.len().min(MAX_DB_NAME_BYTES)];
            out.extend_from_slice(name);
            out.resize(out.len() + (NAME_FIELD_BYTES - name.len()), 0);
            list_offset += list_len(db);
        }

        for d in &self.delete_list {
            put_id(&mut out, &d.id, nb);
            out.extend_from_slice(&d.timestamp_ms.to_be_bytes());
        }

        for db in &self.databases {
            match &db.blocks {
                BlockList::Full(ids) => ids.iter().for_each(|id| put_id(&mut out, id, nb)),
                BlockList::Diff { entries, .. } => {
                    for (index, id) in entries {
                        out.extend_from_slice(&index.to_be_bytes());
                        put_id(&mut out, id, nb);
                    }
                }
            }
        }
        out
    }

    /// The database named `name`, if any.
    pub fn database(&self, name: &str) -> Option<&DatabaseEntry> {
        self.databases.iter().find(|d| d.name == name)
    }

    /// The database with id `id`, if any.
    pub fn database_by_id(&self, id: u32) -> Option<&DatabaseEntry> {
        self.databases.iter().find(|d| d.id == id)
    }

    /// The full block list of database `id` (length `n_blocks`), applying parent diffs recursively.
    ///
    /// # Errors
    /// [`ManifestError::NoSuchDatabaseId`] if there is no such database; for a manifest not produced by
    /// [`decode`](Self::decode) or the mutation methods also [`ManifestError::UnknownParent`],
    /// [`ManifestError::ParentCycle`], [`ManifestError::MissingDiffEntry`], [`ManifestError::DiffIndexOutOfRange`]
    /// or [`ManifestError::BlockCountMismatch`].
    pub fn resolve(&self, id: u32) -> Result<Vec<BlockId>, ManifestError> {
        let start = self.database_by_id(id).ok_or(ManifestError::NoSuchDatabaseId { id })?;
        // Walk up to the full list; more steps than databases means a cycle.
        let mut chain = vec![start];
        let root = loop {
            let Some(db) = chain.last().copied() else { return Err(ManifestError::NoSuchDatabaseId { id }) };
            match &db.blocks {
                BlockList::Full(ids) => break ids,
                BlockList::Diff { parent, .. } => {
                    if chain.len() > self.databases.len() {
                        return Err(ManifestError::ParentCycle { id: start.id, name: start.name.clone() });
                    }
                    let p = self.database_by_id(*parent).ok_or_else(|| ManifestError::UnknownParent {
                        id: db.id,
                        name: db.name.clone(),
                        offset: 0,
                        parent: *parent,
                    })?;
                    chain.push(p);
                }
            }
        };
        let Some(root_db) = chain.pop() else { return Err(ManifestError::NoSuchDatabaseId { id }) };
        if root.len() != root_db.n_blocks as usize {
            return Err(ManifestError::BlockCountMismatch {
                id: root_db.id,
                name: root_db.name.clone(),
                n_blocks: root_db.n_blocks,
                list_len: root.len(),
            });
        }
        let mut blocks = root.clone();
        let mut parent_blocks = root_db.n_blocks;
        for db in chain.into_iter().rev() {
            let BlockList::Diff { entries, .. } = &db.blocks else { continue };
            let n = db.n_blocks as usize;
            blocks.truncate(n);
            let mut have = blocks.len();
            for &(index, bid) in entries {
                let i = index as usize;
                if i >= n {
                    return Err(ManifestError::DiffIndexOutOfRange {
                        id: db.id,
                        name: db.name.clone(),
                        offset: 0,
                        index,
                        n_blocks: db.n_blocks,
                    });
                }
                if i < have {
                    blocks[i] = bid;
                } else if i == have {
                    blocks.push(bid);
                    have += 1;
                } else {
                    break;
                }
            }
            if blocks.len() != n {
                return Err(ManifestError::MissingDiffEntry {
                    id: db.id,
                    name: db.name.clone(),
                    index: blocks.len() as u32,
                    parent_blocks,
                });
            }
            parent_blocks = db.n_blocks;
        }
        Ok(blocks)
    }

    /// Adds a new database with a full block list: id = largest id ever assigned + 1, version 1. Returns the id.
    ///
    /// Ids in `blocks` that were on the delete list (reused dead blocks) are taken off it.
    ///
    /// # Errors
    /// [`ManifestError::InvalidName`] (empty, over 127 bytes, contains NUL), [`ManifestError::DatabaseExists`],
    /// [`ManifestError::WrongIdLength`], [`ManifestError::TooManyBlocks`], [`ManifestError::IdsExhausted`].
    pub fn add_database(&mut self, name: &str, blocks: Vec<BlockId>) -> Result<u32, ManifestError> {
        check_new_name(name)?;
        if self.database(name).is_some() {
            return Err(ManifestError::DatabaseExists { name: name.to_owned() });
        }
        self.check_ids(&blocks)?;
        let n_blocks = check_count(name, blocks.len())?;
        let id = self.next_id()?;
        let before = self.referenced_blocks();
        self.insert(DatabaseEntry {
            id,
            name: name.to_owned(),
            version: 1,
            n_blocks,
            no_local_blocks: false,
            blocks: BlockList::Full(blocks),
        });
        self.collect_garbage(before, 0);
        Ok(id)
    }

    /// Replaces the whole block list of database `id` (what an upload does) and increments its version.
    ///
    /// A database with a full list keeps a full list; a diff stays a diff against the same parent, listing the
    /// indexes where `blocks` differs from the parent or lies beyond its end. Databases that are diffs against this
    /// one are re-expressed so their content is unchanged. Ids no database references any more are appended to the
    /// delete list with timestamp `now_ms` (never twice); ids in `blocks` that were on the delete list are taken off
    /// it. The `no_local_blocks` flag is left as it was.
    ///
    /// # Errors
    /// [`ManifestError::NoSuchDatabaseId`], [`ManifestError::WrongIdLength`], [`ManifestError::TooManyBlocks`],
    /// [`ManifestError::VersionOverflow`], or a [`resolve`](Self::resolve) error when the manifest was edited
    /// inconsistently. On error the manifest is unchanged.
    pub fn replace_blocks(&mut self, id: u32, blocks: Vec<BlockId>, now_ms: u64) -> Result<(), ManifestError> {
        let idx = self.index_of_id(id).ok_or(ManifestError::NoSuchDatabaseId { id })?;
        let db = &self.databases[idx];
        self.check_ids(&blocks)?;
        let n_blocks = check_count(&db.name, blocks.len())?;
        let version =
            db.version.checked_add(1).ok_or_else(|| ManifestError::VersionOverflow { name: db.name.clone() })?;
        let own = match db.blocks {
            BlockList::Full(_) => None,
            BlockList::Diff { parent, .. } => Some((parent, diff_entries(&self.resolve(parent)?, &blocks))),
        };
        let children = self.children_content(id, idx)?;

        // Nothing can fail from here on.
        let before = self.referenced_blocks();
        for (j, content) in children {
            self.databases[j].blocks = BlockList::Diff { parent: id, entries: diff_entries(&blocks, &content) };
        }
        let db = &mut self.databases[idx];
        db.version = version;
        db.n_blocks = n_blocks;
        db.blocks = match own {
            None => BlockList::Full(blocks),
            Some((parent, entries)) => BlockList::Diff { parent, entries },
        };
        self.collect_garbage(before, now_ms);
        Ok(())
    }

    /// Copies database `from` to a new database `to` the way CBS does: a diff against `from` with no entries,
    /// the same block count, version 1. No block is duplicated. Returns the new id.
    ///
    /// # Errors
    /// [`ManifestError::InvalidName`] for `to`, [`ManifestError::NoSuchDatabase`] for `from`,
    /// [`ManifestError::DatabaseExists`] for `to`, [`ManifestError::IdsExhausted`].
    pub fn copy_database(&mut self, from: &str, to: &str) -> Result<u32, ManifestError> {
        check_new_name(to)?;
        let src = self.database(from).ok_or_else(|| ManifestError::NoSuchDatabase { name: from.to_owned() })?;
        let (parent, n_blocks) = (src.id, src.n_blocks);
        if self.database(to).is_some() {
            return Err(ManifestError::DatabaseExists { name: to.to_owned() });
        }
        let id = self.next_id()?;
        self.insert(DatabaseEntry {
            id,
            name: to.to_owned(),
            version: 1,
            n_blocks,
            no_local_blocks: false,
            blocks: BlockList::Diff { parent, entries: Vec::new() },
        });
        Ok(id)
    }

    /// Removes database `name`. Its direct children (diffs against it) are re-expressed with unchanged content:
    /// as diffs against the removed database's own parent, or as full lists if it had none. Ids no database
    /// references any more go to the delete list with timestamp `now_ms`.
    ///
    /// # Errors
    /// [`ManifestError::NoSuchDatabase`], or a [`resolve`](Self::resolve) error when the manifest was edited
    /// inconsistently. On error the manifest is unchanged.
    pub fn remove_database(&mut self, name: &str, now_ms: u64) -> Result<(), ManifestError> {
        let idx = self.index_of_name(name).ok_or_else(|| ManifestError::NoSuchDatabase { name: name.to_owned() })?;
        let (id, parent) = (self.databases[idx].id, self.databases[idx].parent());
        let parent_content = if parent == 0 { None } else { Some(self.resolve(parent)?) };
        let children = self.children_content(id, idx)?;

        let before = self.referenced_blocks();
        for (j, content) in children {
            self.databases[j].blocks = match &parent_content {
                Some(p) => BlockList::Diff { parent, entries: diff_entries(p, &content) },
                None => BlockList::Full(content),
            };
        }
        self.databases.remove(idx);
        self.collect_garbage(before, now_ms);
        Ok(())
    }

    /// Every block id referenced by some database (the union of all full lists and diff entries, which is the union
    /// of the resolved lists).
    pub fn referenced_blocks(&self) -> HashSet<BlockId> {
        let mut set = HashSet::new();
        for db in &self.databases {
            match &db.blocks {
                BlockList::Full(ids) => set.extend(ids.iter().copied()),
                BlockList::Diff { entries, .. } => set.extend(entries.iter().map(|&(_, id)| id)),
            }
        }
        set
    }

    /// MD5 prefix → a referenced block id with that prefix, for upload dedup. Empty unless `name_bytes` ≥ 24 (shorter
    /// ids are random and carry no digest). When several ids share a digest, the first in database and list order is
    /// returned.
    pub fn blocks_by_md5(&self) -> HashMap<[u8; 16], BlockId> {
        let mut map = HashMap::new();
        if (self.name_bytes as usize) < MD5_NAME_BYTES {
            return map;
        }
        for db in &self.databases {
            let ids: Box<dyn Iterator<Item = &BlockId>> = match &db.blocks {
                BlockList::Full(ids) => Box::new(ids.iter()),
                BlockList::Diff { entries, .. } => Box::new(entries.iter().map(|(_, id)| id)),
            };
            for id in ids {
                if let Some(md5) = id.md5_prefix() {
                    map.entry(md5).or_insert(*id);
                }
            }
        }
        map
    }

    /// Removes the delete-list entries with `timestamp_ms <= cutoff_ms` and returns their ids (in list order), for
    /// cleanup to delete the objects. Later entries stay.
    pub fn take_deletable(&mut self, cutoff_ms: u64) -> Vec<BlockId> {
        let mut taken = Vec::new();
        self.delete_list.retain(|d| {
            let due = d.timestamp_ms <= cutoff_ms;
            if due {
                taken.push(d.id);
            }
            !due
        });
        taken
    }

    // --- private helpers -----------------------------------------------------------------------------------------

    fn index_of_id(&self, id: u32) -> Option<usize> {
        self.databases.iter().position(|d| d.id == id)
    }

    fn index_of_name(&self, name: &str) -> Option<usize> {
        self.databases.iter().position(|d| d.name == name)
    }

    fn check_ids(&self, blocks: &[BlockId]) -> Result<(), ManifestError> {
        match blocks.iter().find(|b| b.len() != self.name_bytes as usize) {
            Some(id) => Err(ManifestError::WrongIdLength { id: *id, expected: self.name_bytes }),
            None => Ok(()),
        }
    }

    /// The id for a new database: above the recorded maximum and above every existing id.
    fn next_id(&self) -> Result<u32, ManifestError> {
        let max = self.databases.iter().map(|d| d.id).fold(self.max_db_id, u32::max);
        max.checked_add(1).ok_or(ManifestError::IdsExhausted)
    }

    /// Inserts a database keeping the list sorted by id, and records its id as the largest assigned.
    fn insert(&mut self, db: DatabaseEntry) {
        self.max_db_id = db.id;
        let pos = self.databases.partition_point(|d| d.id < db.id);
        self.databases.insert(pos, db);
    }

    /// Index and resolved content of every database whose list is a diff against `id` (excluding `idx` itself).
    fn children_content(&self, id: u32, idx: usize) -> Result<Vec<(usize, Vec<BlockId>)>, ManifestError> {
        let mut out = Vec::new();
        for (j, db) in self.databases.iter().enumerate() {
            if j != idx && db.parent() == id {
                out.push((j, self.resolve(db.id)?));
            }
        }
        Ok(out)
    }

    /// Puts ids referenced in `before` but no longer referenced on the delete list (sorted, once each) and takes
    /// every referenced id off it.
    fn collect_garbage(&mut self, before: HashSet<BlockId>, now_ms: u64) {
        let after = self.referenced_blocks();
        self.delete_list.retain(|d| !after.contains(&d.id));
        let listed: HashSet<BlockId> = self.delete_list.iter().map(|d| d.id).collect();
        let mut garbage: Vec<BlockId> =
            before.into_iter().filter(|id| !after.contains(id) && !listed.contains(id)).collect();
        garbage.sort_unstable();
        self.delete_list.extend(garbage.into_iter().map(|id| DeletedBlock { id, timestamp_ms: now_ms }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlockId {
        BlockId::from_bytes(&[n; 16]).unwrap()
    }

    #[test]
    fn julian_conversion() {
        assert_eq!(julian_ms_from_unix_ms(0), 210_866_760_000_000);
        assert_eq!(unix_ms_from_julian_ms(210_866_760_000_000), 0);
        assert_eq!(julian_ms_from_unix_ms(i64::MIN), 0);
        assert_eq!(unix_ms_from_julian_ms(0), -210_866_760_000_000);
        let now = julian_ms_now();
        assert!(now > 212_000_000_000_000);
    }

    #[test]
    fn new_validates() {
        assert!(Manifest::new(4096, 16).is_ok());
        assert_eq!(Manifest::new(4097, 16), Err(ManifestError::BadBlockSize(4097)));
        assert_eq!(Manifest::new(256, 16), Err(ManifestError::BadBlockSize(256)));
        assert_eq!(Manifest::new(1 << 29, 16), Err(ManifestError::BadBlockSize(1 << 29)));
        assert_eq!(Manifest::new(4096, 11), Err(ManifestError::BadNameBytes(11)));
        assert_eq!(Manifest::new(4096, 33), Err(ManifestError::BadNameBytes(33)));
    }

    #[test]
    fn empty_round_trip() {
        let m = Manifest::new(65536, 16).unwrap();
        let bytes = m.encode();
        assert_eq!(bytes.len(), HEADER_BYTES);
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn diff_chain_resolves() {
        let mut m = Manifest::new(4096, 16).unwrap();
        let a = m.add_database("a", vec![id(1), id(2)]).unwrap();
        m.copy_database("a", "b").unwrap();
        let b = m.database("b").unwrap().id;
        m.replace_blocks(b, vec![id(1), id(3), id(4)], 5).unwrap();
        m.copy_database("b", "c").unwrap();
        let c = m.database("c").unwrap().id;
        assert_eq!(m.resolve(c).unwrap(), vec![id(1), id(3), id(4)]);
        m.replace_blocks(a, vec![id(9)], 6).unwrap();
        assert_eq!(m.resolve(b).unwrap(), vec![id(1), id(3), id(4)]);
        assert_eq!(m.resolve(c).unwrap(), vec![id(1), id(3), id(4)]);
        assert_eq!(m.delete_list, vec![DeletedBlock { id: id(2), timestamp_ms: 6 }]);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn resolve_detects_hand_made_cycle() {
        let mut m = Manifest::new(4096, 16).unwrap();
        m.add_database("a", vec![id(1)]).unwrap();
        m.copy_database("a", "b").unwrap();
        m.databases[0].blocks = BlockList::Diff { parent: 2, entries: vec![] };
        assert!(matches!(m.resolve(1), Err(ManifestError::ParentCycle { id: 1, .. })));
        assert!(matches!(m.resolve(2), Err(ManifestError::ParentCycle { id: 2, .. })));
    }
}
