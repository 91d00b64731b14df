"""Seconds for `genlab --help` (the command list, which must not import torch), as JSON lines.

    python benchmarks/bench_cli.py [--repeat 5]

Each row: wall time of a fresh `python -m genlab.cli --help` process (median of --repeat runs),
whether torch was imported, the CPU and the 1-minute load average. Target: < 0.3 s (issue 10).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from _timing import timed  # benchmarks/_timing.py (a script's own folder is on sys.path)

SRC = Path(__file__).resolve().parents[1] / "src"
PROBE = ("import runpy, sys; sys.argv = ['genlab', '--help']\n"
         "try:\n    runpy.run_module('genlab.cli', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "sys.stderr.write('torch' if 'torch' in sys.modules else 'no-torch')")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = lambda: subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    times, torch_seen = [], False
    for _ in range(a.repeat):
        out, s = timed(run)
        times.append(s)
        torch_seen |= out.stderr.strip() == "torch"
    print(json.dumps({"bench": "genlab --help (fresh process)", "seconds": round(statistics.median(times), 3),
                      "min_s": round(min(times), 3), "imports_torch": torch_seen, "cpu": platform.processor(),
                      "load_1min": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
