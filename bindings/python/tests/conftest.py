"""Shared fixtures and oracles for the LIFETIMES.md §7 scenarios (tag Py).

Every test is checked against the common oracles of §7: no unraisable exception was reported
(``sys.unraisablehook``), and the live-node count returns to 0 once the test's objects are gone.
Scenarios that end the process-wide runtime (shutdown, interpreter exit, strict mode from the
environment) run in a subprocess started with ``-X dev -W error::ResourceWarning``.
"""

from __future__ import annotations

import gc
import os
import random
import subprocess
import sys
import textwrap
import time
from typing import Dict, List, Optional

import pytest

import bcv

KEY = bytes(range(32))


def payload(n: int, seed: int = 0) -> bytes:
    """`n` pseudo-random, somewhat compressible bytes."""
    rng = random.Random(seed or n)
    return bytes(rng.getrandbits(4) for _ in range(n))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_nodes() -> int:
    return bcv.diagnostics()["live_nodes"]


@pytest.fixture(autouse=True)
def unraisable():
    """Records unraisable exceptions during the test and fails it if there was any."""
    seen: List[object] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = previous
    assert not seen, f"unraisable exceptions: {[(u.exc_value, u.object) for u in seen]}"  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def no_leaks(unraisable):
    """After each test: every node reaches `Freed` once the test's references are gone."""
    yield
    gc.collect()
    left = bcv.wait_idle(5.0)
    assert left == 0, f"live nodes left after the test: {bcv.diagnostics()}"


def run_script(code: str, env: Optional[Dict[str, str]] = None, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter with -X dev -W error::ResourceWarning; returns the result and
    the wall time in `.elapsed`."""
    full_env = dict(os.environ)
    full_env.pop("BCV_STRICT", None)
    full_env.update(env or {})
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )
    proc.elapsed = time.monotonic() - start  # type: ignore[attr-defined]
    return proc


def assert_clean_exit(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for bad in ("Exception ignored", "Traceback", "Segmentation", "panicked", "ResourceWarning"):
        assert bad not in proc.stderr, f"{bad!r} in stderr:\n{proc.stderr}"
