"""Keep numpy's BLAS at torch's thread count while genlab scores.

numpy's wheels bundle their own OpenBLAS, which starts one thread per core regardless of
`torch.set_num_threads`. On a shared or busy machine the two thread pools oversubscribe the cores and
numpy's small matrix products (KID's 1000 x 1000 kernels, eigh) run 3-5x slower than on one thread.
`blas_threads(n)` sets OpenBLAS's thread count for the duration of a block (what threadpoolctl does,
for the one library genlab needs; a no-op where no OpenBLAS is loaded, e.g. an MKL numpy).
"""
from __future__ import annotations

import contextlib
import ctypes
from functools import lru_cache

_NAMES = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
          ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
          ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
          ("openblas_set_num_threads", "openblas_get_num_threads"))


@lru_cache(maxsize=None)
def _openblas():
    """(set, get) functions of the OpenBLAS that numpy loaded, or None."""
    import numpy  # noqa: F401  (loads its BLAS)
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for p in sorted(paths):
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        for set_name, get_name in _NAMES:
            s, g = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if s is not None and g is not None:
                s.argtypes, g.restype = [ctypes.c_int], ctypes.c_int
                return s, g
    return None


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Run the block with numpy's OpenBLAS limited to n threads (None: unchanged)."""
    fns = _openblas() if n else None
    if fns is None:
        yield
        return
    set_, get = fns
    old = get()
    set_(int(n))
    try:
        yield
    finally:
        set_(old)
