"""Exception classes raised by bcv.

Every exception raised by the SDK derives from :class:`BcvError`. Several also derive from the matching
built-in exception so that generic handlers keep working: :class:`ClosedError` is a
:class:`BrokenPipeError` (``errno == EPIPE``), :class:`TimeoutError` is a built-in :class:`TimeoutError`
(``errno == ETIMEDOUT``), :class:`InvalidArgumentError` is a :class:`ValueError`.

Operating-system failures (a file that cannot be opened, a port already in use) are raised as plain
:class:`OSError` subclasses (``FileNotFoundError``, ``OSError`` with ``errno == EADDRINUSE``, ...), with a
message naming the path or address.

The block-cache VFS and its DB-API (:mod:`bcv.dbapi`) use the PEP 249 hierarchy, rooted in :class:`BcvError`::

    BcvError
     +-- Warning
     +-- Error
          +-- InterfaceError
          +-- DatabaseError
               +-- DataError            (SQLITE_TOOBIG)
               +-- OperationalError     (busy, locked, I/O, store failures, a missing database or alias, ...)
               |    +-- ConflictError   (an upload or a bcv_kv commit lost against another client)
               +-- IntegrityError       (constraint violations)
               +-- InternalError
               +-- ProgrammingError     (SQL syntax, misuse, a closed connection or cursor)
               +-- NotSupportedError

Errors that come from SQLite carry its (extended) result code in ``sqlite_errorcode``.
"""

from __future__ import annotations

import errno as _errno
import builtins as _builtins
from typing import Any, Optional, Sequence

__all__ = [
    "BcvError",
    "ClosedError",
    "BusyError",
    "TimeoutError",
    "WouldDeadlockError",
    "AuthenticationError",
    "CorruptError",
    "AlreadyTakenError",
    "InvalidArgumentError",
    "StrictModeViolation",
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "ConflictError",
    "ProxyError",
    "InvalidModuleError",
    "PluginRejectedError",
    "VmFailedError",
    "ContextFinishedError",
    "CasMismatchError",
]


class BcvError(Exception):
    """Base class of every error raised by bcv."""


class ClosedError(BcvError, BrokenPipeError):
    """The stream, future or resource is closed: the data was cut short and is never complete.

    A reader gets this instead of a clean end of stream whenever the writer did not ``finish()``, a parent
    was closed, the runtime shut down, and so on. It is an :class:`OSError` with ``errno == EPIPE``.

    Attributes:
        reason: why the node was closed, one of ``"SELF"``, ``"PARENT"``, ``"PEER_DROPPED"``,
            ``"RUNTIME_SHUTDOWN"``, ``"HANDLE_RELEASED"``, ``"UPSTREAM"``, ``"SCOPE_EXITED"``,
            ``"ABANDONED"``.
        upstream: for ``reason == "UPSTREAM"``, the reason the upstream stage ended with; else ``None``.
        accepted: for a failed write, how many bytes of the caller's data were accepted before the
            error; else ``None``.
        value: for a failed :meth:`bcv.FutureWriter.write`, the value handed back so that resources
            inside it can be released; else ``None``.
    """

    reason: str
    upstream: Optional[str]
    accepted: Optional[int]
    value: Any

    def __init__(
        self,
        message: str,
        reason: str = "SELF",
        upstream: Optional[str] = None,
        accepted: Optional[int] = None,
        value: Any = None,
    ) -> None:
        super().__init__(_errno.EPIPE, message)
        self.reason = reason
        self.upstream = upstream
        self.accepted = accepted
        self.value = value

    def __reduce__(self) -> Any:
        return (type(self), (self.strerror, self.reason, self.upstream, self.accepted, self.value))


class BusyError(BcvError):
    """Another read (or write) is already in progress on this stream end; nothing was done."""


class TimeoutError(BcvError, _builtins.TimeoutError):  # noqa: A001 - the SDK's own TimeoutError
    """The operation did not complete in time. Nothing was lost; it may be retried.

    Also a built-in :class:`TimeoutError` (``errno == ETIMEDOUT``).

    Attributes:
        stuck_node_ids: for :func:`bcv.shutdown`, the ids of the nodes still busy at the deadline.
    """

    stuck_node_ids: Sequence[int]

    def __init__(self, message: str, stuck_node_ids: Sequence[int] = ()) -> None:
        super().__init__(_errno.ETIMEDOUT, message)
        self.stuck_node_ids = tuple(stuck_node_ids)

    def __reduce__(self) -> Any:
        return (type(self), (self.strerror, self.stuck_node_ids))


class WouldDeadlockError(BcvError, RuntimeError):
    """Waiting on this thread could deadlock (an SDK callback or runtime thread); nothing was waited for."""


class AuthenticationError(BcvError):
    """Encrypted input failed authentication: wrong key, tampered or truncated ciphertext."""


class CorruptError(BcvError):
    """Compressed or framed input is malformed or truncated, or a producer failed mid-stream."""


class AlreadyTakenError(BcvError):
    """A child that can be taken only once (a socket's stream, a future's value) was already taken."""


class InvalidArgumentError(BcvError, ValueError):
    """An argument was rejected (a bad key length, compression level, ...)."""


class StrictModeViolation(BcvError):
    """A strict-mode ordering violation recorded on this thread (level ``error``, see ``BCV_STRICT``).

    Raised at the next SDK call on the thread that caused it, or by :func:`bcv.check`; never inside a
    finalizer. Strict mode never changes behaviour: the operation that raised did nothing.

    Attributes:
        kind: ``"V1"`` ... ``"V6"`` (V2: writer released without ``finish()``, V3: future writer released
            without a value, V4: resource garbage-collected while open, V5: use after close, ...).
        node_id: the id of the node concerned.
        node_label: its label, e.g. ``"pipe writer"``.
        creation_backtrace: where the node was created, when strict mode was on at that time.
    """

    kind: str
    node_id: int
    node_label: str
    creation_backtrace: Optional[str]

    def __init__(
        self, message: str, kind: str = "", node_id: int = 0, node_label: str = "", creation_backtrace: Optional[str] = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.node_id = node_id
        self.node_label = node_label
        self.creation_backtrace = creation_backtrace

    def __reduce__(self) -> Any:
        return (type(self), (self.args[0], self.kind, self.node_id, self.node_label, self.creation_backtrace))


# --- PEP 249 (DB-API 2.0) exceptions of the block-cache VFS --------------------------------------------------


class Warning(BcvError):  # noqa: A001 - the name PEP 249 prescribes
    """An important warning (PEP 249). bcv does not raise it today; it exists for DB-API compatibility."""


class Error(BcvError):
    """Base class of the DB-API errors (PEP 249): catch it to handle every database error.

    Attributes:
        sqlite_errorcode: SQLite's extended result code when SQLite reported the error (e.g. 2067 for a
            UNIQUE constraint, 517 for ``SQLITE_BUSY_SNAPSHOT``); ``None`` otherwise.
    """

    sqlite_errorcode: Optional[int] = None


class InterfaceError(Error):
    """A misuse of the database interface rather than of the database."""


class DatabaseError(Error):
    """An error of the database: corrupt data, or the base of the more specific classes below."""


class DataError(DatabaseError):
    """A value is out of range or too big (``SQLITE_TOOBIG``)."""


class OperationalError(DatabaseError):
    """The database or its environment failed: busy or locked, an I/O or store error, an interrupted
    statement, a missing database or container alias, ..."""


class IntegrityError(DatabaseError):
    """A constraint was violated (``UNIQUE``, ``NOT NULL``, ``CHECK``, foreign keys)."""


class InternalError(DatabaseError):
    """SQLite reported an internal error."""


class ProgrammingError(DatabaseError):
    """SQL that does not parse, the wrong number or kind of parameters, or a call on a closed connection
    or cursor."""


class NotSupportedError(DatabaseError):
    """The operation is not supported."""


class ConflictError(OperationalError):
    """Another client changed the container first: an upload whose databases were changed remotely, or a
    ``bcv_kv`` transaction whose snapshot is stale (``SQLITE_BUSY_SNAPSHOT``). Nothing was overwritten and
    nothing local was lost: roll back (or revert), poll, and retry."""


# --- Secure containers, multi-process mode and leases --------------------------------------------------------


class DecryptionError(OperationalError, AuthenticationError):
    """Data of a secure container did not authenticate: a wrong key (the message names ``bcv_secure.json``),
    another cipher, or a tampered block (the message names the block object and chunk). Nothing was read."""


class SecureContainerError(OperationalError):
    """A secure container was attached without a key (``secure=``), a plaintext one with a key, or a daemon
    has no key for it. The message names the container."""


class ReadOnlyError(OperationalError):
    """A client of a :class:`bcv.Daemon` tried to write (upload, copy, delete): daemon clients are read-only."""


class DaemonError(OperationalError):
    """The daemon refused or failed a client's request; the message is the daemon's."""


class DaemonGoneError(DaemonError):
    """The daemon this VFS is a client of stopped or restarted. The next call reconnects (to a new daemon)."""


class LeaseHeldError(OperationalError):
    """Another client holds the container's lease: obtaining it, or an upload, copy or delete by a client that
    does not hold it, is refused. Nothing was written.

    Attributes:
        holder: the holder's description.
        until: its expiry, Unix seconds (the holder's clock).
    """

    holder: str
    until: float

    def __init__(self, message: str, holder: str = "", until: float = 0.0) -> None:
        super().__init__(message)
        self.holder = holder
        self.until = until

    def __reduce__(self) -> Any:
        return (type(self), (self.args[0], self.holder, self.until))


class LeaseLostError(OperationalError):
    """This client's lease expired, was released, or was taken over (the message names the new holder);
    whatever needed it was not done."""


class ProxyError(BcvError):
    """Base class of the errors of the Proxy-Wasm host (:class:`bcv.ProxyHost` and the objects it makes).

    A wait for a paused stream that runs out of time raises :class:`TimeoutError`, a call back into the VM
    from one of its own callbacks :class:`WouldDeadlockError`, a call on a closed object :class:`ClosedError`.
    """


class InvalidModuleError(ProxyError, ValueError):
    """A module is not a usable Proxy-Wasm module: not WebAssembly, no known ABI version marker, no allocator,
    no memory, or imports the host does not provide. The message names the module and the reason."""


class PluginRejectedError(ProxyError):
    """A plugin was not accepted: its canary or its real ``on_vm_start`` / ``on_configure`` failed or returned
    false. The VM keeps serving its other plugins."""


class VmFailedError(ProxyError):
    """A VM could not start or has failed (trap, CPU deadline, memory cap…). The host and other VMs keep working.

    Attributes:
        kind: the failure kind (``"trap"``, ``"cpu_deadline"``, ``"memory_limit"``, ``"restricted_hostcall"``,
            ``"proc_exit"``, ``"allocator"``, ``"vm_start_refused"``, ``"internal"``), or ``None`` when the VM
            could not be created at all.
    """

    def __init__(self, message: str, kind: Optional[str] = None) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.kind))


class ContextFinishedError(ProxyError):
    """A call on an HTTP or TCP context that has finished (``finish()``, or the plugin's ``proxy_done``)."""


class CasMismatchError(ProxyError):
    """A conditional write of shared data presented a CAS token that is no longer current."""
