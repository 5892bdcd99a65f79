"""One-shot futures: values, T28 (writer released), T29 (reader released, value handed back)."""

from __future__ import annotations

import threading
import time

import pytest

import bcv


def test_value_round_trip_and_taken_once():
    fw, fr = bcv.future()
    assert not fr.done
    value = {"answer": [42]}
    fw.write(value)
    assert fr.done
    assert fr.wait(timeout=1) is value
    with pytest.raises(bcv.AlreadyTakenError):
        fr.wait(timeout=1)
    with pytest.raises(bcv.ClosedError):
        fw.write(1)


def test_wait_blocks_until_written_from_another_thread():
    fw, fr = bcv.future()
    threading.Timer(0.05, lambda: fw.write(b"bytes too")).start()
    assert fr.wait(timeout=5) == b"bytes too"


def test_wait_timeout_loses_nothing():
    fw, fr = bcv.future()
    with pytest.raises(bcv.TimeoutError):
        fr.wait(timeout=0.05)
    fw.write(7)
    assert fr.wait() == 7


def test_t28_writer_released_without_value():
    fw, fr = bcv.future()
    del fw
    with pytest.raises(bcv.ClosedError) as info:
        fr.wait(timeout=1)
    assert info.value.reason == "PEER_DROPPED"


def test_t29_reader_released_value_handed_back_and_freed():
    fw, fr = bcv.future()
    del fr
    bcv.reaper_flush()
    assert fw.peer_gone
    w, r = bcv.pipe(8)
    g, out = bcv.gzip_compress(r)
    value = {"stream": out, "transformer": g}
    with pytest.raises(bcv.ClosedError) as info:
        fw.write(value)
    assert info.value.reason == "PEER_DROPPED"
    assert info.value.value is value, "the value is handed back"
    info.value.value["transformer"].close()
    del info, value, out, g
    with pytest.raises(bcv.ClosedError) as again:
        w.write(b"x", timeout=5)
    assert again.value.reason == "PEER_DROPPED", "releasing the returned value freed the resource"


def test_closing_reader_resolves_pending_wait():
    fw, fr = bcv.future()
    outcome = {}

    def waiter():
        try:
            fr.wait()
        except bcv.ClosedError as e:
            outcome["reason"] = e.reason

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    fr.close()
    t.join(5)
    assert outcome["reason"] == "SELF"
    with pytest.raises(bcv.ClosedError) as info:
        fw.write(1)
    assert info.value.reason == "PEER_DROPPED" and info.value.value == 1
