"""Report types of the block-cache VFS: small immutable records returned by :class:`bcv.Vfs`,
:class:`bcv.Container` and :class:`bcv.Job`.

They are frozen dataclasses: compare them with ``==``, turn them into dicts with
:func:`dataclasses.asdict`. Sizes are in bytes; sequences are tuples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Tuple

__all__ = [
    "CacheStats",
    "CleanupReport",
    "DatabaseInfo",
    "DatabaseStatus",
    "Lease",
    "PollReport",
    "PrefetchReport",
    "UploadReport",
]


@dataclass(frozen=True)
class PollReport:
    """What :meth:`bcv.Vfs.poll` changed.

    Attributes:
        manifest_changed: the container's manifest had changed since this client last read it.
        updated: databases whose new version is now visible (or will be, once their open transactions end).
        added: databases new in the container.
        removed: databases deleted from the container.
        conflicts: databases changed remotely while they have local changes here: uploading them fails
            with :class:`bcv.ConflictError` until they are reverted.
    """

    manifest_changed: bool
    updated: Tuple[str, ...]
    added: Tuple[str, ...]
    removed: Tuple[str, ...]
    conflicts: Tuple[str, ...]


@dataclass(frozen=True)
class UploadReport:
    """What :meth:`bcv.Vfs.upload` (or an upload job) did.

    Attributes:
        databases: ``(name, new_version)`` of every database uploaded.
        blocks_written: block objects written.
        bytes_written: bytes written in block objects.
        blocks_deduplicated: blocks already in the container (same content) that were not written again.
        blocks_deleted: garbage blocks deleted because their grace period had passed (``cleanup_grace``).
        rebases: times the upload re-based onto a manifest another client installed meanwhile.
    """

    databases: Tuple[Tuple[str, int], ...]
    blocks_written: int
    bytes_written: int
    blocks_deduplicated: int
    blocks_deleted: int
    rebases: int


@dataclass(frozen=True)
class PrefetchReport:
    """What :meth:`bcv.Vfs.prefetch` (or a prefetch job) did.

    Attributes:
        blocks: distinct blocks of the database, all cached now.
        bytes_fetched: bytes fetched from the store (0 when everything was cached already).
    """

    blocks: int
    bytes_fetched: int


@dataclass(frozen=True)
class DatabaseStatus:
    """One database of an attached container, as :meth:`bcv.Vfs.databases` sees it.

    Attributes:
        name: the database name.
        id: its id in the manifest (0 while it exists only locally).
        version: the manifest version its local image is based on.
        size: the image size.
        blocks: blocks in the image.
        dirty_blocks: blocks written locally and not uploaded.
        has_local_changes: there is something to upload.
        open_handles: SQLite files open on it (connections).
    """

    name: str
    id: int
    version: int
    size: int
    blocks: int
    dirty_blocks: int
    has_local_changes: bool
    open_handles: int


@dataclass(frozen=True)
class DatabaseInfo:
    """A database as listed from a container's manifest (:meth:`bcv.Container.list`).

    Attributes:
        name: the database name.
        id: its id in the manifest.
        version: uploads so far (1 after creation or copy).
        parent: the id of the database it shares blocks with as a diff (0: none).
        blocks: blocks in its image.
        size: the image size (blocks x block size).
    """

    name: str
    id: int
    version: int
    parent: int
    blocks: int
    size: int


@dataclass(frozen=True)
class CleanupReport:
    """What :meth:`bcv.Container.cleanup` did.

    Attributes:
        deleted: blocks deleted from the delete list (their grace period had passed).
        orphans_deleted: orphaned block objects deleted (in no database and not on the delete list, e.g.
            left by a crashed upload).
        waiting: blocks still waiting on the delete list.
    """

    deleted: int
    orphans_deleted: int
    waiting: int


@dataclass(frozen=True)
class CacheStats:
    """Activity and occupancy of a VFS's block cache (:meth:`bcv.Vfs.cache_stats`).

    Attributes:
        hits: reads served entirely from the cache.
        misses: reads that needed at least one fetch.
        bytes_fetched: bytes fetched from stores into the cache.
        evictions: clean slots evicted to make room.
        clean_slots: slots holding (part of) a block as uploaded.
        dirty_slots: slots holding a block written locally.
        block_size: the slot size (the containers' block size; 0 before the first attach).
        capacity: the configured size limit.
    """

    hits: int
    misses: int
    bytes_fetched: int
    evictions: int
    clean_slots: int
    dirty_slots: int
    block_size: int
    capacity: int


@dataclass(frozen=True)
class Lease:
    """A container's lease as recorded in ``bcv_lease.json`` (:meth:`bcv.Vfs.lease_obtain`,
    :meth:`bcv.Container.lease_status`, ...). Plain data: having one does not mean holding the lease.

    Attributes:
        holder: the holder's description, as given to obtain.
        token: 32 hex digits naming this holding (new at each obtain, kept by extends). Not a secret: another
            process of the application adopts, extends or releases the holding with it.
        generation: grows by one at each change of holder.
        acquired: when this holding began, Unix seconds (the holder's clock).
        expires: when it expires unless extended, Unix seconds (the holder's clock).
    """

    holder: str
    token: str
    generation: int
    acquired: float
    expires: float

    @property
    def expires_in(self) -> float:
        """Seconds until it expires by this machine's clock (negative once expired)."""
        return self.expires - time.time()

    @property
    def expired(self) -> bool:
        """True once the expiry has passed by this machine's clock (another client may take it over only
        after the clock-skew allowance on top)."""
        return self.expires_in <= 0
