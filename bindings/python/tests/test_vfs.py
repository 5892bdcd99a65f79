"""The block-cache VFS from Python: `bcv.Container` (tools), `bcv.Vfs`, its jobs, and the DB-API of
`bcv.dbapi`, against the local-directory store (and Azurite when `BCV_TEST_AZURE_VFS_URL` is set).

Databases are built with the stdlib `sqlite3` (another SQLite than bcv's), uploaded with the tools, then
read and written through the VFS.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import bcv

BLOCK = 65536
_names = itertools.count()


def vfs_name() -> str:
    """A VFS name not used before in this process (SQLite's VFS registry is process-wide)."""
    return f"pytest{os.getpid()}x{next(_names)}"


def make_db(path: Path, rows: int, pad: int = 80) -> None:
    """A plain SQLite file with `rows` rows in t(id, k, v) and an index on k (stdlib sqlite3)."""
    with contextlib.closing(sqlite3.connect(path)) as c:
        c.execute("PRAGMA page_size = 4096")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)")
        c.execute("CREATE INDEX t_k ON t(k)")
        c.executemany(
            "INSERT INTO t VALUES (?, ?, ?)",
            ((i, (i * 7919) % 100003, f"row-{i:08}-" + "x" * pad) for i in range(1, rows + 1)),
        )
        c.commit()


def figures(conn) -> tuple:
    return conn.execute("SELECT count(*), sum(k), sum(length(v)) FROM t").fetchone()


@pytest.fixture
def bucket(tmp_path: Path) -> str:
    """A container in tmp_path/bucket (64 KiB blocks) holding main.db with 500 rows."""
    url = str(tmp_path / "bucket")
    container = bcv.Container(url)
    container.create(block_size=BLOCK)
    make_db(tmp_path / "main.db", 500)
    container.upload_file(tmp_path / "main.db", "main.db")
    return url


def open_vfs(tmp_path: Path, cache: str, **kwargs) -> bcv.Vfs:
    return bcv.Vfs(tmp_path / cache, name=vfs_name(), **kwargs)


# --- Container (no cache) -------------------------------------------------------------------------------------


def test_container_tools_round_trip(tmp_path):
    url = str(tmp_path / "bucket")
    c = bcv.Container(url, nrequest=4)
    assert c.url == "file://" + url and url in repr(c)
    c.create(block_size=BLOCK, name_bytes=16)
    assert c.list() == []
    with pytest.raises(bcv.OperationalError, match="already exists"):
        c.create(block_size=BLOCK)

    make_db(tmp_path / "main.db", 3000)
    size = (tmp_path / "main.db").stat().st_size
    seen = []
    assert c.upload_file(tmp_path / "main.db", "main.db", progress=lambda done, total: seen.append((done, total))) == 1
    assert seen and seen[-1] == (size, size)
    assert all(done <= total == size for done, total in seen)
    (info,) = c.list()
    assert isinstance(info, bcv.DatabaseInfo)
    assert (info.name, info.version, info.parent) == ("main.db", 1, 0)
    assert info.blocks == -(-size // BLOCK) and info.size == info.blocks * BLOCK

    out = tmp_path / "out.db"
    got = []
    assert c.download_file("main.db", out, progress=lambda d, t: got.append(d)) == info.size
    assert got[-1] == info.size
    image = out.read_bytes()
    assert image[:size] == (tmp_path / "main.db").read_bytes() and not image[size:].strip(b"\0")
    with contextlib.closing(sqlite3.connect(out)) as plain:
        assert plain.execute("SELECT count(*) FROM t").fetchone() == (3000,)

    # A second upload is a new version; a raising progress callback does not stop it.
    def boom(done, total):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        c.upload_file(tmp_path / "main.db", "main.db", progress=boom)
    assert c.list()[0].version == 2

    c.copy("main.db", "copy.db")
    names = {d.name: d for d in c.list()}
    assert names["copy.db"].parent == names["main.db"].id
    c.delete("main.db")
    assert [d.name for d in c.list()] == ["copy.db"]
    m = c.manifest()
    assert m["block_size"] == BLOCK and m["name_bytes"] == 16 and m["etag"]
    assert [d["name"] for d in m["databases"]] == ["copy.db"]
    report = c.cleanup(grace=0, find_orphans=True)
    assert isinstance(report, bcv.CleanupReport) and report.waiting == 0
    with pytest.raises(bcv.OperationalError, match="nope"):
        c.download_file("nope", tmp_path / "x.db")
    with pytest.raises(FileNotFoundError):
        c.upload_file(tmp_path / "missing.db", "x.db")
    with pytest.raises(bcv.InvalidArgumentError):
        bcv.Container("s3://bucket?no_such_key=1")

    assert c.destroy() > 0
    with pytest.raises(bcv.OperationalError):
        c.list()


# --- Vfs and the DB-API ---------------------------------------------------------------------------------------


def test_dbapi_queries_writes_transactions_and_types(tmp_path, bucket):
    assert (bcv.apilevel, bcv.threadsafety, bcv.paramstyle) == ("2.0", 1, "qmark")
    with open_vfs(tmp_path, "cache") as vfs:
        assert vfs.attach(bucket, alias="c") == "c"
        assert vfs.attach(bucket, alias="c", if_not_attached=True) == "c"
        assert vfs.attached() == [("c", bucket)]
        assert vfs.path("c", "main.db") == "/c/main.db"
        conn = vfs.connect("c", "main.db")
        assert conn.path == "/c/main.db" and conn.vfs is vfs and conn.isolation_level == "DEFERRED"

        cur = conn.cursor()
        assert cur.connection is conn and cur.arraysize == 1 and cur.rowcount == -1 and cur.lastrowid is None
        cur.execute("SELECT id, v AS value FROM t WHERE id <= ? ORDER BY id", (3,))
        assert cur.description == (("id",) + (None,) * 6, ("value",) + (None,) * 6)
        assert cur.rowcount == -1
        assert cur.fetchone()[0] == 1
        assert [r[0] for r in cur.fetchmany(5)] == [2, 3]
        assert cur.fetchone() is None and cur.fetchall() == []
        # Iteration, fetchmany with arraysize, named parameters.
        cur.execute("SELECT id FROM t WHERE id BETWEEN :lo AND :hi ORDER BY id", {"lo": 10, "hi": 14})
        cur.arraysize = 2
        assert cur.fetchmany() == [(10,), (11,)]
        assert [r for (r,) in cur] == [12, 13, 14]
        assert [r for (r,) in conn.execute("SELECT id FROM t WHERE id < $n", {"n": 3})] == [1, 2]

        # DML: implicit BEGIN (legacy), rowcount, lastrowid, rollback, commit.
        assert not conn.in_transaction
        cur.execute("INSERT INTO t(k, v) VALUES (?, ?)", (-1, "new"))
        assert cur.rowcount == 1 and cur.lastrowid == 501 and cur.description is None
        assert conn.in_transaction
        conn.rollback()
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (500,)
        cur.executemany("INSERT INTO t(k, v) VALUES (?, ?)", [(i, f"many-{i}") for i in range(10)])
        assert cur.rowcount == 10
        cur.execute("UPDATE t SET k = k + 1 WHERE v LIKE 'many-%'")
        assert cur.rowcount == 10
        before = conn.total_changes
        conn.commit()
        assert not conn.in_transaction and conn.total_changes == before
        assert conn.execute("SELECT count(*) FROM t WHERE v LIKE 'many-%'").fetchone() == (10,)
        # A statement with RETURNING counts its rows once they are fetched.
        cur.execute("DELETE FROM t WHERE v LIKE 'many-%' RETURNING id")
        assert len(cur.fetchall()) == 10 and cur.rowcount == 10
        conn.commit()

        # Every type round-trips; bool binds as int; bytearray and memoryview as blobs.
        conn.execute("CREATE TABLE types(i, r, s, b, n)")
        values = (2**63 - 1, 2.5, "héllo\0tail", b"\x00\xff", None)
        conn.execute("INSERT INTO types VALUES (?, ?, ?, ?, ?)", values)
        conn.execute("INSERT INTO types VALUES (?, ?, ?, ?, ?)", (True, -0.0, "", bytearray(b"ab"), memoryview(b"cd")))
        rows = conn.execute("SELECT * FROM types ORDER BY rowid").fetchall()
        assert rows == [values, (1, -0.0, "", b"ab", b"cd")]
        assert [type(x) for x in rows[0]] == [int, float, str, bytes, type(None)]
        with pytest.raises(OverflowError):
            conn.execute("SELECT ?", (2**63,))
        conn.commit()

        # Errors map to the DB-API classes.
        conn.execute("CREATE TABLE u(x UNIQUE)")
        conn.execute("INSERT INTO u VALUES (1)")
        conn.commit()
        with pytest.raises(bcv.IntegrityError, match="UNIQUE") as info:
            conn.execute("INSERT INTO u VALUES (1)")
        assert info.value.sqlite_errorcode == 2067  # SQLITE_CONSTRAINT_UNIQUE
        assert isinstance(info.value, bcv.DatabaseError) and isinstance(info.value, bcv.Error)
        assert isinstance(info.value, bcv.BcvError) and conn.IntegrityError is bcv.IntegrityError
        with pytest.raises(bcv.ProgrammingError, match="syntax error"):
            conn.execute("SELEC 1")
        with pytest.raises(bcv.OperationalError, match="no such table: nope"):
            conn.execute("SELECT * FROM nope")
        with pytest.raises(bcv.ProgrammingError, match="one statement"):
            conn.execute("SELECT 1; SELECT 2")
        with pytest.raises(bcv.ProgrammingError, match="parameters"):
            conn.execute("SELECT ?, ?", (1,))
        with pytest.raises(bcv.ProgrammingError, match="not supported"):
            conn.execute("SELECT ?", (object(),))
        with pytest.raises(bcv.ProgrammingError, match=":b"):
            conn.execute("SELECT :a, :b", {"a": 1})
        with pytest.raises(bcv.ProgrammingError, match="no name"):
            conn.execute("SELECT ?", {"a": 1})
        with pytest.raises(bcv.ProgrammingError, match="unsupported type"):
            conn.execute("SELECT ?", "x")
        with pytest.raises(bcv.ProgrammingError, match="DML"):
            conn.executemany("SELECT ?", [(1,)])
        assert conn.execute("SELECT 1 -- trailing comment\n;").fetchall() == [(1,)]
        conn.rollback()

        # Context manager: commit on success, rollback on error; the connection stays open.
        with conn:
            conn.execute("INSERT INTO u VALUES (2)")
        with pytest.raises(ZeroDivisionError):
            with conn:
                conn.execute("INSERT INTO u VALUES (3)")
                1 / 0
        assert conn.execute("SELECT x FROM u ORDER BY x").fetchall() == [(1,), (2,)]

        # executescript commits first; isolation_level None is autocommit; row_factory.
        conn.execute("INSERT INTO u VALUES (4)")
        conn.executescript("INSERT INTO u VALUES (5); INSERT INTO u VALUES (6);")
        assert not conn.in_transaction
        conn.isolation_level = None
        conn.execute("INSERT INTO u VALUES (7)")
        assert not conn.in_transaction
        conn.execute("BEGIN")
        conn.execute("DELETE FROM u")
        conn.rollback()
        with pytest.raises(ValueError):
            conn.isolation_level = "SOMETIMES"
        conn.row_factory = lambda cursor, row: {d[0]: v for d, v in zip(cursor.description, row)}
        assert conn.execute("SELECT count(*) AS n FROM u").fetchone() == {"n": 6}

        # Closed cursors and connections raise ProgrammingError.
        cur.close()
        with pytest.raises(bcv.ProgrammingError, match="closed cursor"):
            cur.execute("SELECT 1")
        other = conn.execute("SELECT id FROM t")
        conn.close()
        conn.close()
        assert conn.closed
        for call in (lambda: conn.execute("SELECT 1"), conn.commit, lambda: conn.in_transaction, other.fetchone):
            with pytest.raises(bcv.ProgrammingError, match="closed"):
                call()

        # Read-only and create=False.
        ro = bcv.connect(vfs, "/c/main.db", read_only=True)
        with pytest.raises(bcv.OperationalError, match="readonly"):
            ro.execute("DELETE FROM t")
        ro.close()
        with pytest.raises(bcv.OperationalError):
            vfs.connect("c", "absent.db", create=False)
        with pytest.raises(bcv.OperationalError):
            bcv.connect(vfs, "/nope/main.db")


def test_upload_then_a_second_client_polls_and_sees_the_change(tmp_path, bucket):
    with open_vfs(tmp_path, "cache-w") as writer, open_vfs(tmp_path, "cache-r") as reader:
        writer.attach(bucket, alias="c")
        reader.attach(bucket, alias="c")
        r = reader.connect("c", "main.db")
        before = figures(r)
        assert before[0] == 500

        w = writer.connect("c", "main.db")
        with w:
            w.execute("UPDATE t SET v = v || '-upd' WHERE id BETWEEN 100 AND 300")
            w.execute("CREATE TABLE extra(x)")
        (status,) = writer.databases("c")
        assert isinstance(status, bcv.DatabaseStatus)
        assert status.name == "main.db" and status.has_local_changes and status.dirty_blocks > 0
        assert status.open_handles >= 1
        report = writer.upload("c")
        assert isinstance(report, bcv.UploadReport)
        assert report.databases == (("main.db", 2),) and report.blocks_written >= 1 and report.rebases == 0
        assert not writer.databases("c")[0].has_local_changes
        assert writer.upload("c").databases == ()

        # The reader sees nothing new until it polls, then the new version at its next transaction.
        assert figures(r) == before
        polled = reader.poll("c")
        assert isinstance(polled, bcv.PollReport)
        assert polled.manifest_changed and polled.updated == ("main.db",) and polled.conflicts == ()
        assert figures(r)[2] == before[2] + 201 * 4
        assert r.execute("SELECT count(*) FROM extra").fetchone() == (0,)
        assert reader.poll("c") == bcv.PollReport(False, (), (), (), ())

        # A database created through the VFS is local until uploaded.
        n = writer.connect("c", "new.db")
        n.executescript("CREATE TABLE n(x); INSERT INTO n VALUES (42);")
        n.close()
        assert writer.upload("c").databases == (("new.db", 1),)
        assert reader.poll("c").added == ("new.db",)
        n = reader.connect("c", "new.db", create=False)
        assert n.execute("SELECT x FROM n").fetchall() == [(42,)]
        n.close()
        r.close()
        w.close()


def test_conflicting_uploads_raise_conflict_error_and_lose_nothing(tmp_path, bucket):
    with open_vfs(tmp_path, "cache-a") as a, open_vfs(tmp_path, "cache-b") as b:
        a.attach(bucket, alias="c")
        b.attach(bucket, alias="c")
        ca = a.connect("c", "main.db")
        cb = b.connect("c", "main.db")
        with ca:
            ca.execute("UPDATE t SET k = -1 WHERE id = 1")
        with cb:
            cb.execute("UPDATE t SET k = -2 WHERE id = 2")
        a.upload("c")
        # b's poll reports the conflict; its upload fails, and its change is still there.
        assert b.poll("c").conflicts == ("main.db",)
        with pytest.raises(bcv.ConflictError, match="main.db") as info:
            b.upload("c")
        assert isinstance(info.value, bcv.OperationalError)
        assert cb.execute("SELECT k FROM t WHERE id = 2").fetchone() == (-2,)
        with pytest.raises(bcv.ConflictError):
            b.upload("c")
        cb.close()
        assert b.revert("c") == ["main.db"]
        b.poll("c")
        cb = b.connect("c", "main.db")
        assert cb.execute("SELECT (SELECT k FROM t WHERE id = 1), (SELECT k FROM t WHERE id = 2)").fetchone() == (
            -1,
            2 * 7919,
        )
        # Redoing the change on top of a's works.
        with cb:
            cb.execute("UPDATE t SET k = -2 WHERE id = 2")
        assert b.upload("c").databases == (("main.db", 3),)
        a.poll("c")
        assert ca.execute("SELECT k FROM t WHERE id IN (1, 2) ORDER BY id").fetchall() == [(-1,), (-2,)]
        ca.close()
        cb.close()


def test_bcv_kv_is_shared_between_clients_and_conflicts_raise(tmp_path, bucket):
    with open_vfs(tmp_path, "cache-a") as a, open_vfs(tmp_path, "cache-b") as b:
        a.attach(bucket, alias="c")
        b.attach(bucket, alias="c")
        ca = a.connect("c", "main.db")
        cb = b.connect("c", "main.db")
        assert ca.execute("SELECT count(*) FROM bcv_kv").fetchone() == (0,)
        with ca:
            ca.execute("INSERT INTO bcv_kv(name, value) VALUES (?, ?)", ("owner", "a"))
        assert cb.execute("SELECT value FROM bcv_kv WHERE name = 'owner'").fetchone() == ("a",)

        # Both start a transaction (implicit BEGIN) from the same version; a commits first.
        ca.execute("UPDATE bcv_kv SET value = 'a2' WHERE name = 'owner'")
        cb.execute("UPDATE bcv_kv SET value = 'b' WHERE name = 'owner'")
        ca.commit()
        with pytest.raises(bcv.ConflictError, match="another client") as info:
            cb.commit()
        assert info.value.sqlite_errorcode == 517  # SQLITE_BUSY_SNAPSHOT
        cb.rollback()
        assert cb.execute("SELECT value FROM bcv_kv WHERE name = 'owner'").fetchone() == ("a2",)
        # Retrying from a fresh read succeeds; values keep their types.
        with cb:
            cb.execute("UPDATE bcv_kv SET value = ? WHERE name = 'owner'", (b"\x00b",))
            cb.execute("INSERT INTO bcv_kv VALUES ('n', 42)")
        assert dict(ca.execute("SELECT name, value FROM bcv_kv").fetchall()) == {"owner": b"\x00b", "n": 42}
        # The with-block rolls a conflicting commit back and raises.
        ca.execute("UPDATE bcv_kv SET value = 1 WHERE name = 'n'")
        with cb:
            cb.execute("UPDATE bcv_kv SET value = 2 WHERE name = 'n'")
        with pytest.raises(bcv.ConflictError):
            with ca:
                pass
        assert not ca.in_transaction
        assert ca.execute("SELECT value FROM bcv_kv WHERE name = 'n'").fetchone() == (2,)
        ca.close()
        cb.close()


def test_status_tables_and_vfs_reports(tmp_path, bucket):
    with open_vfs(tmp_path, "cache") as vfs:
        vfs.attach(bucket, alias="c")
        conn = vfs.connect("c", "main.db")
        assert conn.execute("SELECT name, block_size, name_bytes, ndatabase FROM bcv_container").fetchall() == [
            ("c", BLOCK, 16, 1)
        ]
        (row,) = conn.execute("SELECT container, database, version, state, nclient > 0 FROM bcv_database").fetchall()
        assert row == ("c", "main.db", 1, "", 1)
        blocks = conn.execute("SELECT blockno, length(blockid), dirty FROM bcv_block ORDER BY blockno").fetchall()
        assert [b[0] for b in blocks] == list(range(len(blocks))) and all(b[1:] == (32, 0) for b in blocks)
        conn.execute("DELETE FROM t WHERE id > 10")
        conn.commit()
        assert conn.execute("SELECT state, ndirty > 0 FROM bcv_database").fetchone() == ("dirty", 1)
        with pytest.raises(bcv.OperationalError):
            conn.execute("DELETE FROM bcv_block")
        conn.rollback()

        m = vfs.manifest("c")
        assert m["block_size"] == BLOCK and [d["name"] for d in m["databases"]] == ["main.db"]
        meter = vfs.meter("c")
        assert {"get", "ranged_get", "put", "conditional_put", "total"} <= set(meter)
        assert meter["total"]["requests"] >= 1 and meter["total"]["bytes_down"] > 0
        stats = vfs.cache_stats()
        assert isinstance(stats, bcv.CacheStats)
        assert stats.block_size == BLOCK and stats.capacity == 1 << 30 and stats.dirty_slots > 0
        assert stats.misses >= 1
        vfs.copy("c", "main.db", "copy.db")
        vfs.delete("c", "copy.db")
        with pytest.raises(bcv.OperationalError, match="busy|connections are open"):
            vfs.detach("c")
        conn.close()
        with pytest.raises(bcv.OperationalError, match="local changes"):
            vfs.detach("c")
        assert vfs.revert("c", "main.db") == ["main.db"]
        vfs.detach("c")
        assert vfs.attached() == []
        with pytest.raises(bcv.OperationalError, match="no container"):
            vfs.poll("c")
        with pytest.raises(bcv.InvalidArgumentError):
            vfs.attach(bucket, alias="a/b")


def test_prefetch_sync_and_job_report_progress(tmp_path, bucket):
    make_db(tmp_path / "big.db", 3000)
    bcv.Container(bucket).upload_file(tmp_path / "big.db", "big.db")
    with open_vfs(tmp_path, "cache") as vfs:
        vfs.attach(bucket, alias="c")
        with vfs.prefetch_start("c", "big.db") as job:
            assert isinstance(job, bcv.Job) and job.description == "prefetch of c/big.db"
            report = job.wait(timeout=30)
            assert isinstance(report, bcv.PrefetchReport) and report.blocks > 1
            assert report.bytes_fetched > 0
            assert job.status == "done"
            assert job.progress == (report.blocks * BLOCK, report.blocks * BLOCK)
            assert job.wait(timeout=0) == report
        # Everything is cached: a query makes no request.
        before = vfs.meter("c")["total"]["requests"]
        conn = vfs.connect("c", "big.db")
        assert figures(conn)[0] == 3000
        conn.close()
        assert vfs.meter("c")["total"]["requests"] == before

        seen = []
        again = vfs.prefetch("c", "main.db", progress=lambda done, total: seen.append((done, total)))
        assert again.blocks >= 1 and seen and seen[-1][0] == seen[-1][1]
        with pytest.raises(bcv.OperationalError, match="nope"):
            vfs.prefetch_start("c", "nope")

        # An upload job uploads.
        conn = vfs.connect("c", "main.db")
        with conn:
            conn.execute("UPDATE t SET v = 'job' WHERE id <= 10")
        conn.close()
        job = vfs.upload_start("c")
        up = job.wait()
        assert isinstance(up, bcv.UploadReport) and up.databases == (("main.db", 2),)
        job.close()


def test_cancelling_a_job_and_closing_the_vfs_stop_it(tmp_path):
    url = str(tmp_path / "bucket")
    # Small blocks and one request at a time: a prefetch of ~2000 blocks takes long enough to cancel.
    container = bcv.Container(url)
    container.create(block_size=4096)
    make_db(tmp_path / "big.db", 60000)
    container.upload_file(tmp_path / "big.db", "big.db")
    with open_vfs(tmp_path, "cache", nrequest=1) as vfs:
        vfs.attach(url, alias="c")
        job = vfs.prefetch_start("c", "big.db")
        deadline = time.monotonic() + 10
        while job.progress[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        job.cancel()
        with pytest.raises(bcv.ClosedError, match="cancelled") as info:
            job.wait(timeout=10)
        assert str(info.value).count("is closed") == 1, info.value
        assert job.status == "cancelled" and job.state in ("CLOSING", "CLOSED")
        done, total = job.progress
        assert done < total
        job.close_and_wait(10)

        job = vfs.prefetch_start("c", "big.db")
        with pytest.raises(bcv.TimeoutError):
            job.wait(timeout=0)
        vfs.close()
        with pytest.raises(bcv.ClosedError):
            job.wait(timeout=10)
        assert job.status == "cancelled"
        job.close_and_wait(10)
        with pytest.raises(bcv.ClosedError, match="closed"):
            vfs.prefetch_start("c", "big.db")
        with pytest.raises(bcv.ClosedError):
            vfs.poll("c")
        assert vfs.closed and vfs.state == "CLOSED"


def test_closing_the_vfs_closes_connections_and_any_release_order_is_safe(tmp_path, bucket):
    cache = tmp_path / "cache"
    name = vfs_name()
    vfs = bcv.Vfs(cache, name=name)
    vfs.attach(bucket, alias="c")
    conn = vfs.connect("c", "main.db")
    cur = conn.execute("SELECT id FROM t ORDER BY id")
    assert cur.fetchone() == (1,)
    vfs.close()
    vfs.close()
    for call in (lambda: conn.execute("SELECT 1"), cur.fetchone, conn.commit):
        with pytest.raises(bcv.ProgrammingError, match="closed"):
            call()
    assert conn.closed
    with pytest.raises(bcv.ClosedError):
        vfs.connect("c", "main.db")
    conn.close()
    # The name and the cache directory are free again at once.
    vfs = bcv.Vfs(cache, name=name)
    assert vfs.attached() == [("c", bucket)], "re-attached from the cache index"

    # A connection released before its cursor: the cursor keeps it.
    conn = vfs.connect("c", "main.db")
    cur = conn.execute("SELECT id FROM t ORDER BY id")
    del conn
    gc.collect()
    assert len(cur.fetchall()) == 500
    del cur

    # The Vfs released before its connection: the connection keeps it; releasing both frees everything.
    conn = vfs.connect("c", "main.db")
    cur = conn.execute("SELECT id FROM t")
    del vfs
    gc.collect()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (500,)
    with conn:
        conn.execute("INSERT INTO t(k, v) VALUES (1, 'kept')")
    del conn, cur
    gc.collect()
    with bcv.Vfs(cache, name=name) as vfs:
        c = vfs.connect("c", "main.db")
        assert c.execute("SELECT count(*) FROM t WHERE v = 'kept'").fetchone() == (1,)
        # A cycle through a row factory is collected by the GC.
        c.row_factory = lambda cursor, row: (cursor, row)
        cyc = c.cursor()
        cyc.keep = cyc  # type: ignore[attr-defined]
        cyc.execute("SELECT 1")
        del c, cyc
        gc.collect()
        vfs.revert("c")


def test_two_threads_use_two_connections(tmp_path, bucket):
    with open_vfs(tmp_path, "cache") as vfs:
        vfs.attach(bucket, alias="c")
        setup = vfs.connect("c", "main.db")
        setup.execute("CREATE TABLE log(thread INTEGER, n INTEGER)")
        setup.commit()
        errors = []

        def work(tid: int) -> None:
            try:
                conn = vfs.connect("c", "main.db", isolation_level="IMMEDIATE", timeout=30)
                try:
                    for n in range(50):
                        with conn:
                            conn.execute("INSERT INTO log VALUES (?, ?)", (tid, n))
                        assert conn.execute("SELECT count(*) FROM t").fetchone() == (500,)
                finally:
                    conn.close()
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert setup.execute("SELECT thread, count(*) FROM log GROUP BY thread").fetchall() == [(0, 50), (1, 50)]
        setup.close()


def test_interrupt_stops_a_running_statement(tmp_path, bucket):
    with open_vfs(tmp_path, "cache") as vfs:
        vfs.attach(bucket, alias="c")
        conn = vfs.connect("c", "main.db")
        caught = []

        def run() -> None:
            try:
                conn.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
                )
            except bcv.OperationalError as e:
                caught.append(e)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.2)
        conn.interrupt()
        t.join(10)
        assert not t.is_alive() and caught and "interrupt" in str(caught[0])
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.close()


def test_against_azurite(tmp_path):
    url = os.environ.get("BCV_TEST_AZURE_VFS_URL")
    if not url:
        if os.environ.get("BCV_REQUIRE_SERVERS") == "1":
            pytest.fail("BCV_REQUIRE_SERVERS=1 but BCV_TEST_AZURE_VFS_URL is not set")
        pytest.skip("BCV_TEST_AZURE_VFS_URL is not set (scripts/servers.sh starts Azurite)")
    container = bcv.Container(url)
    container.create(block_size=BLOCK, overwrite=True)
    try:
        make_db(tmp_path / "main.db", 2000)
        container.upload_file(tmp_path / "main.db", "main.db")
        assert [d.name for d in container.list()] == ["main.db"]
        with open_vfs(tmp_path, "cache-w") as writer, open_vfs(tmp_path, "cache-r") as reader:
            writer.attach(url, alias="az")
            reader.attach(url, alias="az")
            r = reader.connect("az", "main.db")
            assert figures(r)[0] == 2000
            w = writer.connect("az", "main.db")
            with w:
                w.execute("DELETE FROM t WHERE id > 1000")
            assert writer.upload("az").databases == (("main.db", 2),)
            assert reader.poll("az").updated == ("main.db",)
            assert figures(r)[0] == 1000
            with w:
                w.execute("INSERT INTO bcv_kv VALUES ('where', 'azurite')")
            assert r.execute("SELECT value FROM bcv_kv").fetchall() == [("azurite",)]
            r.close()
            w.close()
    finally:
        container.destroy()
