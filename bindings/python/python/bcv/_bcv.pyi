"""Typed stubs of the extension module ``bcv._bcv`` (re-exported by ``bcv``)."""

from __future__ import annotations

import os
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
