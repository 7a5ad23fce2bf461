"""syncmon's own numeric thread pools.

numpy's bundled OpenBLAS starts one worker thread per core and keeps them spinning for a while
after every matrix product; the content estimator makes a few such products a second, so the
pool spins almost all the time (measured: ~9 % of a core on a 2-core host, for products a
single thread finishes in well under a millisecond). syncmon's commands therefore run every
BLAS/OpenMP pool it loads with one thread. ``syncmon.instrument`` never calls this: inside an
avatar worker the pools are the application's, and the instrumentation's numeric code makes no
BLAS calls at all.
"""

from __future__ import annotations

import os
from typing import Any

from threadpoolctl import threadpool_info, threadpool_limits

_limits: Any = None


def limit_numeric_threads() -> None:
    """Run the BLAS and OpenMP pools with one thread each: those loaded now (numpy's), and
    those loaded later (each wheel bundles its own OpenBLAS: scipy's loads with its first
    linear-algebra import, which a monitor never makes but the reference avatar's filters do)
    read the environment when they load."""
    global _limits
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = "1"
    import numpy  # noqa: F401

    _limits = threadpool_limits(limits=1)


def numeric_threads() -> list[tuple[str, int]]:
    """(library file, threads) of every loaded BLAS/OpenMP pool (for tests and logs)."""
    return [(str(i["filepath"]), int(i["num_threads"])) for i in threadpool_info()]
