"""Reliability (issue 5): crash-safe checkpoints, signals, no code from files, numeric faults, bad
configuration, full disks, determinism. Tiny models, data made here, one thread; a few seconds."""
import errno
import hashlib
import importlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import genlab
import conftest
import genlab.checkpoint as ckpt
from genlab.cli import main
from genlab.config import build
from genlab.guard import NonFiniteStep, StepSnapshot, nonfinite
from genlab.models import MODELS
from genlab.registry import UsageError
from genlab.sample import draw

loop = importlib.import_module("genlab.train")  # the module (genlab.train is also the function)
TINY = dict(conftest.TINY, threads=1)


def tiny(tmp, npz, out, **kw):
    return genlab.train(kw.pop("model", "gan"), preset="tiny", data_dir=str(npz), out=str(tmp / out),
                        **{**TINY, **kw})


def weights(run_or_ckpt):
    p = Path(run_or_ckpt)
    c = p if (p / "MANIFEST.json").is_file() else ckpt.latest(p)
    return load_file(c / "model.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def reseal(c: Path) -> None:
    """Rewrite a checkpoint's manifest to match its files: a consistent but altered checkpoint."""
    m = json.loads((c / "MANIFEST.json").read_text())
    m["files"] = {f: hashlib.sha256((c / f).read_bytes()).hexdigest() for f in ckpt.FILES}
    (c / "MANIFEST.json").write_text(json.dumps(m))


def one_line_error(capsys, code, *argv) -> str:  # training prints progress lines before the error
    return conftest.one_line_error(capsys, *argv, code=code, only=False)


# --------------------------------------------------------------------------- 1. crash-safe checkpoints
def test_checkpoint_commit_order_and_pruning(tiny_npz, tmp_path, monkeypatch):
    """Old checkpoints are pruned only once the new one is committed and `latest` names it."""
    seen = []
    real_discard = ckpt._discard

    def spy(old):
        run = old.parent
        newest = (run / "latest").read_text().strip()
        seen.append((old.name, newest, ckpt.verify(run / newest)))
        real_discard(old)
    monkeypatch.setattr(ckpt, "_discard", spy)
    run = tiny(tmp_path, tiny_npz, "r", max_steps=5, ckpt_every=1, keep_last=2)
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-00000004", "ckpt-00000005"]
    assert seen == [(f"ckpt-0000000{i}", f"ckpt-0000000{i + 2}", True) for i in (1, 2, 3)]
    assert not list(run.glob(".*")), "no leftovers"


def test_corrupt_newest_falls_back_with_warning_and_resumes_exactly(tiny_npz, tmp_path):
    ref = tiny(tmp_path, tiny_npz, "ref", max_steps=5)
    run = tiny(tmp_path, tiny_npz, "r", max_steps=3, ckpt_every=1, keep_last=3)
    raw = bytearray((run / "ckpt-00000003" / "model.safetensors").read_bytes())
    raw[-1] ^= 1                                            # one flipped bit in the newest checkpoint
    (run / "ckpt-00000003" / "model.safetensors").write_bytes(bytes(raw))
    # leftovers of a writer killed mid-save: a temporary checkpoint folder and a temporary pointer
    (run / ".tmp-ckpt-00000004-999").mkdir()
    (run / ".tmp-ckpt-00000004-999" / "model.safetensors").write_bytes(b"partial")
    (run / ".latest.tmp-999").write_text("ckpt-00000004")
    with pytest.warns(ckpt.CheckpointWarning, match="ckpt-00000003 .* does not verify.*using ckpt-00000002"):
        assert ckpt.latest(run).name == "ckpt-00000002"
    with pytest.warns(ckpt.CheckpointWarning):
        genlab.train(resume=True, out=str(run), max_steps=5, quiet=True)
    assert not list(run.glob(".tmp-*")) and not list(run.glob(".latest.tmp-*"))
    assert same(weights(run), weights(ref))                 # resumed from step 2: bit-exact anyway
    assert ckpt.verify(run / "ckpt-00000003")               # the corrupt one was replaced


def test_resume_without_checkpoint_starts_from_scratch(tiny_npz, tmp_path):
    """Killed before the first checkpoint: config.json exists, `--resume` starts over with it."""
    ref = tiny(tmp_path, tiny_npz, "ref", max_steps=3)
    run = tiny(tmp_path, tiny_npz, "r", max_steps=3)
    for c in run.glob("ckpt-*"):
        import shutil
        shutil.rmtree(c)
    genlab.train(resume=True, out=str(run), quiet=True)
    assert same(weights(run), weights(ref))


def _spawn(argv, tmp_path, tag):
    out, err = open(tmp_path / f"{tag}.out", "w"), open(tmp_path / f"{tag}.err", "w")
    return subprocess.Popen([sys.executable, "-m", "genlab.cli", *argv], stdout=out, stderr=err)


def _wait_rows(metrics: Path, n: int, p, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        assert p is None or p.poll() is None, "training ended early"
        time.sleep(0.05)
    raise AssertionError("training did not start")


def test_sigterm_and_sigint_finish_the_step_commit_and_exit_0(tiny_npz, tmp_path, capsys):
    """SIGTERM to a real process, then SIGINT to a resumed run in this process: each finishes its step,
    commits it and returns normally (exit 0), and the result equals an uninterrupted run."""
    run = tmp_path / "r"
    argv = ["train", "gan", "--preset", "tiny", "--data", "npz", "--data-dir", str(tiny_npz),
            "--threads", "1", "--max-steps", "100000", "--ckpt-every", "0", "--sample-every", "0",
            "--log-every", "1", "--out", str(run)]
    p = _spawn(argv, tmp_path, "p")
    _wait_rows(run / "metrics.jsonl", 3, p)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 0, (tmp_path / "p.err").read_text()
    assert (tmp_path / "p.out").read_text().strip().splitlines()[-1] == str(run)
    steps = [committed_step_is_last_logged(run)]
    assert (f"genlab: interrupted at step {steps[0]}; continue with: genlab train --resume --out {run}"
            in (tmp_path / "p.err").read_text())

    def interrupt():  # SIGINT to this process once the resumed run has made 3 more steps
        try:
            _wait_rows(run / "metrics.jsonl", steps[0] + 3, None)
        finally:
            os.kill(os.getpid(), signal.SIGINT)
    sigint_before = signal.getsignal(signal.SIGINT)
    t = threading.Thread(target=interrupt, daemon=True)
    t.start()
    assert main(argv + ["--resume"]) == 0
    t.join()
    steps.append(committed_step_is_last_logged(run))
    assert steps[1] >= steps[0] + 3
    assert signal.getsignal(signal.SIGINT) is sigint_before  # handlers put back (SIG_IGN under nohup)
    ref = genlab.train("gan", preset="tiny", data="npz", data_dir=str(tiny_npz), out=str(tmp_path / "ref"),
                       max_steps=steps[1], threads=1, sample_every=0, ckpt_every=0, quiet=True)
    assert same(weights(run), weights(ref))


def committed_step_is_last_logged(run: Path) -> int:
    step = int(ckpt.latest(run).name.split("-")[1])
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == step                          # the last finished step was committed
    return step


# ---------------------------------------------------------------------------- 2. no code from files
class Boom:
    """Unpickling this creates MARKER: proof that code from a file ran."""
    marker: Path = None

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def payload(tmp_path):
    Boom.marker = tmp_path / "pwned"
    raw = pickle.dumps(Boom())
    pickle.loads(raw)                                         # the payload is live...
    assert Boom.marker.exists()
    Boom.marker.unlink()                                      # ...and every loader below must refuse it
    yield raw
    assert not Boom.marker.exists(), "a loader unpickled a planted file"


def test_planted_pickles_in_a_checkpoint_are_refused(payload, tiny_npz, tmp_path):
    run = tiny(tmp_path, tiny_npz, "r", max_steps=2, ckpt_every=1, keep_last=3)
    c = run / "ckpt-00000002"
    # .pt / .pkl files next to the real ones are never read; listed in the manifest they break it
    for name in ("model.pt", "optim.pkl"):
        (c / name).write_bytes(payload)
    assert genlab.load(run).step == 2
    m = json.loads((c / "MANIFEST.json").read_text())
    m["files"]["model.pt"] = hashlib.sha256(payload).hexdigest()
    (c / "MANIFEST.json").write_text(json.dumps(m))
    assert not ckpt.verify(c)
    reseal(c)
    # each real file replaced by the pickle, with a manifest that matches: refused by safetensors/JSON
    for f in ckpt.FILES:
        good = (c / f).read_bytes()
        (c / f).write_bytes(payload)
        reseal(c)
        with pytest.raises(UsageError, match="could not be read"):
            genlab.load(c)
        (c / f).write_bytes(good)
        reseal(c)
    assert genlab.load(c).step == 2


def test_planted_pickles_in_data_and_classifier_weights_are_refused(payload, tmp_path, monkeypatch):
    from genlab.data import load_data
    from genlab.metrics import classifier
    (tmp_path / "pickle.npz").write_bytes(payload)
    np.savez(tmp_path / "objects.npz", images=np.array([Boom(), Boom()], dtype=object))
    for f in ("pickle.npz", "objects.npz"):
        with pytest.raises(UsageError, match="could not be read as a plain npz"):
            load_data("npz", data_dir=str(tmp_path / f))
    (tmp_path / "w.safetensors").write_bytes(payload)        # right hash, pickle inside
    with pytest.raises(classifier.WeightsError, match="not a valid safetensors"):
        classifier.load_classifier(str(tmp_path / "w.safetensors"), hashlib.sha256(payload).hexdigest())
    (tmp_path / "classifier-mnist.safetensors").write_bytes(payload)  # a replaced pinned asset
    monkeypatch.setattr(classifier, "ASSETS", tmp_path)
    with pytest.raises(classifier.WeightsError, match="altered or replaced"):
        classifier.load_classifier("mnist")


@pytest.mark.parametrize("poison", ["nan-weight", "inf-moment", "wrong-shape", "bad-rng"])
def test_consistent_but_poisoned_checkpoint_is_refused(poison, capsys, tiny_npz, tmp_path):
    run = tiny(tmp_path, tiny_npz, "r", max_steps=2)
    c = ckpt.latest(run)
    f = {"nan-weight": "model", "wrong-shape": "model", "inf-moment": "optim", "bad-rng": "rng"}[poison]
    t = load_file(c / f"{f}.safetensors")
    k = sorted(t)[0]
    t[k] = {"nan-weight": lambda v: v.clone().fill_(float("nan")),
            "inf-moment": lambda v: torch.full_like(v, float("inf")),
            "wrong-shape": lambda v: torch.zeros(v.numel() + 1),
            "bad-rng": lambda v: v.float()}[poison](t[k])
    save_file(t, c / f"{f}.safetensors")
    reseal(c)
    assert ckpt.verify(c)                                    # the hashes match: only the checks stop it
    match = {"nan-weight": "non-finite", "inf-moment": "non-finite", "wrong-shape": "expected",
             "bad-rng": "RNG state"}[poison]
    line = one_line_error(capsys, 2, "train", "gan", "--resume", "--out", str(run), "--max-steps", "3")
    assert match in line
    if f == "model":
        with pytest.raises(UsageError, match=match):
            genlab.load(run)


# ----------------------------------------------------------------------------- 4. numeric faults
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("warm", [0, 2])
def test_bad_last_gradient_undoes_the_whole_step(name, warm, tiny_npz):
    """G's gradient turns NaN after D already stepped: the snapshot puts back every weight, buffer,
    EMA counter and optimiser moment (and forgets an optimiser's first step)."""
    from genlab.data import load_data
    ds = load_data("npz", data_dir=str(tiny_npz))
    extra = {"ema": 0.9} if "ema" in MODELS[name].__dataclass_fields__ else {}
    torch.manual_seed(0)
    net = build(MODELS[name], extra, "tiny").build(ds.shape, ds.num_classes)
    opts = net.configure_optimizers()
    batches = loop.Batches(ds, net.config.batch_size, 0, torch.device("cpu"))
    noise = torch.Generator().manual_seed(1)
    for _ in range(warm):
        net.train_step(batches, opts, noise)
    snap = StepSnapshot(net, opts)
    snap.save()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    moments = {n: {i: {k: v.clone() for k, v in st.items() if torch.is_tensor(v)}
                   for i, st in enumerate(o.state.values())} for n, o in opts.items()}
    last = list(opts.values())[-1].param_groups[0]["params"][0]
    hook = last.register_hook(lambda g: torch.full_like(g, float("nan")))
    pos = batches.pos
    with pytest.raises(NonFiniteStep):
        net.train_step(batches, opts, noise)
    hook.remove()
    if len(opts) > 1:                                        # the earlier update really happened...
        assert not same(before, net.state_dict())
    snap.restore()                                           # ...and is undone completely
    assert same(before, net.state_dict())
    for n, o in opts.items():
        assert len(o.state) == len(moments[n])
        for i, st in enumerate(o.state.values()):
            for k, v in moments[n][i].items():
                assert torch.equal(st[k], v), (n, i, k)
    assert batches.pos != pos                                # the batch stays consumed


@pytest.fixture
def nan_batches(monkeypatch):
    """nan_batches(bad): the draws (1-based, per run) for which bad(draw) is true return NaN images."""
    real = loop.Batches.__next__

    def install(bad):
        def nxt(self):
            x, y = real(self)
            self.draws = getattr(self, "draws", 0) + 1
            return (torch.full_like(x, float("nan")) if bad(self.draws) else x), y
        monkeypatch.setattr(loop.Batches, "__next__", nxt)
    return install


def test_nan_batch_skips_the_step_and_is_counted(nan_batches, tiny_npz, tmp_path, capsys):
    nan_batches(lambda i: i in (3, 4, 6))
    run = tiny(tmp_path, tiny_npz, "r", max_steps=8)
    state = json.loads((ckpt.latest(run) / "state.json").read_text())
    assert state["step"] == 8 and state["skipped"] == 3
    assert state["data"] == {"epoch": 1, "pos": 3 * 8}       # 11 batches of 8 from 64 images consumed
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9)) and rows[-1]["skipped"] == 3
    assert all(np.isfinite(list(r.values())).all() for r in rows)
    assert capsys.readouterr().err.count("skipped: non-finite D loss") == 3
    assert all(torch.isfinite(v).all() for v in weights(run).values())


def test_consecutive_skips_roll_back_to_the_last_good_checkpoint(nan_batches, monkeypatch, tiny_npz,
                                                                 tmp_path, capsys):
    monkeypatch.setattr(loop, "MAX_CONSECUTIVE_SKIPS", 3)
    nan_batches(lambda i: i in (6, 7, 8))                    # steps 1-5 fine, then 3 bad in a row
    run = tiny(tmp_path, tiny_npz, "r", max_steps=10, ckpt_every=2)
    err = capsys.readouterr().err
    assert "rolled back to ckpt-00000004" in err
    state = json.loads((ckpt.latest(run) / "state.json").read_text())
    # step 5 was lost with the rollback and replayed on new batches: 5 + 3 + 6 draws in all
    assert state["step"] == 10 and state["skipped"] == 3 and state["data"] == {"epoch": 1, "pos": 6 * 8}
    assert all(torch.isfinite(v).all() for v in weights(run).values())


def test_unrecovered_divergence_ends_the_run_keeping_the_last_good_checkpoint(
        nan_batches, monkeypatch, capsys, tiny_npz, tmp_path):
    monkeypatch.setattr(loop, "MAX_CONSECUTIVE_SKIPS", 3)
    nan_batches(lambda i: i >= 6)
    run = tmp_path / "r"
    line = one_line_error(capsys, 1, "train", "gan", "--preset", "tiny", "--data", "npz",
                          "--data-dir", str(tiny_npz), "--out", str(run), "--max-steps", "10",
                          "--ckpt-every", "2", "--threads", "1", "--sample-every", "0")
    assert line.startswith("genlab: error: training diverged: 3 consecutive non-finite steps at step 5 "
                           "after 3 rollbacks; the last good checkpoint") and "ckpt-00000004" in line
    assert ckpt.latest(run).name == "ckpt-00000004" and genlab.load(run).step == 4


def test_non_finite_weights_are_never_committed(monkeypatch, tiny_npz, tmp_path, capsys):
    """An update that overflows the weights (finite gradient, inf result) is not checkpointed; the
    NaN steps that follow roll back to the last good checkpoint and the run completes."""
    from genlab.models.gan import GAN
    monkeypatch.setattr(loop, "MAX_CONSECUTIVE_SKIPS", 2)
    real, calls = GAN.train_step, []

    def step(self, *a):
        out = real(self, *a)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                self.G.net[0].weight.fill_(float("inf"))
        return out
    monkeypatch.setattr(GAN, "train_step", step)
    run = tiny(tmp_path, tiny_npz, "r", max_steps=6, ckpt_every=1, keep_last=10)
    err = capsys.readouterr().err
    assert "step 3: weights are not finite; no checkpoint committed" in err
    assert "rolled back to ckpt-00000002" in err
    assert [c.name[-1] for c in ckpt.committed(run)] == list("123456")  # 3 committed after the replay
    for c in ckpt.committed(run):
        assert all(torch.isfinite(v).all() for v in load_file(c / "model.safetensors").values())


# ------------------------------------------------------------------- 5. bad configuration, full disk
def test_a_folder_holding_another_run_is_left_alone(capsys, tiny_npz, tmp_path):
    run = tiny(tmp_path, tiny_npz, "r", max_steps=2)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    common = ["--data", "npz", "--data-dir", str(tiny_npz), "--out", str(run), "--threads", "1"]
    assert "already holds a run" in one_line_error(capsys, 2, "train", "dcgan", *common)
    assert "holds a 'gan' run, not 'dcgan'" in one_line_error(capsys, 2, "train", "dcgan", "--resume", *common)
    assert "--hidden 128 differs from the saved run" in one_line_error(capsys, 2, "train", "gan", "--resume",
                                                                       "--hidden", "128", *common)
    # the preset given again on resume is checked like any option: the saved run used it
    assert "--z-dim 100 differs" in one_line_error(capsys, 2, "train", "gan", "--resume", "--preset", "tiny",
                                                   "--z-dim", "100", *common)
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize("where", ["model", "manifest", "pointer", "log"])
def test_full_disk_loses_nothing(where, capsys, tiny_npz, tmp_path, monkeypatch):
    """ENOSPC at the 3rd checkpoint (weights, manifest or `latest` pointer) or in the log: one line,
    exit 2, the committed checkpoints verify and load, and --resume ends bit-exact."""
    ref = tiny(tmp_path, tiny_npz, "ref", max_steps=5)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    calls = {"n": 0}

    def failing(real, nth):
        def f(*a, **k):
            calls["n"] += 1
            if calls["n"] == nth:
                Path(a[1]).write_bytes(b"\0" * 7) if len(a) > 1 and isinstance(a[1], Path) else None
                raise full
            return real(*a, **k)
        return f
    if where == "model":
        monkeypatch.setattr(ckpt, "save_file", failing(ckpt.save_file, 3 * 2 + 1))
    elif where == "manifest":
        monkeypatch.setattr(ckpt, "_write_json", failing(ckpt._write_json, 3 * 2))
    elif where == "pointer":  # the `latest` pointer of the third checkpoint
        monkeypatch.setattr(ckpt, "atomic_write_text", failing(ckpt.atomic_write_text, 3))
    else:
        from genlab import logger
        real_log = logger.RunLogger.log

        def log(self, step, *a):
            if step == 4:
                raise full
            return real_log(self, step, *a)
        monkeypatch.setattr(logger.RunLogger, "log", log)
    run = tmp_path / "r"
    line = one_line_error(capsys, 2, "train", "gan", "--preset", "tiny", "--data", "npz",
                          "--data-dir", str(tiny_npz), "--out", str(run), "--max-steps", "5",
                          "--ckpt-every", "1", "--threads", "1", "--sample-every", "0",
                          "--precision", "fp32", "--seed", "3", "--log-every", "1")
    assert "No space left on device" in line and "continue with --resume" in line
    kept = "ckpt-00000003" if where in ("pointer", "log") else "ckpt-00000002"
    assert f"last committed checkpoint: {kept}" in line
    monkeypatch.undo()
    assert not list(run.glob(".tmp-*"))
    assert ckpt.latest(run).name == kept and genlab.load(run).step == int(kept[-1])
    genlab.train(resume=True, out=str(run), quiet=True)
    assert same(weights(run), weights(ref))


def test_read_only_run_folder_is_one_line_exit_2(capsys, tiny_npz, tmp_path, monkeypatch):
    """Simulated (tests may run as root, which ignores permissions): every write raises EROFS."""
    def ro(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    from genlab import run
    monkeypatch.setattr(run, "atomic_write_text", ro)  # config.json, the first file a run writes
    line = one_line_error(capsys, 2, "train", "gan", "--preset", "tiny", "--data", "npz", "--data-dir",
                          str(tiny_npz), "--out", str(tmp_path / "r"), "--threads", "1")
    assert "cannot write the run folder" in line and "Read-only file system" in line


# ---------------------------------------------------------------------------------- 6. determinism
def test_same_seed_same_curves_and_logging_never_changes_training(tiny_npz, tmp_path):
    a = tiny(tmp_path, tiny_npz, "a", max_steps=6, model="dcgan")
    b = tiny(tmp_path, tiny_npz, "b", max_steps=6, model="dcgan", sample_every=1, log_every=2,
             ckpt_every=1)
    c = tiny(tmp_path, tiny_npz, "c", max_steps=6, model="dcgan", seed=4)
    assert same(weights(a), weights(b)) and not same(weights(a), weights(c))
    curve = lambda r: [{k: v for k, v in json.loads(l).items() if k != "img_s"}
                       for l in (r / "metrics.jsonl").read_text().splitlines()]
    a2 = tiny(tmp_path, tiny_npz, "a2", max_steps=6, model="dcgan")
    assert curve(a) == curve(a2) and curve(a)[1::2] == curve(b)
    x = [draw(genlab.load(r), 16, seed=7)[0] for r in (a, a2, b)]
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    assert len(list((b / "samples").glob("*.png"))) == 6


def test_nonfinite_flags_inf_and_nan_only_and_leaves_gradients_unchanged():
    """The fused check: any inf/nan in the loss or a gradient (fp32 or bf16) is found; large finite
    gradients are not (a norm of [3e38, 3e38] overflows to inf, their check must not); nothing changes."""
    grads = [torch.randn(3, 4), torch.full((2,), 3e38), torch.randn(5).bfloat16()]
    kept = [g.clone() for g in grads]
    assert nonfinite(torch.tensor(2.0), grads).item() == 0
    assert all(torch.equal(a, b) for a, b in zip(grads, kept))
    assert nonfinite(torch.tensor(float("inf")), grads).item() > 0
    for i, bad in ((0, float("nan")), (1, float("inf")), (2, float("-inf"))):
        g = [t.clone() for t in grads]
        g[i].view(-1)[0] = bad
        assert nonfinite(torch.tensor(2.0), g).item() > 0, (i, bad)
