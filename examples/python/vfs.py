"""The block-cache VFS in a few steps: a container in a temporary directory, a database built with Python's
own sqlite3 and uploaded, then two clients with their own caches: one writes and uploads, the other polls
and sees the change.

Run: python examples/python/vfs.py
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from pathlib import Path

import bcv


def build_database(path: Path) -> None:
    """An ordinary SQLite file, made with the stdlib module (it cannot open bcv's VFS, but its files are
    what bcv stores)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        db.executemany("INSERT INTO items(name, price) VALUES (?, ?)", [("apple", 0.5), ("pear", 0.75), ("fig", 2.0)])
        db.commit()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # 1. A container is a manifest plus blocks; here a local directory (s3://, az://, gs:// work the same).
        url = str(root / "bucket")
        container = bcv.Container(url)
        container.create(block_size=64 * 1024)
        build_database(root / "shop.db")
        container.upload_file(root / "shop.db", "shop.db")
        print("container holds:", [(d.name, d.version) for d in container.list()])

        # 2. Two clients, each with its own cache directory and VFS name (the name is process-wide).
        with bcv.Vfs(root / "cache-a", name="bcv-a") as a, bcv.Vfs(root / "cache-b", name="bcv-b") as b:
            a.attach(url, alias="shop")
            b.attach(url, alias="shop")

            # 3. Query through the VFS with bcv's DB-API (blocks are fetched lazily and cached).
            writer = a.connect("shop", "shop.db")
            reader = b.connect("shop", "shop.db")
            print("b sees:", reader.execute("SELECT name, price FROM items ORDER BY id").fetchall())

            # 4. Write: the change is local (in a's cache) until uploaded.
            with writer:  # commits at the end of the block
                writer.execute("UPDATE items SET price = price * 2 WHERE name = ?", ("fig",))
                writer.execute("INSERT INTO items(name, price) VALUES (:name, :price)", {"name": "kiwi", "price": 1.25})
            report = a.upload("shop")
            print("a uploaded:", report.databases, f"({report.blocks_written} blocks)")

            # 5. b sees the new version once it polls (at its next transaction).
            polled = b.poll("shop")
            print("b polled, updated:", polled.updated)
            rows = reader.execute("SELECT name, price FROM items ORDER BY id").fetchall()
            print("b sees:", rows)
            assert ("fig", 4.0) in rows and ("kiwi", 1.25) in rows

            writer.close()
            reader.close()


if __name__ == "__main__":
    main()
