"""on_data callbacks: delivery, release from inside (T21), WouldDeadlock (T22), GC cycles (T14)."""

from __future__ import annotations

import gc
import random
import threading
import time
import warnings

import pytest

import bcv
from conftest import KEY, live_nodes, payload


def test_on_data_delivers_chunks_then_exactly_one_final_event():
    w, r = bcv.pipe()
    events = []
    done = threading.Event()

    def callback(event):
        events.append(event)
        if not isinstance(event, bytes):
            done.set()

    r.on_data(callback)
    with pytest.raises(bcv.BusyError):
        r.on_data(callback)
    w.write(b"one")
    time.sleep(0.02)
    w.write(b"two")
    w.finish()
    assert done.wait(5)
    time.sleep(0.05)
    assert b"".join(e for e in events if isinstance(e, bytes)) == b"onetwo"
    assert events[-1] is None and sum(1 for e in events if not isinstance(e, bytes)) == 1


def test_on_data_final_event_is_the_error_when_cut_short():
    w, r = bcv.pipe()
    events = []
    done = threading.Event()
    r.on_data(lambda e: (events.append(e), done.set() if not isinstance(e, bytes) else None))
    w.write(b"x")
    del w
    assert done.wait(5)
    assert isinstance(events[-1], bcv.ClosedError) and events[-1].reason == "PEER_DROPPED"


def test_callback_exception_goes_to_unraisablehook(unraisable):
    w, r = bcv.pipe()
    done = threading.Event()

    def callback(event):
        if event is None:
            done.set()
            raise ValueError("from callback")

    r.on_data(callback)
    w.finish()
    assert done.wait(5)
    deadline = time.monotonic() + 2
    while not unraisable and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(unraisable) == 1 and isinstance(unraisable[0].exc_value, ValueError)
    unraisable.clear()


def test_t21_callback_releases_its_stream_and_parent():
    w, r = bcv.pipe(1024)
    g, out = bcv.gzip_compress(r, 1)
    holder = [out, g]
    del out, g
    calls = []
    released = threading.Event()

    def callback(event):
        calls.append(event)
        holder.clear()  # release SR and its parent P from inside the callback
        released.set()

    with pytest.warns(ResourceWarning, match="unclosed bcv.Resource"):
        holder[0].on_data(callback)
        def produce():
            try:
                w.write(payload(200_000), timeout=5)
                w.finish()
            except bcv.ClosedError as e:
                assert e.reason == "PEER_DROPPED"  # the transformer went away with its output

        writer = threading.Thread(target=produce)
        try:
            writer.start()
            assert released.wait(5)
            time.sleep(0.1)
        finally:
            writer.join(5)
    assert len(calls) == 1, "no callback after the release"
    del w


def test_t22_close_and_wait_in_callback_would_deadlock():
    w, r = bcv.pipe(1024)
    outcome = {}
    done = threading.Event()

    def callback(event):
        start = time.monotonic()
        try:
            r.close_and_wait(1)
        except bcv.WouldDeadlockError as e:
            outcome["error"] = e
        outcome["elapsed"] = time.monotonic() - start
        r.close()  # close() from the same spot succeeds
        done.set()

    r.on_data(callback)
    w.write(b"x")
    assert done.wait(5)
    assert isinstance(outcome.get("error"), bcv.WouldDeadlockError)
    assert outcome["elapsed"] < 0.01
    r.close_and_wait(5)
    assert r.state == "CLOSED"
    assert bcv.diagnostics()["violations"]["V6"] >= 0


def test_t14_cycles_through_stored_callbacks_are_collected(unraisable):
    n = 10_000
    rng = random.Random(14)
    gc.collect()
    gc.disable()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            trees = []
            for i in range(n):
                w, r = bcv.pipe(64)
                t, out = bcv.gzip_compress(r, 1) if i % 100 == 0 else bcv.aead_encrypt(r, KEY)
                fw, fr = bcv.future()
                tree = {"w": w, "t": t, "out": out, "fw": fw, "fr": fr}

                def callback(event, tree=tree):
                    tree["seen"] = event

                tree["cb"] = callback
                out.on_data(callback)  # out -> callback -> tree -> out: a cycle through a stored callback
                if i % 2:
                    t.close()
                trees.append(tree)
            del w, r, t, out, fw, fr, tree, callback
            unclosed = n // 2
            rng.shuffle(trees)
            while trees:
                trees.pop()
            bcv.reaper_flush()
            assert live_nodes() > 0, "the cycles keep the trees alive until the GC runs"
            start = time.monotonic()
            gc.collect()
            assert bcv.wait_idle(1.0) == 0, bcv.diagnostics()
            elapsed = time.monotonic() - start
        resource_warnings = [c for c in caught if issubclass(c.category, ResourceWarning)]
    finally:
        gc.enable()
    assert elapsed < 1.0
    # Only a transformer still busy when collected warns (its input ended once the trees were dropped, so
    # many are already quiescent); never more than one per unclosed transformer, none for closed ones.
    assert len(resource_warnings) <= unclosed
    assert not unraisable
