"""File-like adapters over bcv streams (``ReadStream.as_file()``, ``WriteStream.as_file()``)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pragma: no cover
    from ._bcv import ReadStream, WriteStream


class ReadStreamIO(io.RawIOBase):
    """A read-only raw binary file over a :class:`bcv.ReadStream`.

    Reads follow :class:`io.RawIOBase`: ``read(n)`` returns at most ``n`` bytes and ``b''`` only at a clean
    end of stream; a stream that was cut short raises :class:`bcv.ClosedError` (an :class:`OSError`), never a
    silent end of file. Wrap it in :class:`io.BufferedReader` for line or exact-size reads.

    The adapter borrows the stream: closing the adapter closes the stream; dropping it leaves the stream
    alone.
    """

    def __init__(self, stream: "ReadStream", timeout: Optional[float] = None) -> None:
        super().__init__()
        self._stream = stream
        self._timeout = timeout

    @property
    def stream(self) -> "ReadStream":
        """The underlying stream."""
        return self._stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        return self._stream.readinto(buffer, timeout=self._timeout)

    def read(self, size: Optional[int] = -1) -> bytes:
        self._checkClosed()
        if size is None:
            size = -1
        return self._stream.read(size, timeout=self._timeout)

    def readall(self) -> bytes:
        self._checkClosed()
        return self._stream.read(-1, timeout=self._timeout)

    def close(self) -> None:
        if not self.closed:
            try:
                self._stream.close()
            finally:
                super().close()

    def __del__(self) -> None:
        # Dropping the adapter must not close the stream it borrows (IOBase.__del__ would call close()).
        pass

    def __repr__(self) -> str:
        return f"<bcv.ReadStreamIO over {self._stream!r}>"


class WriteStreamIO(io.RawIOBase):
    """A write-only raw binary file over a :class:`bcv.WriteStream`.

    ``write(b)`` writes all of ``b`` (waiting while the stream's buffer is full) and returns ``len(b)``.
    ``close()`` calls ``finish()``: the reader then sees a clean end of stream. Leaving a ``with`` block
    because of an exception closes the stream instead (the reader gets :class:`bcv.ClosedError`), so a
    partial write never looks complete. Dropping the adapter without closing it neither finishes nor closes
    the stream.
    """

    def __init__(self, stream: "WriteStream", timeout: Optional[float] = None) -> None:
        super().__init__()
        self._stream = stream
        self._timeout = timeout

    @property
    def stream(self) -> "WriteStream":
        """The underlying stream."""
        return self._stream

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._checkClosed()
        return self._stream.write(data, timeout=self._timeout)

    def close(self) -> None:
        """Finishes the stream (clean end of stream for the reader), then closes the adapter."""
        if not self.closed:
            try:
                self._stream.finish()
            finally:
                super().close()

    def abort(self) -> None:
        """Closes the stream without finishing it: the reader gets ``ClosedError(PEER_DROPPED)``."""
        if not self.closed:
            try:
                self._stream.close()
            finally:
                super().close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        # Never finish implicitly: a dropped writer must not make a truncated stream look complete.
        pass

    def __repr__(self) -> str:
        return f"<bcv.WriteStreamIO over {self._stream!r}>"
