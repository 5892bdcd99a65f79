"""Typed stubs of the extension module ``bcv._bcv`` (re-exported by ``bcv``)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from typing_extensions import Buffer, Self

from ._errors import BcvError
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
from .dbapi import Connection

__version__: str
DEFAULT_CAPACITY: int
AEAD_KEY_LEN: int

State = Literal["OPEN", "ORPHANED", "CLOSING", "CLOSED"]
Reason = Literal["SELF", "PARENT", "PEER_DROPPED", "RUNTIME_SHUTDOWN", "HANDLE_RELEASED", "UPSTREAM", "SCOPE_EXITED", "ABANDONED"]
StrPath = Union[str, "os.PathLike[str]"]
HttpFields = List[Tuple[str, str]]
HeadersArg = Optional[Union[Mapping[str, str], Iterable[Tuple[str, str]]]]
_T = TypeVar("_T")

class _Handle:
    """Methods every bcv handle has. Dropping the object releases its reference (never blocks)."""

    def close(self) -> None:
        """Forced, cascading close (reason ``SELF``); idempotent, returns at once."""
    def close_and_wait(self, timeout: float = 5.0) -> None:
        """Closes, then waits until in-flight operations returned and OS resources are freed.

        Raises ``bcv.TimeoutError`` after ``timeout``; ``WouldDeadlockError`` inside an SDK callback."""
    def aclose(self, timeout: float = 5.0) -> Awaitable[None]:
        """Awaitable ``close_and_wait`` that never blocks the event loop."""
    @property
    def state(self) -> State: ...
    @property
    def close_reason(self) -> Optional[Reason]: ...
    @property
    def id(self) -> int: ...
    @property
    def label(self) -> str: ...
    def detach_from_scope(self) -> None:
        """Lets this node outlive the ``bcv.scope()`` it was created in."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...
    def __aenter__(self) -> Awaitable[Self]: ...
    def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> Awaitable[None]: ...

class ReadStream(_Handle):
    """The read end of a byte stream. ``b''`` / ``None`` only at a clean end; else ``ClosedError``."""

    def read(self, n: int = -1, timeout: Optional[float] = None) -> bytes:
        """Up to ``n`` bytes (what is available, at least 1); ``n < 0`` reads to the end."""
    def read_chunk(self, max: int = 65536, timeout: Optional[float] = None) -> Optional[bytes]:
        """The next chunk (at most ``max`` bytes), or ``None`` at a clean end of stream."""
    def readinto(self, buf: Buffer, timeout: Optional[float] = None) -> int:
        """Reads into a writable buffer; 0 only at a clean end of stream."""
    @property
    def buffered(self) -> int: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...
    def aread(self, n: int = -1) -> Awaitable[bytes]: ...
    def aread_chunk(self, max: int = 65536) -> Awaitable[Optional[bytes]]: ...
    def __aiter__(self) -> ReadStream: ...
    def __anext__(self) -> Awaitable[bytes]: ...
    def on_data(self, callback: Callable[[Union[bytes, None, BcvError]], object]) -> None:
        """Delivers chunks to ``callback`` on an SDK thread, then ``None`` (clean end) or the error."""
    def as_file(self, timeout: Optional[float] = None) -> ReadStreamIO: ...

class WriteStream(_Handle):
    """The write end of a byte stream. ``finish()`` for a clean end; dropping it unfinished aborts."""

    def write(self, data: Buffer, timeout: Optional[float] = None) -> int:
        """Writes all of ``data``, waiting while the buffer is full; returns ``len(data)``."""
    def finish(self) -> None:
        """Ends the stream cleanly (idempotent)."""
    @property
    def peer_gone(self) -> bool: ...
    def awrite(self, data: Buffer) -> Awaitable[int]: ...
    def as_file(self, timeout: Optional[float] = None) -> WriteStreamIO: ...

class Resource(_Handle):
    """A file or transformer. Emits ``ResourceWarning`` if garbage-collected while open."""

class FileSink(_Handle):
    """A file being written from a stream; handle methods act on ``resource``."""

    @property
    def writer(self) -> WriteStream: ...
    @property
    def resource(self) -> Resource: ...
    def wait(self, timeout: Optional[float] = None) -> int:
        """The file's size once complete and synced; ``OSError`` if it was left partial."""
    def wait_async(self) -> Awaitable[int]: ...

class TcpListener(_Handle):
    """A listening TCP socket. Emits ``ResourceWarning`` if garbage-collected while open."""

    def accept(self, timeout: Optional[float] = None) -> TcpSocket: ...
    def aaccept(self) -> Awaitable[TcpSocket]: ...
    @property
    def local_addr(self) -> Tuple[str, int]: ...
    @property
    def port(self) -> int: ...

class TcpSocket(_Handle):
    """A connected TCP socket. Emits ``ResourceWarning`` if garbage-collected while open."""

    def take_receive(self) -> ReadStream: ...
    def take_send(self) -> WriteStream: ...
    def start_tls_client(
        self, server_name: str, trusted_roots_pem: Union[str, Buffer], timeout: Optional[float] = None
    ) -> TlsSession:
        """TLS client handshake; takes both streams. ``AuthenticationError`` if the certificate is not
        trusted for ``server_name``."""
    def start_tls_server(
        self, cert_pem: Union[str, Buffer], key_pem: Union[str, Buffer], timeout: Optional[float] = None
    ) -> TlsSession:
        """TLS server handshake; takes both streams. ``AuthenticationError`` if the handshake fails."""
    def astart_tls_client(self, server_name: str, trusted_roots_pem: Union[str, Buffer]) -> Awaitable[TlsSession]: ...
    def astart_tls_server(self, cert_pem: Union[str, Buffer], key_pem: Union[str, Buffer]) -> Awaitable[TlsSession]: ...
    @property
    def peer_addr(self) -> Tuple[str, int]: ...
    @property
    def local_addr(self) -> Tuple[str, int]: ...

class TlsSession(_Handle):
    """A TLS session over a ``TcpSocket``: a dependent child of it (closing the socket ends the session's
    streams with ``ClosedError(PARENT)``). Emits ``ResourceWarning`` if garbage-collected while active."""

    def take_receive(self) -> ReadStream:
        """The plaintext receive stream (once); ``b''`` only after the peer's close_notify."""
    def take_send(self) -> WriteStream:
        """The plaintext send stream (once); ``finish()`` sends close_notify, then FIN."""
    @property
    def peer_address(self) -> Tuple[str, int]:
        """A snapshot, readable after close."""
    @property
    def peer_addr(self) -> Tuple[str, int]: ...

class FutureWriter(_Handle):
    """The write end of a one-shot future carrying a Python object."""

    def write(self, value: Any) -> None:
        """Delivers ``value``; on failure ``ClosedError.value`` hands it back."""
    @property
    def peer_gone(self) -> bool: ...

class FutureReader(_Handle):
    """The read end of a one-shot future; ``await reader`` or ``reader.wait()``."""

    def wait(self, timeout: Optional[float] = None) -> Any: ...
    def wait_async(self) -> Awaitable[Any]: ...
    def __await__(self) -> Generator[Any, None, Any]: ...
    @property
    def done(self) -> bool: ...

class HttpServer(_Handle):
    """An HTTP/1.1 server. ``close()`` stops accepting and aborts open connections. Emits
    ``ResourceWarning`` if garbage-collected while open."""

    def next_request(self, timeout: Optional[float] = None) -> IncomingMessage:
        """The next request; ``bcv.TimeoutError`` after ``timeout`` (no request lost)."""
    def anext_request(self) -> Awaitable[IncomingMessage]: ...
    @property
    def local_address(self) -> Tuple[str, int]: ...
    @property
    def local_port(self) -> int: ...

class HttpHead:
    """A detached snapshot of a message head; keeps working after the message is closed."""

    @property
    def method(self) -> Optional[str]: ...
    @property
    def target(self) -> Optional[str]: ...
    @property
    def status(self) -> Optional[int]: ...
    @property
    def headers(self) -> HttpFields: ...
    def header(self, name: str) -> Optional[str]: ...

class IncomingMessage(_Handle):
    """A request received by an ``HttpServer`` or a response from ``http_request``.

    Its body and trailers (``take_body()``) keep working after it is dropped and end with
    ``ClosedError(PARENT)`` if it is closed. Its own methods raise ``ClosedError`` once it is closed."""

    @property
    def status(self) -> Optional[int]:
        """The response status; ``None`` for a request."""
    @property
    def method(self) -> Optional[str]:
        """The request method; ``None`` for a response."""
    @property
    def target(self) -> Optional[str]:
        """The request target (``/path?query``); ``None`` for a response."""
    @property
    def headers(self) -> HttpFields: ...
    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (case-insensitive)."""
    def head(self) -> HttpHead:
        """A detached snapshot of the head."""
    def take_body(self) -> Tuple[ReadStream, Trailers]:
        """``(body, trailers)``, once; ``AlreadyTakenError`` the second time."""
    def respond(self, status: int, headers: HeadersArg = None) -> WriteStream:
        """Server side: sends the head; ``finish()`` the returned stream to complete the response."""
    def respond_with(self, status: int, headers: HeadersArg = None, body: Buffer = b"") -> None:
        """Server side: responds with a complete body."""

class Trailers(_Handle):
    """The trailers of a message: ``wait()`` or ``await trailers`` once the body has ended."""

    def wait(self, timeout: Optional[float] = None) -> Optional[HttpFields]:
        """The trailer fields, or ``None`` if there were none; ``ClosedError(ABANDONED)`` if the body was
        dropped or closed before its end, ``ClosedError(PARENT)`` if the message was closed."""
    def wait_async(self) -> Awaitable[Optional[HttpFields]]: ...
    def __await__(self) -> Generator[Any, None, Optional[HttpFields]]: ...
    @property
    def done(self) -> bool: ...

class Scope:
    """An ownership scope: ``with bcv.scope():`` closes what was created inside it (``SCOPE_EXITED``)."""

    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...
    def close(self) -> None: ...
    def __len__(self) -> int: ...

# --- Block-cache VFS -------------------------------------------------------------------------------------------

ProgressCallback = Callable[[int, int], object]
SqlValue = Union[None, int, float, str, bytes]

class Vfs:
    """A block-cache VFS: a cache directory, the containers attached to it, and an SQLite VFS registered as
    ``name`` serving their databases as ``/ALIAS/DB``. ``close()`` / ``with`` cancels its jobs, closes its
    connections, unregisters the name and unlocks the directory; later calls raise ``ClosedError``."""

    def __init__(
        self,
        cache_dir: StrPath,
        *,
        name: str = "bcv",
        cache_size: Optional[int] = None,
        nrequest: int = 8,
        retries: Optional[int] = None,
        request_timeout: Optional[float] = None,
        lease_max_skew: Optional[float] = None,
        lease_safety_margin: Optional[float] = None,
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def is_daemon_client(self) -> bool:
        """True when a ``bcv.Daemon`` of another process serves this cache directory (then read-only)."""
    @property
    def cache_dir(self) -> Path: ...
    @property
    def closed(self) -> bool: ...
    @property
    def state(self) -> State: ...
    @property
    def id(self) -> int: ...
    def close(self) -> None:
        """Cancels jobs, closes connections, unregisters the VFS and unlocks the cache directory; idempotent."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...
    def attach(
        self, url: str, alias: Optional[str] = None, if_not_attached: bool = False, *, secure: Optional[Secure] = None
    ) -> str:
        """Attaches the container at ``url``; returns its alias (default: the URL's last component). A secure
        container needs ``secure``."""
    def lease_obtain(self, alias: str, holder: str, duration: float) -> Lease:
        """Obtains the lease of ``alias`` for ``duration`` seconds; ``LeaseHeldError`` if another client holds it."""
    def lease_extend(self, alias: str, duration: float) -> Lease:
        """Extends the lease this VFS holds; ``LeaseLostError`` if it is gone."""
    def lease_release(self, alias: str) -> None:
        """Releases the lease this VFS holds; ``LeaseLostError`` if it is gone."""
    def lease_status(self, alias: str) -> Optional[Lease]:
        """The lease recorded in the container now, or ``None``."""
    def lease_held(self, alias: str) -> Optional[Lease]:
        """The lease this VFS holds (no request), or ``None``."""
    def lease_adopt(self, alias: str, token: str) -> Lease:
        """Becomes the holder of the holding ``token`` obtained elsewhere."""
    def detach(self, alias: str) -> None:
        """Detaches ``alias``; ``OperationalError`` while connected or with local changes."""
    def attached(self) -> List[Tuple[str, str]]:
        """``(alias, url)`` of every attached container, sorted by alias."""
    def path(self, alias: str, db: str) -> str:
        """``"/alias/db"``."""
    def poll(self, alias: str) -> PollReport:
        """Fetches the manifest if it changed and makes new versions visible."""
    def upload(self, alias: str, cleanup_grace: Optional[float] = None) -> UploadReport:
        """Uploads local changes; ``ConflictError`` if another client changed the same databases first."""
    def upload_start(self, alias: str, cleanup_grace: Optional[float] = None) -> Job:
        """``upload`` in the background; ``Job.wait()`` returns the ``UploadReport``."""
    def prefetch(self, alias: str, db: str, progress: Optional[ProgressCallback] = None) -> PrefetchReport:
        """Fetches every block of ``db`` the cache lacks; ``progress(done, total)`` in bytes."""
    def prefetch_start(self, alias: str, db: str) -> Job:
        """``prefetch`` in the background; ``Job.wait()`` returns the ``PrefetchReport``."""
    def revert(self, alias: str, db: Optional[str] = None) -> List[str]:
        """Drops local changes of ``db`` (or of every database); returns the databases reverted."""
    def copy(self, alias: str, src: str, dst: str) -> None:
        """Copies database ``src`` to a new database ``dst`` in the container."""
    def delete(self, alias: str, db: str) -> None:
        """Deletes database ``db`` from the container."""
    def databases(self, alias: str) -> List[DatabaseStatus]:
        """The status of every database of ``alias``."""
    def manifest(self, alias: str) -> Dict[str, Any]:
        """The manifest as this client last saw it (the shape of ``Container.manifest()`` without ``etag``)."""
    def meter(self, alias: str) -> Dict[str, Dict[str, Union[int, float]]]:
        """Request counters per kind and ``"total"``: requests, bytes_up, bytes_down, errors, retries,
        estimated_cost."""
    def cache_stats(self) -> CacheStats:
        """Cache activity and occupancy."""
    def connect(
        self,
        alias: str,
        db: str,
        *,
        read_only: bool = False,
        create: bool = True,
        timeout: float = 5.0,
        isolation_level: Optional[str] = "DEFERRED",
    ) -> Connection:
        """``bcv.connect(self, self.path(alias, db), ...)``: a DB-API connection."""
    def _open(self, path: str, read_only: bool, create: bool, timeout: float) -> SqlConnection: ...

class Job(_Handle):
    """A background prefetch or upload. Releasing it does not stop it; ``cancel()`` / ``close()`` does."""

    @property
    def progress(self) -> Tuple[int, int]:
        """``(done, total)`` bytes."""
    @property
    def status(self) -> Literal["running", "done", "failed", "cancelled"]: ...
    @property
    def description(self) -> str: ...
    def cancel(self) -> None:
        """Stops the job at its next block; returns at once."""
    def wait(self, timeout: Optional[float] = None) -> Union[PrefetchReport, UploadReport]:
        """The job's report; raises its error, ``ClosedError`` if cancelled, ``bcv.TimeoutError`` on timeout."""

class Container:
    """Operations on one container without a cache."""

    def __init__(
        self,
        url: str,
        *,
        nrequest: int = 8,
        retries: Optional[int] = None,
        request_timeout: Optional[float] = None,
        secure: Optional[Secure] = None,
    ) -> None: ...
    @property
    def url(self) -> str:
        """The URL without secrets."""
    def is_secure(self) -> bool:
        """True when the container has a ``bcv_secure.json`` marker."""
    def lease_obtain(self, holder: str, duration: float) -> Lease: ...
    def lease_extend(self, duration: float, token: Optional[str] = None) -> Lease: ...
    def lease_release(self, token: Optional[str] = None) -> None: ...
    def lease_status(self) -> Optional[Lease]: ...
    def lease_adopt(self, token: str) -> Lease: ...
    def create(self, block_size: int = 4194304, name_bytes: int = 16, overwrite: bool = False) -> None:
        """Creates an empty container; ``OperationalError`` if one exists unless ``overwrite``."""
    def destroy(self) -> int:
        """Deletes every object, the manifest first; returns how many other objects were deleted."""
    def list(self) -> List[DatabaseInfo]:
        """The databases of the container."""
    def upload_file(self, path: StrPath, name: str, progress: Optional[ProgressCallback] = None) -> int:
        """Uploads a local SQLite file as database ``name``; returns its version."""
    def download_file(self, name: str, path: StrPath, progress: Optional[ProgressCallback] = None) -> int:
        """Downloads database ``name`` to ``path``; returns its size."""
    def copy(self, src: str, dst: str) -> None: ...
    def delete(self, name: str) -> None: ...
    def cleanup(self, grace: float = 3600.0, find_orphans: bool = False) -> CleanupReport:
        """Deletes garbage blocks older than ``grace`` seconds (and orphans with ``find_orphans``)."""
    def manifest(self) -> Dict[str, Any]:
        """``block_size``, ``name_bytes``, ``max_db_id``, ``databases``, ``delete_list``, ``etag``."""

class SealingCipher(Protocol):
    """An application cipher for ``bcv.Secure(cipher=...)``: ``seal`` returns exactly ``len(plaintext) + 32``
    bytes bound to ``context``; ``open`` returns the plaintext or raises ``AuthenticationError`` / returns
    ``None``. Called from many threads."""

    @property
    def name(self) -> str: ...
    def seal(self, context: bytes, plaintext: bytes) -> bytes: ...
    def open(self, context: bytes, sealed: bytes) -> Optional[bytes]: ...

class Secure:
    """How a container is made secure: exactly one of ``keys`` (id -> 32-byte key; ``current`` seals new data,
    default the highest id), ``key_provider`` (``key_id -> bytes | None``, with ``current``) or ``cipher``."""

    def __init__(
        self,
        *,
        keys: Optional[Dict[int, bytes]] = None,
        current: Optional[int] = None,
        key_provider: Optional[Callable[[int], Optional[bytes]]] = None,
        cipher: Optional[SealingCipher] = None,
    ) -> None: ...
    @property
    def cipher_name(self) -> str: ...

class Daemon:
    """Serves ``cache_dir`` to other processes' ``Vfs(cache_dir)`` (read-only clients sharing one cache)."""

    def __init__(
        self,
        cache_dir: StrPath,
        *,
        cache_size: Optional[int] = None,
        retries: Optional[int] = None,
        request_timeout: Optional[float] = None,
        keys: Optional[Dict[str, Secure]] = None,
    ) -> None: ...
    @property
    def socket_path(self) -> Path: ...
    @property
    def stopped(self) -> bool: ...
    def stats(self) -> Dict[str, Any]:
        """``{"clients", "clients_total", "cache": CacheStats}``."""
    def stop(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: object) -> None: ...

def generate_key() -> bytes:
    """32 random bytes: a new AES-256 key."""

class SqlConnection:
    """The SQLite connection under a ``bcv.dbapi.Connection`` (internal)."""

    @property
    def path(self) -> str: ...
    @property
    def vfs(self) -> Vfs: ...
    def execute_batch(self, sql: str) -> None: ...
    def prepare(self, sql: str) -> SqlStatement: ...
    def changes(self) -> int: ...
    def total_changes(self) -> int: ...
    def last_insert_rowid(self) -> int: ...
    def in_transaction(self) -> bool: ...
    def is_open(self) -> bool: ...
    def interrupt(self) -> None: ...
    def close(self) -> None: ...

class SqlStatement:
    """A prepared statement of a ``SqlConnection`` (internal)."""

    def columns(self) -> List[str]: ...
    def decltypes(self) -> List[Optional[str]]: ...
    def parameter_count(self) -> int: ...
    def parameter_name(self, index: int) -> Optional[str]: ...
    def readonly(self) -> bool: ...
    def bind(self, values: Iterable[Any]) -> None: ...
    def bind_indexed(self, pairs: List[Tuple[int, Any]]) -> None: ...
    def step(self) -> Optional[Tuple[SqlValue, ...]]: ...
    def fetch(self, n: int) -> List[Tuple[SqlValue, ...]]: ...
    def reset(self) -> None: ...
    def finalize(self) -> None: ...

# --- Proxy-Wasm host -------------------------------------------------------------------------------------

HeaderPairs = List[Tuple[str, str]]
HeadersIn = Union[Mapping[Union[str, bytes], Union[str, bytes]], Iterable[Tuple[Union[str, bytes], Union[str, bytes]]]]
BytesIn = Union[str, Buffer]
ActionKind = Literal["continue", "pause", "local_response", "close"]

class LocalResponse:
    status: int
    headers: HeaderPairs
    body: bytes
    details: str
    grpc_status: Optional[int]

class Action:
    kind: ActionKind
    response: Optional[LocalResponse]
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class LogRecord:
    level: Literal["trace", "debug", "info", "warn", "error", "critical"]
    vm_id: str
    plugin: str
    context_id: int
    message: str

class Callout:
    kind: Literal["http", "grpc"]
    call_id: int
    upstream: str
    headers: HeaderPairs
    body: bytes
    trailers: HeaderPairs
    service: str
    method: str
    timeout: float
    plugin: str
    answered: bool
    def respond(self, headers: HeadersIn, body: Optional[BytesIn] = None, trailers: Optional[HeadersIn] = None) -> None: ...
    def respond_grpc(
        self,
        status: int = 0,
        message: Optional[BytesIn] = None,
        status_message: str = "",
        initial_metadata: Optional[HeadersIn] = None,
        trailing_metadata: Optional[HeadersIn] = None,
    ) -> None: ...
    def fail(self) -> None: ...

class _Closable:
    is_open: bool
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class ProxyModule:
    name: str
    abi: Literal["0.2.1", "0.2.0", "0.1.0"]
    from_cache: bool
    sha256: str

class ProxyHost(_Closable):
    def __init__(
        self,
        memory_limit: Optional[int] = None,
        callback_deadline: Optional[float] = None,
        pooling: bool = True,
        max_instances: Optional[int] = None,
        module_cache_dir: Optional[StrPath] = None,
    ) -> None: ...
    def load_module(self, name: str, wasm: Buffer) -> ProxyModule: ...
    def start_vm(
        self,
        module: ProxyModule,
        vm_id: str = "",
        configuration: Optional[BytesIn] = None,
        environment: Optional[Mapping[str, str]] = None,
        http_callout: Optional[Callable[[Callout], Optional[bool]]] = None,
        grpc_callout: Optional[Callable[[Callout], Optional[bool]]] = None,
        property: Optional[Callable[[Tuple[str, ...], str], Optional[BytesIn]]] = None,
        foreign_functions: Optional[Mapping[str, Callable[[bytes], Optional[BytesIn]]]] = None,
        log: Optional[Callable[[LogRecord], None]] = None,
        max_restarts: int = 0,
        restart_window: float = 60.0,
        restart_backoff: float = 1.0,
    ) -> ProxyVm: ...
    def metric(self, name: str) -> Optional[Dict[str, Any]]: ...
    def metrics(self) -> List[Dict[str, Any]]: ...
    def shared_data(self, vm_id: str, key: BytesIn) -> Optional[Tuple[bytes, int]]: ...
    def set_shared_data(self, vm_id: str, key: BytesIn, value: BytesIn, cas: int = 0) -> int: ...
    def enqueue(self, vm_id: str, name: str, item: BytesIn) -> None: ...

class ProxyVm(_Closable):
    restarts: int
    failure: Optional[str]
    failure_kind: Optional[str]
    memory_size: int
    context_count: int
    def add_plugin(
        self,
        name: str,
        configuration: Optional[BytesIn] = None,
        root_id: Optional[str] = None,
        fail_open: bool = False,
        properties: Optional[Mapping[str, BytesIn]] = None,
    ) -> ProxyPlugin: ...
    def take_logs(self) -> List[LogRecord]: ...
    def wait_idle(self, timeout: float) -> bool: ...

class ProxyPlugin(_Closable):
    name: str
    root_context_id: int
    def http_context(self) -> HttpContext: ...
    def tcp_context(self) -> TcpContext: ...
    def call_foreign_function(self, function_id: int, args: BytesIn) -> None: ...

class HttpContext(_Closable):
    id: int
    def on_request_headers(self, headers: HeadersIn, end_of_stream: bool = False) -> Action: ...
    def on_request_body(self, chunk: BytesIn, end_of_stream: bool = False) -> Action: ...
    def on_request_trailers(self, trailers: HeadersIn) -> Action: ...
    def on_response_headers(self, headers: HeadersIn, end_of_stream: bool = False) -> Action: ...
    def on_response_body(self, chunk: BytesIn, end_of_stream: bool = False) -> Action: ...
    def on_response_trailers(self, trailers: HeadersIn) -> Action: ...
    def wait(self, stream: Literal["request", "response"], timeout: float) -> Action: ...
    def request_headers(self) -> HeaderPairs: ...
    def request_trailers(self) -> HeaderPairs: ...
    def response_headers(self) -> HeaderPairs: ...
    def response_trailers(self) -> HeaderPairs: ...
    def take_request_body(self) -> bytes: ...
    def take_response_body(self) -> bytes: ...
    def filter_request_body(self, stream: ReadStream, pause_timeout: float = 30.0) -> ReadStream: ...
    def filter_response_body(self, stream: ReadStream, pause_timeout: float = 30.0) -> ReadStream: ...
    def property(self, path: str) -> Optional[bytes]: ...
    def set_property(self, path: str, value: BytesIn) -> None: ...
    def finish(self) -> bool: ...

class TcpContext(_Closable):
    id: int
    def on_new_connection(self) -> Action: ...
    def on_downstream_data(self, data: BytesIn, end_of_stream: bool = False) -> Action: ...
    def on_upstream_data(self, data: BytesIn, end_of_stream: bool = False) -> Action: ...
    def on_downstream_close(self, peer: Literal["unknown", "local", "remote"] = "remote") -> None: ...
    def on_upstream_close(self, peer: Literal["unknown", "local", "remote"] = "remote") -> None: ...
    def take_downstream_data(self) -> bytes: ...
    def take_upstream_data(self) -> bytes: ...
    def wait(self, stream: Literal["downstream", "upstream"], timeout: float) -> Action: ...
    def property(self, path: str) -> Optional[bytes]: ...
    def set_property(self, path: str, value: BytesIn) -> None: ...
    def finish(self) -> bool: ...

def pipe(capacity: int = 65536) -> Tuple[WriteStream, ReadStream]: ...
def stream_from_bytes(data: Buffer) -> ReadStream: ...
def read_file(path: StrPath) -> Tuple[Resource, ReadStream]: ...
def write_file(path: StrPath) -> FileSink: ...
def gzip_compress(input: ReadStream, level: int = 6) -> Tuple[Resource, ReadStream]: ...
def gzip_decompress(input: ReadStream) -> Tuple[Resource, ReadStream]: ...
def aead_encrypt(input: ReadStream, key: Buffer) -> Tuple[Resource, ReadStream]: ...
def aead_decrypt(input: ReadStream, key: Buffer) -> Tuple[Resource, ReadStream]: ...
def tcp_listen(host: str, port: int) -> TcpListener: ...
def tcp_connect(host: str, port: int, timeout: Optional[float] = None) -> TcpSocket: ...
def atcp_connect(host: str, port: int) -> Awaitable[TcpSocket]: ...
def self_signed_certificate(names: Union[str, Iterable[str]]) -> Tuple[str, str]:
    """``(cert_pem, key_pem)`` of a new self-signed certificate for ``names`` (tests, development)."""
def http_serve(host: str, port: int) -> HttpServer: ...
def http_request(
    method: str,
    url: str,
    headers: HeadersArg = None,
    body: Optional[Union[ReadStream, Buffer]] = None,
    timeout: Optional[float] = None,
) -> IncomingMessage:
    """Sends a request and waits for the response head; a ``ReadStream`` body is consumed."""
def ahttp_request(
    method: str, url: str, headers: HeadersArg = None, body: Optional[Union[ReadStream, Buffer]] = None
) -> Awaitable[IncomingMessage]: ...
def future() -> Tuple[FutureWriter, FutureReader]: ...
def spawn_pipe(src: ReadStream, dst: WriteStream) -> None: ...
def scope() -> Scope: ...
def diagnostics() -> Dict[str, Any]:
    """``{"live_nodes": int, "created_nodes": int, "violations": {"V1": int, ..., "V6": int},
    "live": [(id, label, state), ...]}``: counters, and the nodes not yet torn down (oldest first)."""
def strict_diagnostics() -> List[Dict[str, Any]]: ...
def shutdown(timeout: float = 2.0) -> None: ...
def is_shut_down() -> bool: ...
def reaper_flush() -> None: ...
def wait_idle(timeout: float = 5.0) -> int: ...
def check() -> None: ...
