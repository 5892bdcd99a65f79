"""gzip and AES-GCM transformers: round trips, errors, and T23-T26."""

from __future__ import annotations

import gzip
import threading
import time

import pytest

import bcv
from conftest import KEY, live_nodes, payload


def gunzip(data: bytes) -> bytes:
    return gzip.decompress(data)


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 700_000])
def test_gzip_round_trip(size):
    plain = payload(size)
    g, packed = bcv.gzip_compress(bcv.stream_from_bytes(plain), level=6)
    with g:
        compressed = packed.read()
    assert gunzip(compressed) == plain
    d, unpacked = bcv.gzip_decompress(bcv.stream_from_bytes(compressed))
    with d:
        assert unpacked.read() == plain


def test_gzip_truncated_or_corrupt_input_raises_corrupt_error():
    compressed = gzip.compress(payload(100_000))
    for cut in (len(compressed) - 1, len(compressed) // 2, 5, 0):
        d, out = bcv.gzip_decompress(bcv.stream_from_bytes(compressed[:cut]))
        with d, pytest.raises(bcv.CorruptError):
            out.read()
    d, out = bcv.gzip_decompress(bcv.stream_from_bytes(b"not gzip at all"))
    with d, pytest.raises(bcv.CorruptError):
        out.read()


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 3 * 65_536, 500_000])
def test_aead_round_trip_wrong_key_and_tampering(size):
    plain = payload(size)
    e, ct = bcv.aead_encrypt(bcv.stream_from_bytes(plain), KEY)
    with e:
        ciphertext = ct.read()
    assert len(ciphertext) > size
    d, pt = bcv.aead_decrypt(bcv.stream_from_bytes(ciphertext), KEY)
    with d:
        assert pt.read() == plain
    d, pt = bcv.aead_decrypt(bcv.stream_from_bytes(ciphertext), bytes(32))
    with d, pytest.raises(bcv.AuthenticationError):
        pt.read()
    tampered = bytearray(ciphertext)
    tampered[-1] ^= 1
    d, pt = bcv.aead_decrypt(bcv.stream_from_bytes(tampered), KEY)
    with d, pytest.raises(bcv.AuthenticationError):
        pt.read()


def test_aead_rejects_bad_key_length():
    with pytest.raises(bcv.InvalidArgumentError):
        bcv.aead_encrypt(bcv.stream_from_bytes(b"x"), b"\0" * 16)


def test_chained_gzip_then_aes_and_back():
    plain = payload(400_000)
    g, packed = bcv.gzip_compress(bcv.stream_from_bytes(plain))
    e, sealed = bcv.aead_encrypt(packed, KEY)
    d, opened = bcv.aead_decrypt(sealed, KEY)
    u, unpacked = bcv.gzip_decompress(opened)
    with g, e, d, u:
        assert unpacked.read() == plain


def test_t23_release_transformer_midway_keeps_pipe_running():
    data = payload(1_000_000)
    w, r = bcv.pipe(64 * 1024)
    g, out = bcv.gzip_compress(r, 6)

    def writer():
        w.write(data[:500_000])
        time.sleep(0.01)
        w.write(data[500_000:])
        w.finish()

    t = threading.Thread(target=writer)
    t.start()
    compressed = bytearray(out.read_chunk(timeout=5))
    with pytest.warns(ResourceWarning, match="unclosed bcv.Resource"):
        del g  # released while its task runs: legal (option 2), but warned about
    compressed += out.read(timeout=10)
    t.join(5)
    assert gunzip(bytes(compressed)) == data


def test_t24_release_output_stops_transformer_and_upstream():
    w, r = bcv.pipe(16 * 1024)
    g, out = bcv.gzip_compress(r, 1)
    outcome = {}
    chunk = payload(16 * 1024)

    def producer():
        try:
            while True:
                w.write(chunk, timeout=5)
        except bcv.ClosedError as e:
            outcome["error"] = e
            outcome["at"] = time.monotonic()

    t = threading.Thread(target=producer)
    t.start()
    assert out.read_chunk(1024, timeout=5)
    released = time.monotonic()
    del out
    t.join(5)
    assert outcome["error"].reason == "PEER_DROPPED"
    assert outcome["at"] - released < 0.1, "the transformer stops within 100 ms"
    cpu = time.process_time()
    time.sleep(0.5)
    assert (time.process_time() - cpu) / 0.5 < 0.05, "nothing spins afterwards"
    g.close()
    del w, g
    assert bcv.wait_idle(2) == 0


def test_t25_truncated_ciphertext_never_ends_in_eof():
    plain = payload(300_000)
    e, ct = bcv.aead_encrypt(bcv.stream_from_bytes(plain), KEY)
    with e:
        ciphertext = ct.read()
    w, r = bcv.pipe(1 << 20)
    d, out = bcv.aead_decrypt(r, KEY)
    w.write(ciphertext[:200_000])
    del w  # released without finish, halfway through the ciphertext
    got = bytearray()
    with d:
        with pytest.raises(bcv.ClosedError) as info:
            while True:
                chunk = out.read_chunk(timeout=5)
                assert chunk is not None, "truncated ciphertext reached EOF"
                got += chunk
    assert info.value.reason == "UPSTREAM" and info.value.upstream == "PEER_DROPPED"
    assert len(got) % 65536 == 0 and len(got) < 200_000, "only whole authenticated chunks are released"
    assert bytes(got) == plain[: len(got)]


def test_t26_close_encryptor_midway():
    w, r = bcv.pipe(1 << 20)
    e, out = bcv.aead_encrypt(r, KEY)
    w.write(payload(150_000))
    assert out.read_chunk(timeout=5)
    e.close()
    with pytest.raises(bcv.ClosedError) as info:
        out.read_chunk(16)
    assert info.value.reason == "PARENT", "no final tag and no EOF"
    with pytest.raises(bcv.ClosedError) as info:
        w.write(b"\0" * 10, timeout=5)
    assert info.value.reason == "PEER_DROPPED", "the input end is dropped"


def test_resource_collected_while_open_warns_and_closed_one_does_not():
    # Active: its input is still open, so the transformer has work in flight when it is collected.
    w, r = bcv.pipe()
    g, out = bcv.gzip_compress(r)
    w.write(b"x")
    with pytest.warns(ResourceWarning, match="unclosed bcv.Resource"):
        del g
    w.finish()
    assert gunzip(out.read()) == b"x", "the output keeps working after its parent was released"
    # Closed: no warning (-W error::ResourceWarning would make one fail the test).
    g, out = bcv.gzip_compress(bcv.stream_from_bytes(b"y"))
    g.close()
    del g
    with pytest.raises(bcv.ClosedError):
        out.read()
    # Quiescent: its work is done (output complete), so it holds nothing that needs closing.
    g, out = bcv.gzip_compress(bcv.stream_from_bytes(b"z"))
    assert gunzip(out.read()) == b"z"
    bcv.reaper_flush()
    del g
