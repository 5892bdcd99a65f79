"""DB-API 2.0 (PEP 249) for databases of the block-cache VFS.

Python's own :mod:`sqlite3` module links another SQLite and cannot open ``/ALIAS/DB`` through bcv's VFS,
so bcv brings its own DB-API, modelled on :mod:`sqlite3`::

    with bcv.Vfs(cache_dir) as vfs:
        vfs.attach(url, alias="shop")
        conn = vfs.connect("shop", "shop.db")          # or bcv.connect(vfs, "/shop/shop.db")
        with conn:                                      # commits, or rolls back on an exception
            conn.execute("UPDATE items SET price = ? WHERE id = :id", ...)
        for (name,) in conn.execute("SELECT name FROM items"):
            ...
        conn.close()

Transactions follow the stdlib module's *legacy* behaviour (``isolation_level``, Python 3.11 and
earlier):

* With ``isolation_level`` set to ``"DEFERRED"`` (the default), ``"IMMEDIATE"``, ``"EXCLUSIVE"`` or ``""``
  (a plain ``BEGIN``), a ``BEGIN`` is issued implicitly before an ``INSERT``, ``UPDATE``, ``DELETE`` or
  ``REPLACE`` statement when no transaction is open. It stays open until :meth:`Connection.commit` or
  :meth:`Connection.rollback`. Other statements (``SELECT``, DDL, ``PRAGMA``) never open one.
  :meth:`Connection.executescript` first commits a pending transaction.
* With ``isolation_level=None`` the connection is in autocommit mode: nothing is issued implicitly; run
  ``BEGIN`` / ``COMMIT`` yourself if you want a transaction.
* Closing a connection with a transaction open rolls it back. ``with conn:`` commits on success and rolls
  back on an exception; it does not close the connection.

Writes stay in the local cache until :meth:`bcv.Vfs.upload`; :meth:`bcv.Vfs.poll` makes other clients'
uploads visible.

Parameters use the ``qmark`` style (``?``, with a sequence) or the named style (``:name``, ``@name``,
``$name``, with a mapping). Values: ``None``, ``int`` (``bool`` binds as an int), ``float``, ``str``, and
``bytes``/``bytearray``/``memoryview`` as a BLOB; columns come back as ``None``, ``int``, ``float``,
``str`` and ``bytes``. There are no type adapters or converters.

``threadsafety`` is 1: threads may share the module, not connections (a connection's calls are serialized,
so sharing one is safe, but transactions and cursors then interleave). Every SQLite call releases the GIL.
Closing the :class:`bcv.Vfs` closes its connections: their next call raises :class:`ProgrammingError`.
"""

from __future__ import annotations

import collections.abc as _abc
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Type, Union

from ._bcv import SqlConnection, SqlStatement, Vfs
from ._errors import (
    ConflictError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)

__all__ = [
    "apilevel",
    "threadsafety",
    "paramstyle",
    "connect",
    "Connection",
    "Cursor",
    "Binary",
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
]

#: PEP 249: the DB-API version implemented.
apilevel = "2.0"
#: PEP 249: threads may share the module but not connections.
threadsafety = 1
#: PEP 249: ``?`` placeholders (``:name`` placeholders with a mapping work too).
paramstyle = "qmark"

#: PEP 249's constructor for binary values: ``bytes`` itself.
Binary = bytes

Row = Tuple[Any, ...]
Parameters = Union[Sequence[Any], _abc.Mapping]  # type: ignore[type-arg]

_ISOLATION_LEVELS = ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")
_DML = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_FETCH_BATCH = 256


def _leading_keyword(sql: str) -> str:
    """The first keyword of ``sql`` in upper case, after whitespace, ``;`` and comments."""
    i, n = 0, len(sql)
    while i < n:
        if sql[i].isspace() or sql[i] == ";":
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            break
    j = i
    while j < n and sql[j].isalpha():
        j += 1
    return sql[i:j].upper()


def _check_isolation_level(level: Optional[str]) -> Optional[str]:
    if level is None:
        return None
    if not isinstance(level, str):
        raise TypeError(f"isolation_level must be a string or None, not {type(level).__name__}")
    if level.upper() not in _ISOLATION_LEVELS:
        raise ValueError(
            f"isolation_level string must be '', 'DEFERRED', 'IMMEDIATE', or 'EXCLUSIVE', not {level!r}"
        )
    return level.upper()


def connect(
    vfs: Vfs,
    path: str,
    *,
    read_only: bool = False,
    create: bool = True,
    timeout: float = 5.0,
    isolation_level: Optional[str] = "DEFERRED",
) -> "Connection":
    """Opens database ``path`` (``"/ALIAS/DB"``, see :meth:`bcv.Vfs.path`) of ``vfs``.

    Args:
        vfs: the :class:`bcv.Vfs` whose attached container holds the database. The connection keeps it
            alive; closing it closes the connection.
        path: ``"/ALIAS/DB"``.
        read_only: open read-only.
        create: create the database (locally, until uploaded) when it does not exist.
        timeout: seconds a statement waits for a lock held by another connection before
            :class:`OperationalError` ("database is locked").
        isolation_level: ``"DEFERRED"``, ``"IMMEDIATE"``, ``"EXCLUSIVE"``, ``""`` or ``None`` (autocommit);
            see the module documentation.

    Raises:
        OperationalError: the database does not exist and ``create`` is false, the alias is not
            attached, or it cannot be read.
        ClosedError: ``vfs`` is closed.
    """
    return Connection(
        vfs, path, read_only=read_only, create=create, timeout=timeout, isolation_level=isolation_level
    )


class Connection:
    """A DB-API connection to one database of a :class:`bcv.Vfs` (see the module documentation).

    The exception classes are also attributes (``conn.Error``, ``conn.IntegrityError``, ...), as PEP 249
    suggests.
    """

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    #: Called as ``row_factory(cursor, row_tuple)`` for every row fetched by cursors created afterwards
    #: (``None``: rows are tuples).
    row_factory: Optional[Callable[["Cursor", Row], Any]]

    def __init__(
        self,
        vfs: Vfs,
        path: str,
        *,
        read_only: bool = False,
        create: bool = True,
        timeout: float = 5.0,
        isolation_level: Optional[str] = "DEFERRED",
    ) -> None:
        self._isolation_level = _check_isolation_level(isolation_level)
        self._raw: SqlConnection = vfs._open(path, read_only, create, float(timeout))
        self._closed = False
        self.row_factory = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<bcv.dbapi.Connection {self._raw.path!r} {state}>"

    def _check(self) -> SqlConnection:
        """The SQL connection; ``ProgrammingError`` once closed (also when its VFS was closed)."""
        if self._closed or not self._raw.is_open():
            raise ProgrammingError("Cannot operate on a closed database.")
        return self._raw

    def _begin(self) -> None:
        """The implicit ``BEGIN`` of the legacy transaction control."""
        self._raw.execute_batch(f"BEGIN {self._isolation_level}")

    @property
    def vfs(self) -> Vfs:
        """The :class:`bcv.Vfs` the database was opened through."""
        return self._raw.vfs

    @property
    def path(self) -> str:
        """The path it was opened with (``"/ALIAS/DB"``)."""
        return self._raw.path

    @property
    def isolation_level(self) -> Optional[str]:
        """``"DEFERRED"``, ``"IMMEDIATE"``, ``"EXCLUSIVE"``, ``""`` or ``None`` (autocommit). Setting
        ``None`` commits a pending transaction, as in :mod:`sqlite3`."""
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, level: Optional[str]) -> None:
        level = _check_isolation_level(level)
        if level is None:
            self.commit()
        self._isolation_level = level

    @property
    def in_transaction(self) -> bool:
        """True while a transaction is open (implicit or explicit)."""
        return self._check().in_transaction()

    @property
    def total_changes(self) -> int:
        """Rows inserted, updated or deleted since the connection opened."""
        return self._check().total_changes()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the connection's :class:`bcv.Vfs` was closed."""
        return self._closed or not self._raw.is_open()

    def cursor(self, factory: Optional[Callable[["Connection"], "Cursor"]] = None) -> "Cursor":
        """A new :class:`Cursor` (or ``factory(self)``)."""
        self._check()
        return (factory or Cursor)(self)

    def execute(self, sql: str, parameters: Parameters = ()) -> "Cursor":
        """``cursor().execute(sql, parameters)``; returns the cursor."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> "Cursor":
        """``cursor().executemany(sql, seq_of_parameters)``; returns the cursor."""
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, script: str) -> "Cursor":
        """``cursor().executescript(script)``; returns the cursor."""
        return self.cursor().executescript(script)

    def commit(self) -> None:
        """Commits the pending transaction, if any.

        Raises :class:`ConflictError` when a ``bcv_kv`` change lost against another client (the transaction
        is then still open: roll it back and retry).
        """
        raw = self._check()
        if raw.in_transaction():
            raw.execute_batch("COMMIT")

    def rollback(self) -> None:
        """Rolls the pending transaction back, if any."""
        raw = self._check()
        if raw.in_transaction():
            raw.execute_batch("ROLLBACK")

    def interrupt(self) -> None:
        """Makes the statement running on this connection (on another thread) raise
        :class:`OperationalError` ("interrupted"). Returns at once."""
        if not self._closed:
            self._raw.interrupt()

    def close(self) -> None:
        """Closes the connection; an open transaction is rolled back, cursors stop working. Idempotent."""
        if not self._closed:
            self._closed = True
            self._raw.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool:
        """Commits if the block succeeded, else rolls back; never closes, never suppresses the exception. A
        failed commit is rolled back and raised."""
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                if not self.closed:
                    self.rollback()
                raise
        elif not self.closed:
            self.rollback()
        return False


class Cursor:
    """A DB-API cursor: runs statements on its :class:`Connection` and fetches their rows.

    Rows are produced lazily: a query steps SQLite as rows are fetched (the first row is read by
    :meth:`execute`, so errors surface there). A cursor is iterable.

    Attributes:
        description: for a statement that returns rows, one 7-tuple ``(name, None, None, None, None, None,
            None)`` per column; else ``None``.
        rowcount: rows changed by the last ``INSERT``/``UPDATE``/``DELETE``/``REPLACE`` (summed over
            :meth:`executemany`; for a statement with ``RETURNING``, known once its rows are fetched);
            -1 for other statements.
        lastrowid: the rowid of the connection's last successful ``INSERT`` after :meth:`execute`, else
            ``None``.
        arraysize: the default size of :meth:`fetchmany` (1).
        row_factory: as :attr:`Connection.row_factory`, taken from the connection at creation.
    """

    description: Optional[Tuple[Tuple[str, None, None, None, None, None, None], ...]]
    rowcount: int
    lastrowid: Optional[int]
    arraysize: int
    row_factory: Optional[Callable[["Cursor", Row], Any]]

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._stmt: Optional[SqlStatement] = None
        self._pending: Optional[Row] = None
        self._dml = False
        self._closed = False
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        self.arraysize = 1
        self.row_factory = connection.row_factory

    @property
    def connection(self) -> Connection:
        """The connection this cursor belongs to."""
        return self._connection

    def _check(self) -> SqlConnection:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        if self._connection._closed:
            raise ProgrammingError("Cannot operate on a closed database.")
        return self._connection._raw

    def _finish(self) -> None:
        """Ends the current statement: finalizes it and settles ``rowcount`` of a DML statement."""
        stmt, self._stmt, self._pending = self._stmt, None, None
        if stmt is not None:
            stmt.finalize()
            if self._dml and self._connection._raw.is_open():
                self.rowcount = self._connection._raw.changes()

    def _start(self, raw: SqlConnection, sql: str) -> Tuple[SqlStatement, bool]:
        """Prepares ``sql`` and issues the implicit ``BEGIN`` when it is DML."""
        if not isinstance(sql, str):
            raise TypeError(f"SQL must be a str, not {type(sql).__name__}")
        stmt = raw.prepare(sql)
        dml = _leading_keyword(sql) in _DML
        try:
            if dml and self._connection._isolation_level is not None and not raw.in_transaction():
                self._connection._begin()
        except BaseException:
            stmt.finalize()
            raise
        return stmt, dml

    def execute(self, sql: str, parameters: Parameters = ()) -> "Cursor":
        """Runs one statement with ``parameters`` (a sequence for ``?``, a mapping for ``:name``).

        Returns the cursor, so that ``for row in cur.execute(...)`` works. Raises
        :class:`ProgrammingError` for more than one statement, SQL that does not parse or wrong
        parameters; :class:`IntegrityError` for a constraint violation; :class:`OperationalError` for
        busy, I/O and similar failures.
        """
        raw = self._check()
        self._finish()
        self.description, self.rowcount, self._dml = None, -1, False
        stmt, dml = self._start(raw, sql)
        try:
            _bind(stmt, parameters, _Names(stmt))
            first = stmt.step()
            columns = stmt.columns()
        except BaseException:
            stmt.finalize()
            raise
        if columns:
            self.description = tuple((name, None, None, None, None, None, None) for name in columns)
        self.lastrowid = raw.last_insert_rowid()
        self._dml = dml
        if first is None:
            stmt.finalize()
            if dml:
                self.rowcount = raw.changes()
        else:
            self._stmt, self._pending = stmt, first
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> "Cursor":
        """Runs one data-changing statement once per parameter set; ``rowcount`` is the total of rows
        changed. Raises :class:`ProgrammingError` for a statement that returns rows."""
        raw = self._check()
        self._finish()
        self.description, self.rowcount, self._dml = None, -1, False
        stmt, dml = self._start(raw, sql)
        try:
            if stmt.readonly():
                raise ProgrammingError("executemany() can only execute DML statements.")
            names = _Names(stmt)
            total = 0
            for parameters in seq_of_parameters:
                _bind(stmt, parameters, names)
                while stmt.step() is not None:
                    pass
                if dml:
                    total += raw.changes()
            if dml:
                self.rowcount = total
        finally:
            stmt.finalize()
        return self

    def executescript(self, script: str) -> "Cursor":
        """Commits a pending transaction, then runs ``script`` (any number of ``;``-separated statements
        without parameters; rows are discarded)."""
        raw = self._check()
        self._finish()
        self.description, self.rowcount, self._dml = None, -1, False
        if not isinstance(script, str):
            raise ValueError("script argument must be unicode.")
        if raw.in_transaction():
            raw.execute_batch("COMMIT")
        raw.execute_batch(script)
        return self

    def _rows(self, limit: Optional[int]) -> List[Row]:
        """Up to ``limit`` rows (all when ``None``), ending the statement once it is done."""
        rows: List[Row] = []
        if self._pending is not None and limit != 0:
            rows.append(self._pending)
            self._pending = None
        stmt = self._stmt
        while stmt is not None and (limit is None or len(rows) < limit):
            want = _FETCH_BATCH if limit is None else limit - len(rows)
            try:
                batch = stmt.fetch(want)
            except BaseException:
                self._stmt, self._pending = None, None
                stmt.finalize()
                raise
            rows.extend(batch)
            if len(batch) < want:
                self._finish()
                break
        factory = self.row_factory
        if factory is not None:
            return [factory(self, row) for row in rows]
        return rows

    def fetchone(self) -> Optional[Any]:
        """The next row, or ``None`` when there is none."""
        self._check()
        rows = self._rows(1)
        return rows[0] if rows else None

    def fetchmany(self, size: Optional[int] = None) -> List[Any]:
        """The next ``size`` rows (default :attr:`arraysize`); fewer at the end."""
        self._check()
        return self._rows(self.arraysize if size is None else max(size, 0))

    def fetchall(self) -> List[Any]:
        """All remaining rows."""
        self._check()
        return self._rows(None)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        """Finalizes the current statement; later calls raise :class:`ProgrammingError`. Idempotent."""
        if not self._closed:
            self._closed = True
            stmt, self._stmt, self._pending = self._stmt, None, None
            if stmt is not None:
                stmt.finalize()

    def setinputsizes(self, sizes: Any) -> None:
        """PEP 249; does nothing."""

    def setoutputsize(self, size: Any, column: Optional[int] = None) -> None:
        """PEP 249; does nothing."""


class _Names:
    """The parameter names of a statement, read once (for named binding)."""

    def __init__(self, stmt: SqlStatement) -> None:
        self._stmt = stmt
        self._names: Optional[List[Optional[str]]] = None

    def get(self) -> List[Optional[str]]:
        if self._names is None:
            count = self._stmt.parameter_count()
            self._names = [self._stmt.parameter_name(i) for i in range(1, count + 1)]
        return self._names


def _bind(stmt: SqlStatement, parameters: Parameters, names: _Names) -> None:
    """Binds a sequence to ``?`` parameters, or a mapping to named ones."""
    if isinstance(parameters, _abc.Mapping):
        pairs = []
        for index, name in enumerate(names.get(), start=1):
            if name is None:
                raise ProgrammingError(
                    f"Binding {index} has no name, but you supplied a dictionary (which has only names)."
                )
            try:
                value = parameters[name[1:]]
            except KeyError:
                raise ProgrammingError(f"You did not supply a value for binding parameter {name}.") from None
            pairs.append((index, value))
        stmt.bind_indexed(pairs)
    elif isinstance(parameters, (str, bytes, bytearray)) or not isinstance(parameters, (_abc.Sequence, tuple, list)):
        raise ProgrammingError(
            f"parameters are of unsupported type {type(parameters).__name__!r} (use a sequence or a mapping)"
        )
    else:
        stmt.bind(parameters)
