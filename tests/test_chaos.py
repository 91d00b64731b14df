"""Chaos: a real training process (`genlab train ... --ckpt-every 1`) is killed with SIGKILL at random
moments, again and again, and continued with `--resume` each time; the finished run must equal an
uninterrupted one bit for bit (weights, optimiser state, data position, loss curve).

A checkpoint is committed every step and saving (fsyncs) takes most of each step, so most kills land
inside a save: while the temporary folder is written, between its rename and the `latest` pointer,
or while an old checkpoint is pruned. Some kills land during start-up (before the run folder exists,
or before the first checkpoint), which `--resume` must also survive. After every kill, every
committed checkpoint must verify.

    pytest tests/test_chaos.py                 # 3 kills (default suite)
    pytest -m slow tests/test_chaos.py -s      # >= 100 kills; prints the tally
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import genlab
import genlab.checkpoint as ckpt

FLAGS = ["--preset", "tiny", "--data", "npz", "--threads", "1", "--ckpt-every", "1",
         "--sample-every", "0", "--log-every", "1"]


def make_data(path: Path) -> Path:
    rng = np.random.default_rng(1)
    np.savez(path, images=rng.integers(0, 256, size=(48, 1, 16, 16), dtype=np.uint8))
    return path


def last_row_step(run: Path) -> int:
    try:
        return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    except (OSError, IndexError, ValueError, KeyError):
        return -1


def newest_step(run: Path) -> int:
    c = ckpt.latest(run, warn=False) if run.is_dir() else None
    return int(c.name.split("-")[1]) if c else 0


def campaign(tmp: Path, data: Path, steps: int, kills: int, rng: random.Random, tally: dict) -> Path:
    """Train one run to `steps` steps through up to `kills` SIGKILLs; returns the run folder."""
    run = tmp / f"run-{tally['campaigns']}"
    tally["campaigns"] += 1
    err = open(tmp / "stderr.log", "a")
    for k in range(kills + 1):
        resume = (run / "config.json").is_file()  # killed before config.json: start afresh
        start = newest_step(run)
        argv = [sys.executable, "-m", "genlab.cli", "train", "gan", *FLAGS, "--max-steps", str(steps), "--data-dir", str(data),
                "--out", str(run)] + (["--resume"] if resume else [])
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        tally["launches"] += 1
        if k == kills:
            break
        if rng.random() < 0.15:  # somewhere in start-up, data loading or the first steps
            time.sleep(rng.uniform(0.0, 4.0))
        else:                    # once this process has trained a step: mostly inside a save
            t0 = time.time()
            while p.poll() is None and last_row_step(run) <= start and time.time() - t0 < 120:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.4))
        if p.poll() is not None:  # it finished first
            assert p.returncode == 0, (tmp / "stderr.log").read_text()[-2000:]
            return run
        p.send_signal(signal.SIGKILL)
        p.wait()
        tally["kills"] += 1
        if any(run.glob(".tmp-ckpt-*")) or any(run.glob(".latest.tmp-*")) or any(run.glob(".tmp-old-*")):
            tally["kills_inside_a_save"] += 1
        tally["kills_before_first_checkpoint"] += newest_step(run) == 0
        for c in ckpt.committed(run):  # a committed checkpoint is always complete
            assert ckpt.verify(c), f"{c} is committed but does not verify after a kill"
        if newest_step(run) < start:
            raise AssertionError(f"a kill lost committed progress ({start} -> {newest_step(run)})")
    assert p.wait(timeout=600) == 0, (tmp / "stderr.log").read_text()[-2000:]
    return run


def assert_same_as_uninterrupted(run: Path, ref: Path, steps: int, tally: dict) -> None:
    a, b = ckpt.latest(run), ckpt.latest(ref)
    assert a.name == b.name == f"ckpt-{steps:08d}"
    for f in ("model.safetensors", "optim.safetensors"):
        x, y = load_file(a / f), load_file(b / f)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), f
    sa, sb = (json.loads((c / "state.json").read_text()) for c in (a, b))
    assert sa["data"] == sb["data"] and sa["skipped"] == sb["skipped"] == 0
    curve = lambda r: [{k: v for k, v in json.loads(l).items() if k != "img_s"}
                       for l in (r / "metrics.jsonl").read_text().splitlines()]
    assert curve(run) == curve(ref)
    assert not list(run.glob(".*tmp*"))
    tally["bit_exact_runs"] += 1


def chaos(tmp: Path, min_kills: int, seed: int, steps: int, kills_per_run: int) -> dict:
    data = make_data(tmp / "d.npz")
    ref = genlab.train("gan", preset="tiny", data="npz", data_dir=str(data), out=str(tmp / "ref"),
                       threads=1, ckpt_every=0, sample_every=0, log_every=1, max_steps=steps, quiet=True)
    rng = random.Random(seed)
    tally = dict(campaigns=0, launches=0, kills=0, kills_inside_a_save=0,
                 kills_before_first_checkpoint=0, bit_exact_runs=0)
    t0 = time.time()
    while tally["kills"] < min_kills:
        run = campaign(tmp, data, steps, min(kills_per_run, min_kills - tally["kills"]), rng, tally)
        assert_same_as_uninterrupted(run, ref, steps, tally)
    tally["seconds"] = round(time.time() - t0)
    print("chaos:", json.dumps(tally))
    return tally


def test_chaos_kills_then_resume_bit_exact(tmp_path):
    tally = chaos(tmp_path, min_kills=3, seed=int(os.environ.get("GENLAB_CHAOS_SEED", 0)),
                  steps=12, kills_per_run=3)
    assert tally["kills"] == 3 and tally["bit_exact_runs"] == tally["campaigns"]


@pytest.mark.slow
def test_chaos_many_kills(tmp_path):
    n = int(os.environ.get("GENLAB_CHAOS_KILLS", 100))
    tally = chaos(tmp_path, min_kills=n, seed=int(os.environ.get("GENLAB_CHAOS_SEED", 1)),
                  steps=40, kills_per_run=12)
    assert tally["kills"] >= n and tally["bit_exact_runs"] == tally["campaigns"]
    assert tally["kills_inside_a_save"] >= n // 4, tally  # the saves really were hit
