"""Secure containers, the lease lock and multi-process mode from Python: `bcv.Secure` (key ring, key
provider, a cipher written in Python), `Vfs.lease_*` / `Container.lease_*`, and `bcv.Daemon` serving a
reader in another Python process. Local-directory store; every bucket object and cache file is searched for
known plaintext.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import hmac
import itertools
import os
import secrets
import sqlite3
import threading
from pathlib import Path

import pytest

import bcv
from conftest import run_script

BLOCK = 65536
CANARY = "CANARY-d41c-plaintext"
_names = itertools.count()


def vfs_name() -> str:
    return f"pysec{os.getpid()}x{next(_names)}"


def open_vfs(tmp_path: Path, cache: str, **kwargs) -> bcv.Vfs:
    return bcv.Vfs(tmp_path / cache, name=vfs_name(), **kwargs)


def make_db(path: Path, rows: int, extra: str = "") -> None:
    with contextlib.closing(sqlite3.connect(path)) as c:
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        c.executemany("INSERT INTO t VALUES (?, ?)", ((i, f"row-{i:06}-" + "x" * 60) for i in range(1, rows + 1)))
        if extra:
            c.execute("INSERT INTO t VALUES (1000000, ?)", (extra,))
        c.commit()


def files_containing(root: Path, needle: str) -> list:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


def count(vfs: bcv.Vfs, alias: str, where: str = "") -> int:
    with contextlib.closing(vfs.connect(alias, "main.db")) as c:
        return c.execute(f"SELECT count(*) FROM t {where}").fetchone()[0]


def write(vfs: bcv.Vfs, alias: str, sql: str, *params) -> None:
    with contextlib.closing(vfs.connect(alias, "main.db")) as c:
        c.execute(sql, params)
        c.commit()


class ToyCipher:
    """A cipher written in Python for the test (HMAC-SHA256 keystream + tag; not for real use): 16 random
    nonce bytes, the data XORed with the keystream, a 16-byte tag over nonce, context and data."""

    def __init__(self, secret: bytes, name: str = "toy-hmac-1", refuse: bool = False) -> None:
        self.secret, self.name, self.refuse = secret, name, refuse
        self.threads = set()
        self.calls = 0

    def _stream(self, nonce: bytes, context: bytes, n: int) -> bytes:
        out = bytearray()
        block = 0
        while len(out) < n:
            out += hmac.new(self.secret, nonce + context + block.to_bytes(4, "big"), hashlib.sha256).digest()
            block += 1
        return bytes(out[:n])

    def _tag(self, context: bytes, body: bytes) -> bytes:
        return hmac.new(self.secret, b"tag" + context + body, hashlib.sha256).digest()[:16]

    def seal(self, context: bytes, plaintext: bytes) -> bytes:
        self.threads.add(threading.get_ident())
        self.calls += 1
        nonce = secrets.token_bytes(16)
        body = nonce + bytes(a ^ b for a, b in zip(plaintext, self._stream(nonce, context, len(plaintext))))
        return body + self._tag(context, body)

    def open(self, context: bytes, sealed: bytes) -> bytes:
        self.threads.add(threading.get_ident())
        self.calls += 1
        body, tag = sealed[:-16], sealed[-16:]
        if self.refuse or not hmac.compare_digest(tag, self._tag(context, body)):
            raise bcv.AuthenticationError("toy cipher: tag mismatch")
        nonce, data = body[:16], body[16:]
        return bytes(a ^ b for a, b in zip(data, self._stream(nonce, context, len(data))))


# --- Secure containers ---------------------------------------------------------------------------------------


def test_secure_container_with_a_key_ring_leaves_no_plaintext(tmp_path):
    k1, k2 = bcv.generate_key(), bcv.generate_key()
    assert len(k1) == 32 and k1 != k2
    url = str(tmp_path / "bucket")
    tools = bcv.Container(url, secure=bcv.Secure(keys={1: k1}))
    tools.create(block_size=BLOCK)
    assert tools.is_secure()
    make_db(tmp_path / "src.db", 400, extra=CANARY)
    tools.upload_file(tmp_path / "src.db", "main.db")

    with open_vfs(tmp_path, "cache-a") as a:
        a.attach(url, "s", secure=bcv.Secure(keys={1: k1}))
        assert count(a, "s") == 401
        write(a, "s", "INSERT INTO t VALUES (1000001, ?)", "second " + CANARY)
        a.upload("s")
        # Inside an open write transaction too: journals and WAL are sealed.
        with contextlib.closing(a.connect("s", "main.db")) as c:
            c.execute("UPDATE t SET v = v || ?", (CANARY,))
            assert files_containing(tmp_path / "cache-a", CANARY) == []
            c.rollback()
        # No key, a wrong key, a key for a plaintext container: clear errors, nothing attached.
        with pytest.raises(bcv.SecureContainerError, match="secure"):
            a.attach(url, "nokey")
        with pytest.raises(bcv.DecryptionError, match="bcv_secure.json") as wrong:
            a.attach(url, "wrong", secure=bcv.Secure(keys={1: bcv.generate_key()}))
        assert isinstance(wrong.value, bcv.AuthenticationError) and isinstance(wrong.value, bcv.OperationalError)
        plain = str(tmp_path / "plain")
        bcv.Container(plain).create(block_size=BLOCK)
        with pytest.raises(bcv.SecureContainerError):
            a.attach(plain, "plain", secure=bcv.Secure(keys={1: k1}))
        assert [alias for alias, _ in a.attached()] == ["s"]

    # Rotation: new data sealed with key 2; a key provider knowing both reads old and new rows.
    with open_vfs(tmp_path, "cache-b") as b:
        b.attach(url, "s", secure=bcv.Secure(keys={1: k1, 2: k2}, current=2))
        write(b, "s", "INSERT INTO t VALUES (1000002, 'third')")
        b.upload("s")
    asked = []

    def provider(key_id: int):
        asked.append(key_id)
        return {1: k1, 2: k2}.get(key_id)

    with open_vfs(tmp_path, "cache-c") as c:
        c.attach(url, "s", secure=bcv.Secure(key_provider=provider, current=2))
        assert count(c, "s", "WHERE id >= 1000000") == 3
    assert sorted(set(asked)) == [1, 2]

    assert files_containing(tmp_path / "bucket", CANARY) == []
    for cache in ("cache-a", "cache-b", "cache-c"):
        assert files_containing(tmp_path / cache, CANARY) == []
    assert files_containing(tmp_path, CANARY) == [tmp_path / "src.db"]  # the scan does find plaintext

    # Tampered blocks: reading one fails authentication, naming the block object.
    blocks = [p for p in (tmp_path / "bucket").iterdir() if p.name.endswith(".bcv") and len(p.stem) == 32]
    assert blocks
    for block in blocks:
        data = bytearray(block.read_bytes())
        data[100] ^= 1
        block.write_bytes(bytes(data))
    with pytest.raises(bcv.DecryptionError) as tampered:
        bcv.Container(url, secure=bcv.Secure(keys={1: k1, 2: k2})).download_file("main.db", tmp_path / "out.db")
    assert any(b.name in str(tampered.value) for b in blocks), tampered.value


def test_bad_secure_options():
    with pytest.raises(ValueError, match="exactly one"):
        bcv.Secure()
    with pytest.raises(ValueError, match="exactly one"):
        bcv.Secure(keys={1: bytes(32)}, cipher=ToyCipher(b"x"))
    with pytest.raises(ValueError, match="32"):
        bcv.Secure(keys={1: b"short"})
    with pytest.raises(ValueError, match="current"):
        bcv.Secure(key_provider=lambda i: None)
    with pytest.raises(bcv.InvalidArgumentError):
        bcv.Secure(keys={1: bytes(32)}, current=3)
    assert bcv.Secure(keys={1: bytes(32)}).cipher_name == "aes-256-gcm"


def test_python_cipher_round_trips_through_sql_and_upload_workers(tmp_path):
    url = str(tmp_path / "bucket")
    cipher = ToyCipher(b"application secret")
    tools = bcv.Container(url, nrequest=4, secure=bcv.Secure(cipher=cipher))
    tools.create(block_size=BLOCK)
    make_db(tmp_path / "src.db", 3000, extra=CANARY)  # several blocks
    tools.upload_file(tmp_path / "src.db", "main.db")
    assert cipher.calls > 3000 * 70 // 16384
    with open_vfs(tmp_path, "cache", nrequest=4) as vfs:
        vfs.attach(url, "toy", secure=bcv.Secure(cipher=cipher))
        assert count(vfs, "toy") == 3001
        write(vfs, "toy", "UPDATE t SET v = v || ?", CANARY)
        vfs.upload("toy")
        # Another cipher name is refused; a cipher that cannot open fails authentication.
        with pytest.raises(bcv.DecryptionError, match="toy-hmac-1"):
            vfs.attach(url, "other", secure=bcv.Secure(cipher=ToyCipher(b"application secret", name="toy-hmac-2")))
        with pytest.raises(bcv.DecryptionError):
            vfs.attach(url, "refusing", secure=bcv.Secure(cipher=ToyCipher(b"application secret", refuse=True)))
    with open_vfs(tmp_path, "cache-2") as fresh:
        fresh.attach(url, "toy", secure=bcv.Secure(cipher=ToyCipher(b"application secret")))
        assert count(fresh, "toy", f"WHERE v LIKE '%{CANARY}'") == 3001
    assert files_containing(tmp_path / "bucket", CANARY) == []
    assert files_containing(tmp_path / "cache", CANARY) == []


def test_cipher_errors_become_authentication_errors(tmp_path):
    url = str(tmp_path / "bucket")

    class Broken(ToyCipher):
        def seal(self, context, plaintext):
            return b"too short"

    tools = bcv.Container(url, secure=bcv.Secure(cipher=Broken(b"k")))
    with pytest.raises(bcv.DecryptionError, match="returned 9 bytes"):
        tools.create(block_size=BLOCK)


# --- Lease lock ----------------------------------------------------------------------------------------------


def test_lease_held_fences_other_writers(tmp_path):
    url = str(tmp_path / "bucket")
    tools = bcv.Container(url)
    tools.create(block_size=BLOCK)
    make_db(tmp_path / "src.db", 200)
    tools.upload_file(tmp_path / "src.db", "main.db")
    assert tools.lease_status() is None
    with open_vfs(tmp_path, "cache-a") as a, open_vfs(tmp_path, "cache-b") as b:
        a.attach(url, "l")
        b.attach(url, "l")
        lease = a.lease_obtain("l", "writer-a", 60)
        assert (lease.holder, len(lease.token), lease.expired) == ("writer-a", 32, False)
        assert 55 < lease.expires_in <= 60
        with pytest.raises(bcv.LeaseHeldError, match="writer-a") as held:
            b.lease_obtain("l", "writer-b", 60)
        assert held.value.holder == "writer-a" and abs(held.value.until - lease.expires) < 0.01
        # The non-holder's upload is refused, its change stays local; the holder's goes through.
        write(b, "l", "DELETE FROM t WHERE id <= 10")
        with pytest.raises(bcv.LeaseHeldError):
            b.upload("l")
        assert b.databases("l")[0].has_local_changes
        assert b.lease_status("l") == lease and b.lease_held("l") is None
        extended = a.lease_extend("l", 120)
        assert extended.token == lease.token and extended.expires > lease.expires
        a.lease_release("l")
        with pytest.raises(bcv.LeaseLostError):
            a.lease_release("l")
        b.lease_obtain("l", "writer-b", 60)
        b.upload("l")
        assert count(b, "l") == 190
        with pytest.raises(bcv.InvalidArgumentError):
            a.lease_obtain("l", "writer-a", 1)  # not longer than the safety margin
        # Another process of the application (here: the tools) adopts, extends and releases by token.
        token = b.lease_held("l").token
        assert tools.lease_extend(60, token=token).holder == "writer-b"
        tools.lease_adopt(token)
        tools.lease_release()
        assert tools.lease_status() is None
        with pytest.raises(bcv.LeaseLostError):
            b.lease_extend("l", 60)


def test_lease_options_reach_the_vfs(tmp_path):
    url = str(tmp_path / "bucket")
    bcv.Container(url).create(block_size=BLOCK)
    with open_vfs(tmp_path, "cache", lease_safety_margin=0.5, lease_max_skew=0.1) as v:
        v.attach(url, "l")
        assert v.lease_obtain("l", "short", 1).holder == "short"  # 1 s > 0.5 s margin


# --- Multi-process mode --------------------------------------------------------------------------------------


def test_daemon_serves_a_read_only_reader_process(tmp_path):
    plain, secure = str(tmp_path / "plain"), str(tmp_path / "secure")
    make_db(tmp_path / "src.db", 2000)
    bcv.Container(plain).create(block_size=BLOCK)
    bcv.Container(plain).upload_file(tmp_path / "src.db", "main.db")
    key = bcv.generate_key()
    ring = bcv.Secure(keys={7: key})
    sealed = bcv.Container(secure, secure=ring)
    sealed.create(block_size=BLOCK)
    make_db(tmp_path / "sec.db", 50, extra=CANARY)
    sealed.upload_file(tmp_path / "sec.db", "main.db")
    with pytest.raises(ValueError, match="key rings"):
        bcv.Daemon(tmp_path / "other", keys={secure: bcv.Secure(cipher=ToyCipher(b"k"))})

    cache = tmp_path / "shared"
    with bcv.Daemon(cache, cache_size=32 << 20, keys={secure: ring}) as daemon:
        assert daemon.socket_path == cache / "daemon.sock"
        with pytest.raises(bcv.OperationalError, match="busy"):
            bcv.Daemon(cache)
        proc = run_script(
            f"""
            import contextlib, json, bcv
            out = {{}}
            with bcv.Vfs({str(cache)!r}, name="child") as v:
                out["client"] = v.is_daemon_client
                v.attach({plain!r}, "p")
                with contextlib.closing(v.connect("p", "main.db")) as c:
                    out["rows"] = c.execute("SELECT count(*) FROM t").fetchone()[0]
                    try:
                        c.execute("DELETE FROM t")
                        c.commit()
                    except bcv.DatabaseError as e:
                        out["write"] = type(e).__name__
                try:
                    v.upload("p")
                except bcv.ReadOnlyError as e:
                    out["upload"] = "ReadOnlyError"
                v.poll("p")
                v.attach({secure!r}, "s")  # no key of its own: the daemon hands it over
                with contextlib.closing(v.connect("s", "main.db")) as c:
                    out["secure_rows"] = c.execute("SELECT count(*) FROM t").fetchone()[0]
            print(json.dumps(out))
            """,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        assert report == {"client": True, "rows": 2000, "write": "OperationalError", "upload": "ReadOnlyError",
                          "secure_rows": 51}, report
        stats = daemon.stats()
        assert stats["clients_total"] == 1 and stats["cache"].bytes_fetched > 0
        assert stats["cache"].capacity == 32 << 20
        assert files_containing(cache, CANARY) == []
    assert daemon.stopped
    with pytest.raises(bcv.DaemonError, match="stopped"):
        daemon.stats()
    daemon.stop()  # twice: nothing
