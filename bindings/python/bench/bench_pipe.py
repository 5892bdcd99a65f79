"""Throughput through Python: a pipe with 64 KiB chunks, gzip and AES-256-GCM transformers.

Run: python bindings/python/bench/bench_pipe.py [--mib N]. A writer thread feeds the stream with 64 KiB
`bytes` chunks while the main thread reads chunks back, so every byte crosses the Python boundary twice.
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from typing import Callable, Optional, Tuple

import bcv

CHUNK = 64 * 1024


def feed(w: bcv.WriteStream, chunk: bytes, count: int) -> threading.Thread:
    def run() -> None:
        for _ in range(count):
            w.write(chunk)
        w.finish()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def drain(r: bcv.ReadStream) -> int:
    total = 0
    while True:
        chunk = r.read_chunk(CHUNK)
        if chunk is None:
            return total
        total += len(chunk)


def measure(name: str, chunk: bytes, count: int, stage: Optional[Callable[[bcv.ReadStream], Tuple[bcv.Resource, bcv.ReadStream]]]) -> None:
    w, r = bcv.pipe(4 * CHUNK)
    transformer = None
    if stage is not None:
        transformer, r = stage(r)
    start = time.perf_counter()
    t = feed(w, chunk, count)
    out = drain(r)
    elapsed = time.perf_counter() - start
    t.join()
    if transformer is not None:
        transformer.close()
    n = len(chunk) * count
    print(f"{name:<28} in {n / 2**20:8.0f} MiB  out {out / 2**20:8.1f} MiB  {elapsed:6.3f} s  {n / elapsed / 1e9:6.3f} GB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024, help="MiB through the plain pipe (transformers get a quarter)")
    args = parser.parse_args()
    rng = random.Random(1)
    text = bytes(rng.choice(b"abcdefghij \n") for _ in range(CHUNK))  # compressible
    noise = os.urandom(CHUNK)
    key = os.urandom(bcv.AEAD_KEY_LEN)
    pipe_count = max(1, args.mib * 2**20 // CHUNK)
    codec_count = max(1, pipe_count // 4)
    print(f"bcv {bcv.__version__}: 64 KiB chunks written and read from Python")
    measure("pipe", noise, pipe_count, None)
    measure("gzip compress (level 1)", text, codec_count, lambda r: bcv.gzip_compress(r, 1))
    measure("gzip compress (level 6)", text, max(1, codec_count // 4), lambda r: bcv.gzip_compress(r, 6))
    packed_g, packed = bcv.gzip_compress(bcv.stream_from_bytes(text * 64), 6)
    with packed_g:
        gz = packed.read()
    print(f"{'gzip decompress':<28} ({len(gz)} compressed bytes -> {len(text) * 64} bytes, repeated)")
    measure("gzip decompress", gz, codec_count // 64 or 1, bcv.gzip_decompress)
    measure("aes-256-gcm encrypt", noise, codec_count, lambda r: bcv.aead_encrypt(r, key))
    enc_g, enc = bcv.aead_encrypt(bcv.stream_from_bytes(noise * 64), key)
    with enc_g:
        sealed = enc.read()
    start = time.perf_counter()
    for _ in range(max(1, codec_count // 64)):
        d, out = bcv.aead_decrypt(bcv.stream_from_bytes(sealed), key)
        with d:
            drain(out)
    elapsed = time.perf_counter() - start
    n = len(noise) * 64 * max(1, codec_count // 64)
    print(f"{'aes-256-gcm decrypt':<28} in {n / 2**20:8.0f} MiB  {elapsed:6.3f} s  {n / elapsed / 1e9:6.3f} GB/s")


if __name__ == "__main__":
    main()
