"""syncmon's commands run their BLAS pool with one thread; the library alone leaves it alone."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from threadpoolctl import threadpool_info
import syncmon.instrument  # the agent-side package must not touch the application's pools
before = [i["num_threads"] for i in threadpool_info()]
from syncmon.cli import main
main(sys.argv[1:])
import scipy.linalg  # a pool that loads after the command set its limits (its own OpenBLAS)
from syncmon.threads import numeric_threads
print(json.dumps({"before": before, "after": numeric_threads()}))
"""


def test_cli_runs_blas_single_threaded_and_instrument_leaves_pools_alone() -> None:
    # pools of two threads to start with, as OpenBLAS gives on this 2-core machine
    env = {"OPENBLAS_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "analyze", "/nonexistent/clip.mp4"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["before"] and set(got["before"]) == {2}
    # numpy's OpenBLAS, limited when the command started, and scipy's (each wheel bundles its
    # own), loaded after it: every one of them at 1
    assert len(got["after"]) >= 2
    assert {threads for _lib, threads in got["after"]} == {1}, got["after"]
