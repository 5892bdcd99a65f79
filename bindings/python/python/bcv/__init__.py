"""bcv: byte streams, files, TCP sockets, HTTP/1.1, gzip and AES-GCM transformers with well-defined lifetimes,
and a block-cache SQLite VFS for databases stored in cloud containers.

Every object returned by bcv is a *handle* holding one reference to a node of the Rust core:

* Dropping the last Python reference **releases** it: that never blocks and never closes anything that a
  child still needs (a stream keeps its file, socket or transformer alive).
* ``close()`` is the deterministic, forced end (``with obj:`` calls it). It cascades: streams of a closed
  resource raise :class:`ClosedError` with ``reason == "PARENT"``.
* ``close_and_wait(timeout)`` / ``await obj.aclose()`` also wait until the OS resources are freed.
* A stream that was cut short never looks complete: ``read()`` returns ``b''`` only after the writer called
  ``finish()``; every other ending raises :class:`ClosedError` with a ``reason``.

At interpreter exit the runtime is shut down (``shutdown()``, default deadline 2 s, environment variable
``BCV_SHUTDOWN_TIMEOUT``) before non-daemon threads are joined, so threads blocked in bcv calls wake up
with ``ClosedError(RUNTIME_SHUTDOWN)``. Strict mode is configured with ``BCV_STRICT`` (``warn``,
``error``, optionally ``,wasip2``).

Values carried by :func:`future` are arbitrary Python objects.

HTTP/1.1: :func:`http_serve` returns an :class:`HttpServer` whose ``next_request()`` hands out
:class:`IncomingMessage` requests; :func:`http_request` returns the response as an :class:`IncomingMessage`.
A message's ``take_body()`` gives ``(body, trailers)``: both keep working after the message is dropped
(take the body, drop the request, keep reading), and end with ``ClosedError(PARENT)`` if it is closed.

TLS: ``TcpSocket.start_tls_client(server_name, trusted_roots_pem)`` / ``start_tls_server(cert_pem, key_pem)``
return a :class:`TlsSession` with plaintext streams; it is a dependent child of the socket (closing the
socket ends them with ``ClosedError(PARENT)``). A failed handshake raises :class:`AuthenticationError`.
:func:`self_signed_certificate` makes a ``(cert_pem, key_pem)`` pair for tests.

Block-cache VFS: SQLite databases kept as blocks plus a manifest in a container (a directory, S3, Azure,
GCS), read lazily through a local cache. :class:`Container` creates containers and uploads or downloads
database files without a cache; :class:`Vfs` owns a cache directory, attaches containers under aliases and
serves their databases as ``/ALIAS/DB``; :func:`connect` / :meth:`Vfs.connect` open them through the
DB-API 2.0 module :mod:`bcv.dbapi` (the stdlib :mod:`sqlite3` cannot use bcv's SQLite). Writes stay local
until :meth:`Vfs.upload`; :meth:`Vfs.poll` shows other clients' uploads; a lost race raises
:class:`ConflictError`. Background work is a :class:`Job` (``prefetch_start``, ``upload_start``).

Proxy-Wasm host: :class:`ProxyHost` compiles plugin modules (``load_module``) built with any proxy-wasm SDK
and starts VMs (``start_vm``, with Python callbacks for HTTP/gRPC callouts, properties, foreign functions
and logs); :meth:`ProxyVm.add_plugin` adds a plugin; :meth:`ProxyPlugin.http_context` /
:meth:`ProxyPlugin.tcp_context` give a context to feed a request, response or connection through, each step
returning an :class:`Action`. A trap or exceeded limit fails only that VM (:class:`VmFailedError`,
``ProxyVm.failure``); the plugin then fails open or closed (a 503 :class:`LocalResponse`).
"""

from __future__ import annotations

import atexit as _atexit
import gc as _gc
import os as _os
import sys as _sys
import threading as _threading

from . import dbapi
from ._bcv import (
    AEAD_KEY_LEN,
    DEFAULT_CAPACITY,
    Container,
    Daemon,
    FileSink,
    FutureReader,
    FutureWriter,
    HttpHead,
    HttpServer,
    IncomingMessage,
    Action,
    Callout,
    HttpContext,
    Job,
    LocalResponse,
    LogRecord,
    ProxyHost,
    ProxyModule,
    ProxyPlugin,
    ProxyVm,
    ReadStream,
    Resource,
    Scope,
    Secure,
    TcpListener,
    TcpContext,
    TcpSocket,
    TlsSession,
    Trailers,
    Vfs,
    WriteStream,
    __version__,
    aead_decrypt,
    aead_encrypt,
    ahttp_request,
    atcp_connect,
    check,
    diagnostics,
    future,
    generate_key,
    gzip_compress,
    gzip_decompress,
    http_request,
    http_serve,
    is_shut_down,
    pipe,
    read_file,
    reaper_flush,
    scope,
    self_signed_certificate,
    shutdown,
    spawn_pipe,
    stream_from_bytes,
    strict_diagnostics,
    tcp_connect,
    tcp_listen,
    wait_idle,
    write_file,
)
from ._bcv import _before_exit as _bcv_before_exit
from ._bcv import _gc_phase as _bcv_gc_phase
from ._errors import (
    AlreadyTakenError,
    AuthenticationError,
    BcvError,
    BusyError,
    CasMismatchError,
    ClosedError,
    ConflictError,
    ContextFinishedError,
    CorruptError,
    DaemonError,
    DaemonGoneError,
    DatabaseError,
    DataError,
    DecryptionError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    InvalidArgumentError,
    InvalidModuleError,
    LeaseHeldError,
    LeaseLostError,
    NotSupportedError,
    OperationalError,
    PluginRejectedError,
    ProgrammingError,
    ProxyError,
    ReadOnlyError,
    SecureContainerError,
    StrictModeViolation,
    TimeoutError,
    VmFailedError,
    Warning,
    WouldDeadlockError,
)
from ._io import ReadStreamIO, WriteStreamIO
from ._vfs import (
    CacheStats,
    CleanupReport,
    DatabaseInfo,
    DatabaseStatus,
    Lease,
    PollReport,
    PrefetchReport,
    UploadReport,
)
from .dbapi import Binary, apilevel, connect, paramstyle, threadsafety

__all__ = [
    "AEAD_KEY_LEN",
    "DEFAULT_CAPACITY",
    "Action",
    "AlreadyTakenError",
    "AuthenticationError",
    "BcvError",
    "Binary",
    "BusyError",
    "CacheStats",
    "Callout",
    "CasMismatchError",
    "CleanupReport",
    "ClosedError",
    "ConflictError",
    "Container",
    "ContextFinishedError",
    "CorruptError",
    "Daemon",
    "DaemonError",
    "DaemonGoneError",
    "DataError",
    "DatabaseError",
    "DatabaseInfo",
    "DatabaseStatus",
    "DecryptionError",
    "Error",
    "FileSink",
    "FutureReader",
    "FutureWriter",
    "HttpContext",
    "HttpHead",
    "HttpServer",
    "IncomingMessage",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidModuleError",
    "Job",
    "Lease",
    "LeaseHeldError",
    "LeaseLostError",
    "LocalResponse",
    "LogRecord",
    "NotSupportedError",
    "OperationalError",
    "PluginRejectedError",
    "PollReport",
    "PrefetchReport",
    "ProgrammingError",
    "ProxyError",
    "ProxyHost",
    "ProxyModule",
    "ProxyPlugin",
    "ProxyVm",
    "ReadOnlyError",
    "ReadStream",
    "ReadStreamIO",
    "Resource",
    "Scope",
    "Secure",
    "SecureContainerError",
    "StrictModeViolation",
    "TcpContext",
    "TcpListener",
    "TcpSocket",
    "TimeoutError",
    "TlsSession",
    "Trailers",
    "UploadReport",
    "Vfs",
    "VmFailedError",
    "Warning",
    "WouldDeadlockError",
    "WriteStream",
    "WriteStreamIO",
    "__version__",
    "aead_decrypt",
    "aead_encrypt",
    "ahttp_request",
    "apilevel",
    "atcp_connect",
    "check",
    "connect",
    "dbapi",
    "diagnostics",
    "future",
    "generate_key",
    "gzip_compress",
    "gzip_decompress",
    "http_request",
    "http_serve",
    "is_shut_down",
    "paramstyle",
    "pipe",
    "read_file",
    "reaper_flush",
    "scope",
    "self_signed_certificate",
    "shutdown",
    "spawn_pipe",
    "stream_from_bytes",
    "strict_diagnostics",
    "tcp_connect",
    "tcp_listen",
    "threadsafety",
    "wait_idle",
    "write_file",
]

_DEFAULT_SHUTDOWN_TIMEOUT = 2.0


def _shutdown_timeout() -> float:
    """The exit-time shutdown deadline in seconds: ``BCV_SHUTDOWN_TIMEOUT`` or 2.0."""
    text = _os.environ.get("BCV_SHUTDOWN_TIMEOUT", "")
    try:
        value = float(text) if text else _DEFAULT_SHUTDOWN_TIMEOUT
    except ValueError:
        return _DEFAULT_SHUTDOWN_TIMEOUT
    return value if value >= 0 else _DEFAULT_SHUTDOWN_TIMEOUT


def _exit_hook() -> None:
    """Shuts the runtime down at interpreter exit (LIFETIMES.md P3). Never raises; keeps the exit status."""
    if is_shut_down():
        return
    # Violations still queued on this thread must not stop the shutdown (they were already counted).
    while True:
        try:
            check()
            break
        except StrictModeViolation:
            continue
    try:
        shutdown(_shutdown_timeout())
    except TimeoutError as e:
        print(f"bcv: shutdown at exit timed out; nodes still busy: {list(e.stuck_node_ids)}", file=_sys.stderr)
    except BaseException:  # noqa: BLE001 - an exit hook must not change the exit status
        pass


def _final_exit_hook() -> None:
    """Last hook before finalization: shuts down if not done yet, then stops the SDK's threads from calling
    into Python and lets callbacks still running return (bounded by the shutdown deadline)."""
    _exit_hook()
    try:
        _bcv_before_exit(max(_shutdown_timeout(), 0.1))
    except BaseException:  # noqa: BLE001
        pass


# on_data callbacks wait while a garbage collection is in progress, so they are never delivered to a
# callback whose reference cycle is half cleared.
_gc.callbacks.append(_bcv_gc_phase)

# The first hook runs before threading joins non-daemon threads, so threads blocked in bcv calls wake up
# with ClosedError(RUNTIME_SHUTDOWN); the second runs last, right before the interpreter finalizes.
try:
    _threading._register_atexit(_exit_hook)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - other interpreters, or registering too late
    pass
_atexit.register(_final_exit_hook)
