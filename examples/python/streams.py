"""Pipes a file through gzip and AES-256-GCM into a sealed file, then back, and checks the round trip;
then POSTs the sealed file to a local bcv HTTP server.

Run: python examples/python/streams.py [FILE]   (without FILE, a sample file is generated)
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
from pathlib import Path

import bcv


def seal(src: Path, dst: Path, key: bytes) -> int:
    """src -> gzip -> AES-256-GCM -> dst; returns the size of dst."""
    file, plain = bcv.read_file(src)
    gz, packed = bcv.gzip_compress(plain, level=6)
    enc, sealed = bcv.aead_encrypt(packed, key)
    # `with` closes every resource at the end, even on error; streams end with them.
    with file, gz, enc, bcv.write_file(dst) as sink:
        bcv.spawn_pipe(sealed, sink.writer)
        return sink.wait(timeout=60)


def unseal(src: Path, dst: Path, key: bytes) -> int:
    """src -> AES-256-GCM decrypt -> gunzip -> dst; returns the size of dst."""
    file, sealed = bcv.read_file(src)
    dec, packed = bcv.aead_decrypt(sealed, key)
    gz, plain = bcv.gzip_decompress(packed)
    with file, dec, gz, bcv.write_file(dst) as sink:
        bcv.spawn_pipe(plain, sink.writer)
        return sink.wait(timeout=60)


def post(path: Path) -> str:
    """Streams `path` to a local bcv HTTP server that answers with the SHA-256 of the body it received."""
    with bcv.http_serve("127.0.0.1", 0) as server:

        def serve() -> None:
            with server.next_request(timeout=10) as request:
                body, _trailers = request.take_body()
                request.respond_with(200, body=hashlib.sha256(body.read(timeout=60)).hexdigest().encode())

        server_thread = threading.Thread(target=serve)
        server_thread.start()
        file, stream = bcv.read_file(path)  # the request body streams from the file
        with file, bcv.http_request("POST", f"http://127.0.0.1:{server.local_port}/", body=stream) as response:
            body, _trailers = response.take_body()
            answer = body.read(timeout=60).decode()
        server_thread.join()
        return answer


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bcv-example-") as tmp:
        return run(Path(tmp))


def run(work: Path) -> int:
    if len(sys.argv) > 1:
        source = Path(sys.argv[1])
    else:
        source = work / "sample.txt"
        source.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(50_000)))
    key = os.urandom(bcv.AEAD_KEY_LEN)
    sealed, restored = work / "sealed.bin", work / "restored"

    size = seal(source, sealed, key)
    print(f"sealed   {source} ({source.stat().st_size} bytes) -> gzip -> AES-256-GCM -> {sealed} ({size} bytes)")
    size = unseal(sealed, restored, key)
    print(f"unsealed {sealed} -> AES-256-GCM -> gunzip -> {restored} ({size} bytes)")
    same = digest(source) == digest(restored)
    print(f"round trip {'ok' if same else 'MISMATCH'}: sha256 {digest(source)} / {digest(restored)}")

    try:
        unseal(sealed, work / "wrong", os.urandom(bcv.AEAD_KEY_LEN))
    except OSError as e:  # the sink reports the decrypt stage's authentication failure as a partial file
        print(f"wrong key rejected: {type(e).__name__}: {e}")
    file, sealed_stream = bcv.read_file(sealed)
    dec, out = bcv.aead_decrypt(sealed_stream, os.urandom(bcv.AEAD_KEY_LEN))
    with file, dec:
        try:
            out.read()
        except bcv.AuthenticationError as e:
            print(f"reading it directly raises {type(e).__name__}: {e}")
    remote = post(sealed)
    print(f"POSTed {sealed} over HTTP: the server got sha256 {remote[:16]} (same: {remote[:16] == digest(sealed)})")
    print(f"live nodes after closing everything: {bcv.wait_idle(5)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
