"""Pipes: reading, writing, ends released or closed (T05, T07-T10, T19, T32, T38) and file adapters."""

from __future__ import annotations

import gc
import io
import shutil
import threading
import time

import pytest

import bcv
from conftest import KEY, live_nodes, payload


def test_round_trip_and_clean_eof():
    w, r = bcv.pipe()
    assert w.write(b"hello ") == 6
    w.write(bytearray(b"big "))
    w.write(memoryview(b"world"))
    w.finish()
    assert r.read() == b"hello big world"
    assert r.read() == b""
    assert r.read_chunk() is None


def test_read_n_returns_what_is_available():
    w, r = bcv.pipe()
    w.write(b"abcdef")
    assert r.read(4) == b"abcd"
    assert r.read(100) == b"ef"
    assert r.read(0) == b""
    w.finish()
    assert r.read(10) == b""


def test_iteration_yields_chunks_until_eof():
    w, r = bcv.pipe(1 << 20)
    for part in (b"a" * 10, b"b" * 20):
        w.write(part)
    w.finish()
    assert b"".join(r) == b"a" * 10 + b"b" * 20


def test_iteration_raises_when_cut_short():
    w, r = bcv.pipe()
    w.write(b"partial")
    del w
    chunks = []
    with pytest.raises(bcv.ClosedError) as info:
        for chunk in r:
            chunks.append(chunk)
    assert chunks == [b"partial"]
    assert info.value.reason == "PEER_DROPPED"


def test_readinto_fills_writable_buffers_only():
    w, r = bcv.pipe()
    w.write(b"0123456789")
    buf = bytearray(4)
    assert r.readinto(buf) == 4 and buf == b"0123"
    view = memoryview(bytearray(16))
    assert r.readinto(view) == 6 and bytes(view[:6]) == b"456789"
    with pytest.raises(TypeError):
        r.readinto(b"readonly")
    w.finish()
    assert r.readinto(bytearray(3)) == 0


def test_read_timeout_loses_nothing():
    w, r = bcv.pipe()
    start = time.monotonic()
    with pytest.raises(bcv.TimeoutError) as info:
        r.read(10, timeout=0.25)
    assert 0.2 <= time.monotonic() - start < 1.0
    assert isinstance(info.value, TimeoutError) and not isinstance(info.value, bcv.ClosedError)
    w.write(b"late")
    assert r.read(10, timeout=1) == b"late"
    w.finish()


def test_write_timeout_reports_accepted_bytes():
    w, r = bcv.pipe(8)
    with pytest.raises(bcv.TimeoutError) as info:
        w.write(b"x" * 20, timeout=0.15)
    assert info.value.accepted == 8
    assert r.read(100) == b"x" * 8
    w.finish()


def test_closed_error_is_a_broken_pipe():
    w, r = bcv.pipe()
    r.close()
    with pytest.raises(BrokenPipeError) as info:
        w.write(b"x")
    err = info.value
    assert isinstance(err, bcv.ClosedError) and isinstance(err, bcv.BcvError)
    assert err.errno == 32 and err.reason == "PEER_DROPPED" and err.accepted == 0 and err.upstream is None


def test_t05_close_twice_then_release_every_kind(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    w, r = bcv.pipe()
    fw, fr = bcv.future()
    g, out = bcv.gzip_compress(bcv.stream_from_bytes(b"abc"))
    f, fs = bcv.read_file(tmp_path / "f")
    sink = bcv.write_file(tmp_path / "g")
    listener = bcv.tcp_listen("127.0.0.1", 0)
    client = bcv.tcp_connect("127.0.0.1", listener.port, timeout=5)
    server = listener.accept(timeout=5)
    handles = [w, r, fw, fr, g, out, f, fs, sink, sink.writer, listener, client, server]
    assert live_nodes() >= len(handles)
    for h in handles:
        h.close()
        h.close()
        assert h.state in ("CLOSING", "CLOSED"), h
        assert h.close_reason in ("SELF", "PARENT"), h
    for h in handles:
        h.close_and_wait(5)
        assert h.state == "CLOSED"
    assert live_nodes() == 0, "closed nodes are torn down while their handles are alive"
    del w, r, fw, fr, g, out, f, fs, sink, listener, client, server, h
    handles.clear()
    assert bcv.wait_idle(5) == 0


def test_t07_writer_released_without_finish_is_never_eof():
    w, r = bcv.pipe(1024)
    got = bytearray()
    outcome = {}

    def reader():
        while True:
            try:
                chunk = r.read(3, timeout=5)
            except bcv.ClosedError as e:
                outcome["error"] = e
                return
            if not chunk:
                outcome["eof"] = True
                return
            got.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    w.write(b"hello")
    time.sleep(0.05)
    del w
    t.join(5)
    assert not t.is_alive()
    assert bytes(got) == b"hello"
    assert "eof" not in outcome, "a writer released without finish() must not look like EOF"
    assert outcome["error"].reason == "PEER_DROPPED"


def test_t08_finish_then_release_gives_every_byte_and_eof():
    w, r = bcv.pipe(8)
    data = payload(10_000)

    def writer(w=w):
        w.write(data)
        w.finish()

    t = threading.Thread(target=writer)
    del w
    t.start()
    assert r.read() == data
    t.join(5)
    assert r.read(1) == b"", "EOF stays EOF"


def test_t09_blocked_writer_sees_peer_dropped_when_reader_released_elsewhere():
    w, r = bcv.pipe(4096)
    holder = [r]
    del r
    outcome = {}

    def writer():
        try:
            w.write(b"x" * 10_000)
            outcome["ok"] = True
        except bcv.ClosedError as e:
            outcome["error"] = e
            outcome["at"] = time.monotonic()

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.1)
    assert t.is_alive(), "the writer should be blocked on the full buffer"
    released = time.monotonic()
    releaser = threading.Thread(target=lambda: holder.pop())
    releaser.start()
    releaser.join(5)
    t.join(5)
    err = outcome["error"]
    assert err.reason == "PEER_DROPPED"
    assert 4096 <= err.accepted <= 10_000
    assert outcome["at"] - released < 0.1


def test_t10_close_from_other_thread_wakes_blocked_read():
    w, r = bcv.pipe(16)
    outcome = {}

    def reader():
        mine = r
        try:
            mine.read(8)
        except bcv.ClosedError as e:
            outcome["error"] = e
            outcome["at"] = time.monotonic()
        del mine  # the blocked thread can release it without error

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.05)
    closed_at = time.monotonic()
    r.close()
    t.join(5)
    assert outcome["error"].reason == "SELF"
    assert outcome["at"] - closed_at < 0.1
    with pytest.raises(bcv.ClosedError) as info:
        w.write(b"x")
    assert info.value.reason == "PEER_DROPPED"


def test_t19_handle_released_on_another_thread():
    box = []
    t1 = threading.Thread(target=lambda: box.append(bcv.pipe()))
    t1.start()
    t1.join()
    bcv.reaper_flush()
    with_pipe = live_nodes()
    assert with_pipe >= 2
    t2 = threading.Thread(target=box.clear)
    t2.start()
    t2.join()
    assert bcv.wait_idle(2) == 0


def test_t32_two_concurrent_reads_one_gets_busy():
    w, r = bcv.pipe(16)
    outcome = {}

    def first():
        outcome["data"] = r.read(8, timeout=5)

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.05)
    start = time.monotonic()
    with pytest.raises(bcv.BusyError):
        r.read(8)
    assert time.monotonic() - start < 0.05
    w.write(b"abc")
    t.join(5)
    assert outcome["data"] == b"abc"
    w.finish()


def test_t32_two_concurrent_writes_one_gets_busy():
    w, r = bcv.pipe(4)
    t = threading.Thread(target=lambda: w.write(b"12345678", timeout=5))
    t.start()
    time.sleep(0.05)
    with pytest.raises(bcv.BusyError):
        w.write(b"x")
    assert r.read(4) == b"1234"
    assert r.read(4, timeout=5) == b"5678"
    t.join(5)
    w.finish()


def test_t38_closed_stream_raises_closed_error_and_repr_works():
    w, r = bcv.pipe()
    r.close()
    w.close()
    calls = [
        lambda: r.read(),
        lambda: r.read(5),
        lambda: r.read_chunk(),
        lambda: r.readinto(bytearray(4)),
        lambda: next(iter(r)),
        lambda: r.on_data(print),
        lambda: w.write(b"x"),
        lambda: w.finish(),
    ]
    for call in calls:
        with pytest.raises(bcv.ClosedError) as info:
            call()
        assert info.value.reason == "SELF"
    # CLOSING until the reaper has torn it down, then CLOSED: either way repr works and says why.
    assert ("CLOSED" in repr(r) or "CLOSING" in repr(r)) and "SELF" in repr(r) and "ReadStream" in repr(r)
    assert "CLOSED" in repr(w) or "CLOSING" in repr(w)
    r.close_and_wait(5)
    assert r.state == "CLOSED" and r.close_reason == "SELF"


def test_consumed_handle_behaves_as_closed():
    src = bcv.stream_from_bytes(b"data")
    g, out = bcv.gzip_compress(src)
    with g:
        with pytest.raises(bcv.ClosedError) as info:
            src.read()
        assert info.value.reason == "SELF"
        assert src.state == "CLOSED" and "ReadStream" in repr(src)
        with pytest.raises(bcv.ClosedError):
            bcv.gzip_compress(src)
        out.read()


def test_rejected_argument_leaves_input_untouched():
    src = bcv.stream_from_bytes(b"data")
    with pytest.raises(bcv.InvalidArgumentError):
        bcv.gzip_compress(src, level=12)
    with pytest.raises(ValueError):
        bcv.aead_encrypt(src, b"short key")
    assert src.read() == b"data"


def test_spawn_pipe_copies_and_finishes():
    data = payload(300_000)
    w, r = bcv.pipe()
    bcv.spawn_pipe(bcv.stream_from_bytes(data), w)
    assert w.state == "CLOSED"  # consumed
    assert r.read() == data


def test_file_adapters_work_with_io_and_shutil():
    data = b"line one\nline two\n" * 1000
    w, r = bcv.pipe()
    out_w, out_r = bcv.pipe(1 << 20)
    reader = io.BufferedReader(r.as_file())
    bcv.spawn_pipe(bcv.stream_from_bytes(data), w)
    assert reader.readline() == b"line one\n"
    with out_w.as_file() as sink:
        shutil.copyfileobj(reader, sink)
    assert out_r.read() == data[len(b"line one\n"):]
    reader.close()
    assert r.state in ("CLOSING", "CLOSED") and r.close_reason == "SELF"


def test_write_adapter_aborts_on_exception():
    w, r = bcv.pipe()
    with pytest.raises(RuntimeError):
        with w.as_file() as f:
            f.write(b"half")
            raise RuntimeError("boom")
    with pytest.raises(bcv.ClosedError):
        r.read()


def test_gc_stress_live_nodes_reach_zero():
    keep = []
    for i in range(3000):
        w, r = bcv.pipe(64)
        if i % 3 == 0:
            w.write(b"x")
            w.finish()
        elif i % 3 == 1:
            r.close()
        fw, fr = bcv.future()
        if i % 2:
            fw.write([w, r])
        pair = [w, r, fw, fr]
        pair.append(pair)  # a reference cycle only the GC can free
        keep.append(pair)
    assert live_nodes() > 0
    del keep, pair, w, r, fw, fr
    gc.collect()
    assert bcv.wait_idle(5) == 0


def test_key_constant():
    assert bcv.AEAD_KEY_LEN == len(KEY) == 32
