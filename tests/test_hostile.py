"""Hostile input, met the way a user meets it: every case is a real `genlab` process (subprocess), and
must end with its exit code (2: usage, 1: runtime fault), ONE line on stderr naming the fix, no
traceback, no half-made run folder, and nothing already written changed or lost. The README's
reliability section lists these cases by name (checked below), so the list and the test stay one.

The processes run two at a time (2 cores): the whole table takes about a minute of CPU."""
import hashlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--preset", "tiny", "--threads", "1", "--max-steps", "1", "--sample-every", "0"]


@dataclass
class Case:
    name: str            # what a user did (listed in the README)
    argv: list[str]      # {out} = a fresh run folder, {t} = this case's folder, {run}/{crun}/{data}/{x:NAME}
    match: str           # in the one line
    code: int = 2
    files: dict = field(default_factory=dict)  # NAME -> bytes/str written into {t} before the run


def npz_bytes(**arrays) -> bytes:
    import io
    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


_rng = np.random.default_rng(0)
_X = _rng.integers(0, 256, (32, 1, 28, 28), dtype=np.uint8)
_Y = np.arange(32) % 4
TRAIN = ["train", "dcgan", "--data", "npz", "--data-dir", "{data}", "--out", "{out}", *TINY_TRAIN]
NPZ_TRAIN = ["train", "dcgan", "--data", "npz", "--data-dir", "{t}/d.npz", "--out", "{out}", *TINY_TRAIN]

CASES = [
    # ---- train: names and numbers
    Case("train an unknown model", ["train", "nomodel", "--out", "{out}"], "unknown model 'nomodel'; known:"),
    Case("an unknown loss", [*TRAIN, "--loss", "nope"], "unknown loss 'nope'; known:"),
    Case("an unknown data source", ["train", "dcgan", "--data", "imagenet", "--out", "{out}"],
         "unknown data source 'imagenet'; known:"),
    Case("an unknown preset", [*TRAIN, "--preset", "huge"], "unknown preset 'huge'"),
    Case("a misspelt option", [*TRAIN, "--z-dimm", "3"], "unrecognized arguments: --z-dimm"),
    Case("a word for a number", [*TRAIN, "--max-steps", "ten"], "invalid int value"),
    Case("--batch-size 0", [*TRAIN, "--batch-size", "0"], "--batch-size must be >= 1"),
    Case("a batch larger than the data", [*TRAIN, "--batch-size", "1000"], "larger than the data (64 images)"),
    Case("--max-steps -5", [*TRAIN, "--max-steps", "-5"], "--max-steps must be >= 1"),
    Case("--lr-g nan", [*TRAIN, "--lr-g", "nan"], "--lr-g must be a finite number, got nan"),
    Case("--lr-d inf", [*TRAIN, "--lr-d", "inf"], "--lr-d must be a finite number, got inf"),
    Case("--lr-g -1", [*TRAIN, "--lr-g", "-1"], "--lr-g must be >= 0"),
    Case("--threads 100000", [*TRAIN, "--threads", "100000"], "--threads must be <= "),
    Case("--threads 0", [*TRAIN, "--threads", "0"], "--threads must be >= 1"),
    Case("--image-size 0", [*TRAIN, "--image-size", "0"], "--image-size must be >= 8"),
    Case("--z-dim 0", [*TRAIN, "--z-dim", "0"], "--z-dim must be >= 1"),
    Case("--keep-last 0", [*TRAIN, "--keep-last", "0"], "--keep-last must be >= 1"),
    Case("--ckpt-every -1", [*TRAIN, "--ckpt-every", "-1"], "--ckpt-every must be >= 0"),
    Case("--seed -1", [*TRAIN, "--seed", "-1"], "--seed must be >= 0"),
    Case("a seed beyond 64 bits", [*TRAIN, "--seed", str(2 ** 70)], "--seed must be <= "),
    Case("--z-dim 100000000 (313 GB)", [*TRAIN, "--z-dim", "100000000"], "GiB to train"),
    Case("--ngf 1000000", [*TRAIN, "--ngf", "1000000"], "choose smaller sizes"),
    Case("--image-size 100000", [*TRAIN, "--image-size", "100000"], "--image-size must be <= 512"),
    Case("--image-size 30 for dcgan", [*TRAIN, "--image-size", "30"], "dcgan needs --image-size"),
    Case("--precision fp8", [*TRAIN, "--precision", "fp8"], "invalid choice"),
    Case("--device cuda without a GPU", [*TRAIN, "--device", "cuda"], "--device cuda: no CUDA GPU"),
    # ---- train: config files
    Case("a config file with an unknown key", ["train", "dcgan", "--config", "{t}/c.json", "--out", "{out}"],
         "unknown option 'colour'", files={"c.json": '{"z_dim": 4, "colour": 1}'}),
    Case("a config file holding a list", ["train", "dcgan", "--config", "{t}/c.json", "--out", "{out}"],
         "must hold a table of options", files={"c.json": "[1, 2]"}),
    Case("a config file with a string for a number", ["train", "dcgan", "--config", "{t}/c.toml", "--out", "{out}"],
         "--batch-size must be int", files={"c.toml": 'batch_size = "8"'}),
    Case("a config file that is not TOML", ["train", "dcgan", "--config", "{t}/c.toml", "--out", "{out}"],
         "is not valid TOML", files={"c.toml": "z_dim = "}),
    Case("lr_d = nan in a config file", ["train", "dcgan", "--config", "{t}/c.json", "--out", "{out}"],
         "finite number", files={"c.json": '{"lr_d": NaN}'}),
    Case("a config file with a [model] table", ["train", "dcgan", "--config", "{t}/c.toml", "--out", "{out}"],
         "unknown option 'model'", files={"c.toml": "[model]\nz_dim = 3"}),
    Case("a config file that does not exist", ["train", "dcgan", "--config", "{t}/none.toml", "--out", "{out}"],
         "none.toml"),
    # ---- train: data
    Case("--data mnist with a missing --data-dir", ["train", "dcgan", "--data", "mnist", "--data-dir",
         "/nonexistent/mnist", "--out", "{out}"], "pass --data-dir"),
    Case("--data folder with a missing folder", ["train", "dcgan", "--data", "folder", "--data-dir",
         "/nonexistent", "--out", "{out}"], "--data-dir"),
    Case("an npz of 2-channel images", NPZ_TRAIN, "2 channels",
         files={"d.npz": npz_bytes(images=np.zeros((32, 2, 28, 28), np.uint8))}),
    Case("an npz of float images", NPZ_TRAIN, "must be non-empty uint8",
         files={"d.npz": npz_bytes(images=_X.astype(np.float32))}),
    Case("an npz with no images", NPZ_TRAIN, "must be non-empty uint8",
         files={"d.npz": npz_bytes(images=np.zeros((0, 1, 28, 28), np.uint8))}),
    Case("an npz without an 'images' array", NPZ_TRAIN, "has no 'images' array",
         files={"d.npz": npz_bytes(pictures=_X)}),
    Case("an npz holding a pickle", NPZ_TRAIN, "object arrays are refused",
         files={"d.npz": npz_bytes(images=np.array([{"a": 1}], dtype=object))}),
    Case("a text file named .npz", NPZ_TRAIN, "could not be read as a plain npz", files={"d.npz": "hello"}),
    Case("fractional labels", NPZ_TRAIN, "labels must be whole numbers",
         files={"d.npz": npz_bytes(images=_X, labels=_Y / 3)}),
    Case("labels up to 10^9", NPZ_TRAIN, "labels must be class indices 0..999",
         files={"d.npz": npz_bytes(images=_X, labels=_Y * 10 ** 9)}),
    Case("negative labels", NPZ_TRAIN, "labels must be class indices",
         files={"d.npz": npz_bytes(images=_X, labels=-_Y - 2)}),
    Case("text labels", NPZ_TRAIN, "labels must be integers",
         files={"d.npz": npz_bytes(images=_X, labels=np.array(["cat"] * 32))}),
    Case("fewer labels than images", NPZ_TRAIN, "20 labels for 32 images",
         files={"d.npz": npz_bytes(images=_X, labels=_Y[:20])}),
    Case("cgan on unlabelled data", [*NPZ_TRAIN[:1], "cgan", *NPZ_TRAIN[2:]], "cgan needs labelled data",
         files={"d.npz": npz_bytes(images=_X)}),
    Case("cgan on half-labelled data", [*NPZ_TRAIN[:1], "cgan", *NPZ_TRAIN[2:]], "cgan needs labelled data",
         files={"d.npz": npz_bytes(images=_X, labels=np.where(_Y % 2 == 0, -1, _Y))}),
    # ---- train: run folders
    Case("--resume with nothing to resume", ["train", "dcgan", "--resume", "--out", "{t}/none"], "nothing to resume"),
    Case("--resume and --overwrite together", [*TRAIN, "--resume", "--overwrite"], "choose one"),
    Case("a new run into a folder holding a run", ["train", "gan", "--data", "npz", "--data-dir", "{data}",
         "--out", "{run}", *TINY_TRAIN], "already holds a run"),
    Case("--resume with another model", ["train", "dcgan", "--resume", "--out", "{run}"], "holds a 'gan' run"),
    Case("--resume changing the architecture", ["train", "gan", "--resume", "--out", "{run}", "--hidden", "128"],
         "--hidden 128 differs from the saved run"),
    Case("--out in a folder that cannot exist", [*TRAIN[:6], "--out", "/proc/genlab/run", *TINY_TRAIN],
         "/proc/genlab/run"),
    # ---- sample
    Case("sample a folder that is not a run", ["sample", "{t}", "--out", "{t}/a.png"], "no checkpoint in"),
    Case("sample to a .jpg", ["sample", "{run}", "--out", "{t}/a.jpg"], "--out must end in .png"),
    Case("sample --n 0", ["sample", "{run}", "--n", "0", "--out", "{t}/a.npz"], "--n must be >= 1, got 0"),
    Case("sample --n 2.5", ["sample", "{run}", "--n", "2.5", "--out", "{t}/a.npz"], "invalid int value"),
    Case("sample --n 10^9 (beyond memory)", ["sample", "{run}", "--n", "1000000000", "--out", "{t}/a.npz"],
         "GiB in memory, more than half"),
    Case("a 100,000-image PNG grid", ["sample", "{run}", "--n", "100000", "--out", "{t}/a.png"],
         "too many for one PNG grid"),
    Case("sample --batch-size 0", ["sample", "{run}", "--batch-size", "0", "--out", "{t}/a.npz"],
         "--batch-size must be >= 1"),
    Case("sample --nrow 0", ["sample", "{run}", "--nrow", "0", "--out", "{t}/a.png"], "--nrow must be >= 1"),
    Case("sample --seed beyond 64 bits", ["sample", "{run}", "--seed", str(2 ** 70), "--out", "{t}/a.npz"],
         "--seed must be in 0.."),
    Case("sample --seed -1", ["sample", "{run}", "--seed", "-1", "--out", "{t}/a.npz"], "--seed must be in 0.."),
    Case("sample --label of an unconditional model", ["sample", "{run}", "--label", "3", "--out", "{t}/a.npz"],
         "--label needs a conditional model"),
    Case("sample --label beyond the classes", ["sample", "{crun}", "--label", "99", "--out", "{t}/a.npz"],
         "label"),
    Case("sample into an unwritable place", ["sample", "{run}", "--out", "/proc/genlab/a.npz"],
         "cannot write /proc/genlab/a.npz"),
    Case("sample into a path under a file", ["sample", "{run}", "--out", "{t}/file/a.npz"], "cannot write",
         files={"file": "a file where a folder is expected"}),
    # ---- eval
    Case("eval a missing source", ["eval", "{t}/missing"], "neither a run folder"),
    Case("eval an unknown metric", ["eval", "{run}", "--metrics", "fd,bogus"], "unknown metric 'bogus'"),
    Case("eval an npz without --ref", ["eval", "{t}/s.npz"], "--ref", files={"s.npz": npz_bytes(images=_X)}),
    Case("eval nll of a GAN", ["eval", "{run}", "--metrics", "nll"], "needs a VAE"),
    Case("eval --threads 0", ["eval", "{run}", "--threads", "0"], "--threads must be >= 1"),
    Case("eval writing its JSON where it cannot", ["eval", "{t}/s.npz", "--ref", "npz", "--data-dir", "{data}",
         "--metrics", "fd", "--features", "mnist-cnn", "--json", "/proc/genlab/e.json"],
         "(the scores are printed above)", files={"s.npz": npz_bytes(images=_X)}),
    # ---- the command line itself
    Case("no command", [], "required: cmd"),
    Case("an unknown command", ["bogus"], "invalid choice"),
]


def _fill(a: str, t: Path, fx: dict) -> str:
    return a.format(t=t, out=t / "run", **fx)


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Runs every case once, two processes at a time -> {name: (case dir, before, CompletedProcess)}."""
    base = tmp_path_factory.mktemp("hostile")
    data = base / "data.npz"
    np.savez(data, images=np.concatenate([_X, _X]), labels=np.concatenate([_Y, _Y]))
    fx = {"data": str(data), "run": str(base / "run"), "crun": str(base / "crun")}
    env = {"PYTHONPATH": str(ROOT / "src"), "GENLAB_CACHE": str(base / "cache"), "PATH": "/usr/bin:/bin"}
    for model, out in (("gan", fx["run"]), ("cgan", fx["crun"])):
        subprocess.run([sys.executable, "-m", "genlab.cli", "train", model, "--data", "npz", "--data-dir",
                        fx["data"], "--out", out, *TINY_TRAIN], check=True, env=env, capture_output=True)
    shared = {k: _snapshot(Path(fx[k])) for k in ("run", "crun")}

    def one(i_case):
        i, case = i_case
        t = base / f"case{i:02d}"
        t.mkdir()
        for name, content in case.files.items():
            (t / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        before = _snapshot(t)
        p = subprocess.run([sys.executable, "-m", "genlab.cli", *[_fill(a, t, fx) for a in case.argv]],
                           capture_output=True, text=True, env=env, timeout=300)
        return case.name, (t, before, p)

    with ThreadPoolExecutor(2) as pool:
        out = dict(pool.map(one, enumerate(CASES)))
    out["__shared__"] = (shared, {k: _snapshot(Path(fx[k])) for k in ("run", "crun")})
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_one_line_and_changes_nothing(case, results):
    if case.name == "--device cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    t, before, p = results[case.name]
    lines = p.stderr.strip().splitlines()
    assert p.returncode == case.code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    errors = [l for l in lines if l.startswith("genlab: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], p.stderr     # one error line, printed last
    others = [l for l in lines[:-1] if not l.startswith("genlab: warning:")]
    assert not others or case.argv[0] == "eval", p.stderr            # (eval reports its progress)
    assert case.match in lines[-1], lines[-1]
    assert not (t / "run").exists()                                  # no half-made run folder
    assert _snapshot(t) == before                                    # nothing written, nothing lost


def test_shared_runs_are_untouched(results):
    before, after = results["__shared__"]
    assert before == after


def test_eval_prints_the_scores_before_failing_to_write_them(results):
    _, _, p = results["eval writing its JSON where it cannot"]
    assert re.search(r"^fd\s+fd\s+[0-9.]+", p.stdout, re.M), p.stdout


def test_the_readme_lists_every_case():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Reliability"):]
    m = re.search(r"(\d+) hostile inputs", section)
    assert m and int(m.group(1)) == len(CASES), "update the README's count of hostile inputs"
    missing = [c.name for c in CASES if f"`{c.name}`" not in section and c.name not in section]
    assert not missing, f"add to the README's reliability list: {missing}"
