"""Data-parallel training (distributed.py): N processes train the run 1 process trains.

Fast tests check the pieces in this process (sharded noise and batches, the launcher's checks).
The slow ones start real torchrun process groups (gloo, 1 thread a process):
  * every model family (and the traps: wgan-gp's double backward, BN in D run twice before one
    backward, VAE's own log sigma) trains with 2 processes; the MLP GAN (no BatchNorm) equals the
    1-process run to float summation order, dcgan (BatchNorm in G) within the stated tolerance;
  * a 2-process run killed with SIGKILL resumes with 2 processes bit-identically and with 1 within
    the tolerance; SIGTERM to one rank stops every rank after the same step.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import genlab
from genlab import distributed
from genlab.train import Batches
from conftest import TINY, one_line_error

# dcgan (BatchNorm in G): 2 processes compute G's batch statistics over B/2 rows each, so they
# drift from the 1-process run. Measured after 20 steps at global batch 16 (tiny preset, tiny_npz,
# seed 3): weights ~4e-3 and samples ~2e-2 apart (max abs, README "Scaling out"), while two
# 1-process runs with different seeds are >0.1 apart; the bounds leave ~3x margin.
BN_WEIGHTS, BN_SAMPLES = 1.5e-2, 6e-2
FLOAT_ORDER = 1e-5  # no batch-coupled op: only the order of the gradient sum differs


def test_sharded_noise_is_the_rows_of_the_global_draw():
    g = torch.Generator().manual_seed(5)
    whole = torch.randn(8, 3, generator=g)
    parts = []
    for rank in range(2):
        s = distributed.Shard("cpu", rank, 2).manual_seed(5)
        parts.append(distributed.randn(4, 3, generator=s))
        assert s.get_state().equal(g.get_state())  # every rank's generator moves like 1 process's
    assert torch.equal(torch.cat(parts), whole)
    # a plain generator (1 process, sampling) keeps every row
    assert torch.equal(distributed.randn(8, 3, generator=torch.Generator().manual_seed(5)), whole)
    u = torch.rand(6, 1, 1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(distributed.rand(3, 1, 1, generator=distributed.Shard("cpu", 1, 2).manual_seed(1)), u[3:])


def test_sharded_batches_split_every_global_batch(tiny_npz):
    ds = genlab.load_data("npz", str(tiny_npz), "train")
    whole = Batches(ds, 16, seed=2, device="cpu")
    ranks = [Batches(ds, 16, seed=2, device="cpu", rank=r, world=2) for r in range(2)]
    for _ in range(9):  # across an epoch boundary (64 images = 4 batches)
        x, y = next(whole)
        (x0, y0), (x1, y1) = (next(b) for b in ranks)
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
        assert ranks[0].state() == ranks[1].state() == whole.state()  # the state stays global


def test_nproc_bad_input_is_one_line(capsys, tiny_npz, tmp_path):
    base = ["train", "dcgan", "--preset", "tiny", "--data", "npz", "--data-dir", tiny_npz,
            "--out", tmp_path / "r"]
    one_line_error(capsys, *base, "--nproc", "2", "--batch-size", "15", match="multiple of 2")
    one_line_error(capsys, *base, "--nproc", "0", match="--nproc must be >= 1")
    one_line_error(capsys, *base, "--nproc", "two", match="--nproc")
    assert not (tmp_path / "r").exists()  # nothing started, nothing written


def test_python_m_genlab_is_the_cli():
    r = subprocess.run([sys.executable, "-m", "genlab", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout


# ------------------------------------------------------------------ real process groups (slow)
def cli(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genlab.cli", *map(str, argv)], capture_output=True,
                          text=True, timeout=600, **kw)


def tiny_args(model, data, out, steps, *more):
    return ["train", model, "--preset", "tiny", "--data", "npz", "--data-dir", data, "--out", out,
            "--max-steps", steps, "--seed", 3, "--threads", 1, "--precision", "fp32",
            "--sample-every", 0, "--log-every", 1, *more]


def max_diff(a: Path, b: Path, z_seed: int = 0) -> tuple[float, float]:
    """(max |weights a - b| over every tensor of the state, max |samples a - b| at the same z)."""
    ma, mb = genlab.load(a), genlab.load(b)
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys()  # a 2-process run saves a 1-process run's keys
    w = max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)
    n = 20
    xa = ma.sample(n, generator=torch.Generator().manual_seed(z_seed))
    xb = mb.sample(n, generator=torch.Generator().manual_seed(z_seed))
    return w, (xa - xb).abs().max().item()


def identical(a: Path, b: Path) -> bool:
    sa, sb = genlab.load(a).state_dict(), genlab.load(b).state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


# every family, and the traps: (model, options, steps)
FAMILIES = [("gan", {}, 20), ("dcgan", {}, 20), ("dcgan", {"loss": "wgan-gp", "d_norm": True}, 3),
            ("cgan", {}, 3), ("rnngan", {}, 3), ("vae", {}, 3), ("vae", {"likelihood": "gaussian"}, 3)]


def flags(options: dict) -> list:
    return [x for k, v in options.items() for x in
            ([f"--{k.replace('_', '-')}"] + ([] if v is True else [v]))]


@pytest.mark.slow
def test_every_family_trains_data_parallel_as_one_process(tiny_npz, tmp_path):
    runs = []
    for i, (model, more, steps) in enumerate(FAMILIES):
        two, one = tmp_path / f"two-{i}", tmp_path / f"one-{i}"
        args = tiny_args(model, tiny_npz, two, steps, "--batch-size", 16, *flags(more))
        r = cli(args[0], "--nproc", 2, *args[1:])
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines().count(str(two)) == 1  # rank 0 alone reports
        genlab.train(model, preset="tiny", max_steps=steps, batch_size=16, threads=1, **TINY,
                     data_dir=str(tiny_npz), out=str(one), **more)
        runs.append((model, more, two, one))
    for model, more, two, one in runs:
        w, x = max_diff(two, one)
        assert len(metrics(two)) == len(metrics(one))
        if model == "gan":  # no BatchNorm: equal up to the order of the gradient sums
            assert w < FLOAT_ORDER and x < FLOAT_ORDER, (model, w, x)
            for a, b in zip(metrics(two), metrics(one)):  # logged losses: the global batch's means
                assert abs(a["d_loss"] - b["d_loss"]) < 1e-4 and abs(a["g_loss"] - b["g_loss"]) < 1e-4
        elif model == "dcgan" and not more:
            assert w < BN_WEIGHTS and x < BN_SAMPLES, (w, x)
            print(f"dcgan 2 vs 1 process after 20 steps: weights {w:.2e}, samples {x:.2e}")
    # the control: another seed is far outside the tolerance, so the bound can fail
    genlab.train("dcgan", preset="tiny", max_steps=20, batch_size=16, threads=1,
                 **{**TINY, "seed": 4}, data_dir=str(tiny_npz), out=str(tmp_path / "seed4"))
    w, x = max_diff(runs[1][3], tmp_path / "seed4")
    assert w > 3 * BN_WEIGHTS and x > 3 * BN_SAMPLES, (w, x)


def ranks(launcher: int) -> dict[int, int]:
    """{RANK: pid} of the torchrun workers below the `launcher` process."""
    found, todo = {}, [launcher]
    while todo:
        pid = todo.pop()
        for t in Path(f"/proc/{pid}/task").glob("*"):
            todo += [int(c) for c in (t / "children").read_text().split()]
        try:
            env = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in e)
        except OSError:
            continue
        if "RANK" in env and pid != launcher:
            found[int(env["RANK"])] = pid
    return found


def start(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genlab.cli", *map(str, args)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, timeout=300):
    t = time.time()
    while not cond():
        assert time.time() - t < timeout
        time.sleep(0.2)


@pytest.mark.slow
def test_sigkill_resumes_with_two_and_with_one_process(tiny_npz, tmp_path):
    from genlab import checkpoint as ckpt
    run = tmp_path / "killed"
    args = tiny_args("dcgan", tiny_npz, run, 100000, "--batch-size", 16, "--ckpt-every", 10,
                     "--keep-last", 100)
    p = start([args[0], "--nproc", 2, *args[1:]])
    wait_for(lambda: (c := ckpt.latest(run, warn=False)) is not None and int(c.name[5:]) >= 20)
    os.killpg(p.pid, signal.SIGKILL)  # the launcher, torchrun and both ranks, mid-step
    p.wait()
    stop = int(ckpt.latest(run, warn=False).name[5:]) + 20
    one = tmp_path / "resumed-one"
    subprocess.run(["cp", "-r", run, one], check=True)
    r = cli("train", "--nproc", 2, "--resume", "--out", run, "--max-steps", stop)
    assert r.returncode == 0, r.stderr
    r = cli("train", "--resume", "--out", one, "--max-steps", stop, "--threads", 1)
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "uninterrupted"
    r = cli(args[0], "--nproc", 2, *tiny_args("dcgan", tiny_npz, ref, stop, "--batch-size", 16)[1:])
    assert r.returncode == 0, r.stderr
    assert identical(run, ref)  # 2 -> 2 processes: bit-identical to the uninterrupted run
    w, x = max_diff(one, ref)   # 2 -> 1: BatchNorm sees 16 rows instead of 8 per rank after resume
    assert 0 < w < BN_WEIGHTS and x < BN_SAMPLES, (w, x)
    assert metrics(run)[-1]["step"] == stop and [m["step"] for m in metrics(run)] == list(range(1, stop + 1))


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_all_after_the_same_step(tiny_npz, tmp_path):
    from genlab import checkpoint as ckpt
    run = tmp_path / "r"
    args = tiny_args("dcgan", tiny_npz, run, 100000, "--batch-size", 16, "--ckpt-every", 10)
    p = start([args[0], "--nproc", 2, *args[1:]])
    wait_for(lambda: ckpt.latest(run, warn=False) is not None)
    os.kill(ranks(p.pid)[1], signal.SIGTERM)  # rank 1 only
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    last = ckpt.latest(run, warn=False)
    step = int(last.name[5:])
    assert f"interrupted at step {step};" in err and "Traceback" not in err
    assert metrics(run)[-1]["step"] == step  # rank 0 logged and saved the step where all stopped
    r = cli("train", "--resume", "--out", run, "--max-steps", step + 2, "--threads", 1)
    assert r.returncode == 0, r.stderr
