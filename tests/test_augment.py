"""genlab augment: synthetic labelled sets in the ImageFolder layout (apps/augment.py, cli/augment.py).

The filter and the labelling are checked against stand-ins whose answers are known in closed form: a
generator of coded images and a classifier that reads the code back, so that the expected counts,
rejections and labels are exact."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from conftest import TINY, make_tiny_npz, one_line_error, run_cli
from genlab.apps.augment import augment, class_names
from genlab.registry import UsageError


# ------------------------------------------------------------------------------------ stand-ins
class CodedG:
    """A models.Generator whose image i carries a class code c and a confidence code q in its pixels:
    pixel (0, 0) = 10 * c + 5 (unconditional: c uniform over 0..9 except `missing`; conditional: c = y),
    pixel (0, 1) = 200 if the classifier should be sure (prob `sure`, never for a class in `unsure`),
    else 100. shape (1, 28, 28)."""
    z_dim, shape = 4, (1, 28, 28)

    def __init__(self, num_classes=0, sure=0.5, missing=(), unsure=()):
        self.num_classes, self.sure, self.missing, self.unsure = num_classes, sure, set(missing), list(unsure)

    def sample(self, n, labels=None, generator=None):
        allowed = torch.tensor([c for c in range(10) if c not in self.missing])
        c = labels if labels is not None else allowed[torch.randint(len(allowed), (n,), generator=generator)]
        q = (torch.rand(n, generator=generator) < self.sure) & ~torch.isin(c, torch.tensor(self.unsure, dtype=torch.long))
        x = torch.rand(n, 1, 28, 28, generator=generator) * 0.2 - 1      # background noise
        x[:, 0, 0, 0] = (10 * c + 5) / 127.5 - 1
        x[:, 0, 0, 1] = torch.where(q, 200.0, 100.0) / 127.5 - 1
        return x

    def generate(self, z, y=None):
        raise NotImplementedError


class CodeReader(torch.nn.Module):
    """Reads the code back: p(class c | x) = 0.95 where q is high, 0.5 where low; the rest spread evenly."""
    def forward(self, x):
        u = ((x + 1) * 127.5).round()
        c = (u[:, 0, 0, 0] // 10).long().clamp(0, 9)
        conf = torch.where(u[:, 0, 0, 1] > 150, 0.95, 0.5)
        p = ((1 - conf) / 9)[:, None].repeat(1, 10)
        p[torch.arange(len(x)), c] = conf
        return p.log()


def codes(images_u8):
    """(class code, sure?) of uint8 images (N, 1, 28, 28)."""
    return (images_u8[:, 0, 0, 0] // 10).long(), images_u8[:, 0, 0, 1] > 150


# -------------------------------------------------------------------------------- library, exact
def test_unconditional_labels_are_the_classifier_argmax_and_the_filter_is_exact():
    g = torch.Generator().manual_seed(0)
    r = augment(CodedG(0, sure=0.5), 7, g, CodeReader(), min_confidence=0.9, batch_size=64)
    c, sure = codes(r.images)
    assert r.images.dtype == torch.uint8 and r.images.shape == (70, 1, 28, 28)
    assert r.counts() == [7] * 10 and torch.equal(c, r.labels) and sure.all()
    assert r.labels_from == "classifier" and r.min_confidence == 0.9
    # every draw is accounted for: kept, rejected (not sure) or surplus (class already full)
    assert r.drawn == 70 + r.rejected + r.surplus and r.rejected > 0
    # redo the draws with the same generator: the rejections are exactly the unsure ones
    g = torch.Generator().manual_seed(0)
    xs = [CodedG(0, sure=0.5).sample(min(64, r.drawn - i), generator=g) for i in range(0, r.drawn, 64)]
    _, s = codes(((torch.cat(xs) + 1) * 127.5).round().to(torch.uint8))
    assert r.rejected == int((~s).sum())


def test_no_filter_keeps_every_draw_until_full_and_order_is_by_class():
    r = augment(CodedG(0, sure=0.0), 5, torch.Generator().manual_seed(1), CodeReader(), batch_size=50)
    assert r.rejected == 0 and r.drawn == 50 + r.surplus
    assert torch.equal(r.labels, torch.arange(10).repeat_interleave(5))
    assert torch.equal(codes(r.images)[0], r.labels)


def test_conditional_draws_each_class_and_filters_on_p_of_its_own_class():
    r = augment(CodedG(10, sure=1.0), 4, torch.Generator().manual_seed(0))
    assert r.labels_from == "conditioning" and r.drawn == 40 and r.rejected == r.surplus == 0
    assert torch.equal(codes(r.images)[0], r.labels)
    r = augment(CodedG(10, sure=0.3), 6, torch.Generator().manual_seed(0), CodeReader(), min_confidence=0.9)
    c, sure = codes(r.images)
    assert r.counts() == [6] * 10 and torch.equal(c, r.labels) and sure.all()
    assert r.rejected > 0 and r.drawn == 60 + r.rejected + r.surplus


def test_determinism_with_a_generator():
    a = augment(CodedG(0), 3, torch.Generator().manual_seed(5), CodeReader(), 0.9, batch_size=16)
    b = augment(CodedG(0), 3, torch.Generator().manual_seed(5), CodeReader(), 0.9, batch_size=16)
    c = augment(CodedG(0), 3, torch.Generator().manual_seed(6), CodeReader(), 0.9, batch_size=16)
    assert torch.equal(a.images, b.images) and (a.drawn, a.rejected) == (b.drawn, b.rejected)
    assert not torch.equal(a.images, c.images)


def test_a_class_too_rare_is_a_one_line_error_naming_it():
    with pytest.raises(UsageError, match=r"class 7 is too rare: 0 of 2 images after 200 draws"):
        augment(CodedG(0, missing={7}), 2, torch.Generator().manual_seed(0), CodeReader(), max_draws=200)
    with pytest.raises(UsageError, match=r"class 3 is too rare: 0 of 2 images after 300 draws \(only 0 of"):
        augment(CodedG(10, sure=1.0, unsure=[3]), 2, torch.Generator().manual_seed(0), CodeReader(), 0.9,
                max_draws=300)


def test_class_names_sort_in_class_order():
    assert class_names(10) == [str(i) for i in range(10)]
    assert class_names(12) == sorted(class_names(12)) and class_names(12)[2] == "02"


@pytest.mark.parametrize("kw, match", [(dict(per_class=0), "--per-class must be in 1.."),
                                       (dict(per_class=10 ** 6), "--per-class must be in 1.."),
                                       (dict(per_class=1, min_confidence=1.0), "--min-confidence must be"),
                                       (dict(per_class=1, min_confidence=0.5, classifier=None), "needs a classifier")])
def test_bad_requests(kw, match):
    kw = {"classifier": CodeReader(), **kw}
    with pytest.raises(UsageError, match=match):
        augment(CodedG(10), generator=torch.Generator(), **kw)


# ----------------------------------------------------------------------- the command, tiny runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny conditional (cgan) and unconditional (gan) run on the conftest tiny data; the cgan gets 20
    steps: at 2 its images are a flat grey that uint8 rounding makes the same for every seed."""
    d = tmp_path_factory.mktemp("runs")
    make_tiny_npz(d / "tiny.npz")
    return {name: genlab.train(name, preset="tiny", max_steps=steps, **TINY, data_dir=str(d / "tiny.npz"),
                               out=str(d / name), threads=1) for name, steps in (("cgan", 20), ("gan", 2))}


def read_folder(out):
    """(images uint8 (N, 1, 28, 28), labels) through torchvision's ImageFolder, as a user loads it."""
    from torchvision.datasets import ImageFolder
    ds = ImageFolder(str(out), loader=lambda p: np.array(Image.open(p)))
    assert ds.class_to_idx == {str(c): c for c in range(10)}
    return torch.from_numpy(np.stack([im for im, _ in ds]))[:, None], torch.tensor(ds.targets)


def test_cli_conditional_layout_manifest_and_imagefolder(capsys, runs, tmp_path):
    out = tmp_path / "set"
    code, stdout, err = run_cli(capsys, "augment", runs["cgan"], "--per-class", 3, "--out", out, "--seed", 1)
    assert code == 0, err
    assert json.loads(stdout)["images"] == 30
    assert sorted(p.name for p in out.iterdir()) == [str(c) for c in range(10)] + ["manifest.json"]
    assert all(sorted(p.name for p in (out / str(c)).iterdir()) == ["0.png", "1.png", "2.png"] for c in range(10))
    m = json.loads((out / "manifest.json").read_text())
    model = genlab.load(runs["cgan"])
    assert m["model"] == "cgan" and m["step"] == 20 and m["seed"] == 1 and m["labels_from"] == "conditioning"
    assert m["run"] == str(runs["cgan"].resolve()) and len(m["checkpoint_sha256"]) == 64
    assert m["checkpoint_sha256"] == genlab.io.sha256_file(model.checkpoint / "MANIFEST.json")
    assert m["per_class"] == {str(c): 3 for c in range(10)} and m["classifier"] is None
    assert m["filter"] == {"min_confidence": 0.0, "drawn": 30, "rejected": 0, "surplus": 0}
    assert m["model_sha256"] == genlab.io.sha256_file(model.checkpoint / "model.safetensors")
    # the files hold exactly what the library draws with that seed, each in its class's folder
    images, labels = read_folder(out)
    r = augment(model, 3, torch.Generator().manual_seed(1))
    assert torch.equal(images, r.images) and torch.equal(labels, r.labels)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary left
    # same seed -> the same bytes; another seed -> other images
    run_cli(capsys, "augment", runs["cgan"], "--per-class", 3, "--out", tmp_path / "again", "--seed", 1)
    assert all((out / "4" / f).read_bytes() == (tmp_path / "again" / "4" / f).read_bytes() for f in ("0.png", "2.png"))
    run_cli(capsys, "augment", runs["cgan"], "--per-class", 3, "--out", tmp_path / "other", "--seed", 2)
    assert not torch.equal(read_folder(tmp_path / "other")[0], images)


def test_cli_unconditional_labelled_and_filtered_by_the_classifier(capsys, runs, tmp_path, monkeypatch):
    # a 2-step run draws near-identical grey images that the MNIST classifier calls all "8": the
    # shipped classifier is replaced by the code reader, and the run's images are coded through it
    import genlab.metrics.classifier as mc
    monkeypatch.setattr(mc, "load_classifier", lambda name, sha256=None: CodeReader())
    out = tmp_path / "set"
    one_line_error(capsys, "augment", runs["gan"], "--per-class", 2, "--out", out, "--max-draws", 100,
                   match="is too rare")   # the run's own images carry no code: all class 0
    assert not out.exists() and not list(tmp_path.iterdir())
    model = genlab.load(runs["gan"])
    monkeypatch.setattr(type(model), "sample", lambda self, n, labels=None, generator=None:
                        CodedG(0, sure=0.5).sample(n, generator=generator))
    code, _, err = run_cli(capsys, "augment", runs["gan"], "--per-class", 4, "--out", out,
                           "--min-confidence", 0.9, "--seed", 3)
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["labels_from"] == "classifier" and m["classifier"]["name"] == "mnist" and "real-label" in m["note"]
    assert m["filter"]["min_confidence"] == 0.9 and m["filter"]["rejected"] > 0
    assert m["filter"]["drawn"] == 40 + m["filter"]["rejected"] + m["filter"]["surplus"]
    images, labels = read_folder(out)
    c, sure = codes(images)
    assert torch.equal(c, labels) and sure.all() and len(images) == 40


def test_cli_bad_inputs_one_line_exit_2_and_nothing_half_written(capsys, runs, tmp_path):
    run = runs["cgan"]
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    one_line_error(capsys, "augment", run, "--per-class", 2, "--out", full, match="not empty; add --overwrite")
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    one_line_error(capsys, "augment", run, "--per-class", 0, "--out", tmp_path / "a", match="--per-class must be")
    one_line_error(capsys, "augment", run, "--per-class", 10 ** 9, "--out", tmp_path / "a", match="--per-class must be")
    one_line_error(capsys, "augment", run, "--per-class", 2, "--out", tmp_path / "a", "--classifier", "cifar",
                   match="neither a file nor one of mnist, fashion-mnist")
    one_line_error(capsys, "augment", run, "--per-class", 2, "--out", tmp_path / "a", "--min-confidence", 1.5,
                   match="--min-confidence must be")
    one_line_error(capsys, "augment", run, "--per-class", 2, "--out", tmp_path / "a", "--seed", -1, match="--seed")
    one_line_error(capsys, "augment", tmp_path / "norun", "--per-class", 2, "--out", tmp_path / "a",
                   match="no checkpoint")
    bad = tmp_path / "c.safetensors"
    bad.write_bytes(b"x")
    one_line_error(capsys, "augment", run, "--per-class", 2, "--out", tmp_path / "a", "--classifier", bad,
                   match="c.json with its sha256")
    # the conditional filter cannot be met: an error, and neither the folder nor a temporary remains
    one_line_error(capsys, "augment", run, "--per-class", 2, "--out", tmp_path / "a", "--min-confidence", 0.999,
                   "--max-draws", 40, match="too rare")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors", "full"]
    # --overwrite replaces the folder as a whole
    code, _, err = run_cli(capsys, "augment", run, "--per-class", 2, "--out", full, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in full.iterdir()) == [str(c) for c in range(10)] + ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors", "full"]


def test_space_is_checked_before_drawing(monkeypatch, tmp_path):
    import shutil
    from genlab.apps.augment import FILE_BYTES, check_space
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 6, 0, 10 ** 6))
    assert 100 * (FILE_BYTES + 784) < 10 ** 6 < 1000 * (FILE_BYTES + 784)
    check_space(10, 10, (1, 28, 28), tmp_path / "x")             # 100 files fit in 1 MB
    with pytest.raises(UsageError, match="on disk"):              # 1,000 do not
        check_space(100, 10, (1, 28, 28), tmp_path / "x")


def test_bench_cas_truncated_noise_matches_the_truncated_normal():
    """benchmarks/bench_cas.py --truncation: z_i in [-psi, psi], deterministic, variance of the
    truncated normal (scipy.stats.truncnorm, closed form)."""
    import importlib.util
    from pathlib import Path
    from scipy.stats import truncnorm
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cas.py"
    spec = importlib.util.spec_from_file_location("bench_cas", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    class M:
        z_dim = 50
    for psi in (0.5, 1.0, 2.0):
        noise = bench.truncated_noise(M, psi)
        z = noise(4000, torch.Generator().manual_seed(1))
        assert z.shape == (4000, 50) and z.abs().max() <= psi
        assert torch.equal(z, noise(4000, torch.Generator().manual_seed(1)))
        assert abs(z.var().item() - truncnorm.var(-psi, psi)) < 0.01 * truncnorm.var(-psi, psi) + 0.002
        assert abs(z.mean().item()) < 0.01
