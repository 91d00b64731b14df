"""The one timing helper the benchmarks share (imported as `_timing`: the scripts are run as files,
so their own folder is on sys.path)."""
from __future__ import annotations

import time


def timed(fn):
    """(fn(), seconds it took)."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t
