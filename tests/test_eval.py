"""`genlab eval`: reports, the reference cache, the IWAE NLL against a closed form, Stacked MNIST,
conditional accuracy, the training-time health check and one-line errors."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import one_line_error, run_cli
from genlab.cli import main
from genlab.data import load_data
from genlab.evaluate import evaluate, parse_metrics
from genlab.metrics.health import health
from genlab.reference import reference_stats
from genlab.metrics import compute, conditional_accuracy
from genlab.metrics.nll import iwae_log_likelihood, log_normal_diag, nll_report, prepare
from genlab.metrics.stacked import classify_channels, mode_stats
from genlab.registry import UsageError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 3-step tiny dcgan on mnist-5k (the shipped data): what `genlab eval RUN` scores."""
    run = tmp_path_factory.mktemp("run") / "dc"
    assert main(["train", "dcgan", "--preset", "tiny", "--max-steps", "3", "--out", str(run),
                 "--threads", "1", "--sample-every", "0"]) == 0
    return run


def write_idx(path, arr):
    import gzip
    arr = np.asarray(arr, np.uint8)
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(head + arr.tobytes())


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory, mnist_dir):
    """The first 1,000 MNIST test digits (and 1,000 training digits) as IDX files: a small reference
    split that keeps these tests fast; the code path is that of the full data."""
    d = tmp_path_factory.mktemp("mnist-small")
    for split, (img, lab) in {"test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
                              "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")}.items():
        ds = load_data("mnist", str(mnist_dir), split)
        write_idx(d / f"{img}.gz", ds.images[:1000, 0].numpy())
        write_idx(d / f"{lab}.gz", ds.labels[:1000].numpy())
    return d


ENTRY_KEYS = {"values", "n", "n_reference", "features", "reference", "protocol"}


def test_eval_run_writes_json_with_provenance(capsys, tiny_run, small_mnist, tmp_path):
    out = tmp_path / "e.json"
    code, stdout, err = run_cli(capsys, "eval", tiny_run, "--metrics", "fd,kid,pr,score,coverage",
                                "--n", 300, "--data-dir", small_mnist, "--json", out)
    assert code == 0, err
    rep = json.loads(out.read_text())
    assert list(rep["scores"]) == ["fd", "kid", "pr", "cs", "classes"]     # aliases resolved
    for name, e in rep["scores"].items():
        assert ENTRY_KEYS <= set(e), name
        assert e["n"] == 300 and e["n_reference"] == 1000
        assert e["features"]["name"] == "mnist-cnn" and len(e["features"]["weights_sha256"]) == 64
        assert e["reference"]["data"] == "mnist" and e["reference"]["split"] == "test"
        assert "300 samples drawn with seed 0" in e["protocol"]
    assert rep["scores"]["fd"]["values"]["fd"] > 0
    assert 0 <= rep["scores"]["pr"]["values"]["precision"] <= 1
    assert rep["source"]["model"] == "dcgan" and rep["source"]["step"] == 3
    assert "fd" in stdout and str(out) in stdout                              # the table + the file


def test_eval_npz_and_cache(capsys, tiny_npz, tmp_path, monkeypatch):
    """An npz of samples vs an npz reference; the second evaluation reads the cached reference."""
    ref = tmp_path / "ref.npz"
    x = load_data("mnist-5k").images[:400].numpy()
    np.savez(ref, images=x)
    calls = []  # feature extractions of reference images (the cache's job is to skip them)
    import genlab.metrics as metrics
    real_extract = metrics.extract
    monkeypatch.setattr(metrics, "extract", lambda name, images, **o: (
        calls.append(len(images)) if len(images) != 64 else None) or real_extract(name, images, **o))
    code, _, err = run_cli(capsys, "eval", tiny_npz, "--ref", "npz", "--data-dir", ref,
                           "--features", "mnist-cnn")
    assert code == 0, err
    rep = json.loads(tiny_npz.with_suffix(".eval.json").read_text())
    assert set(rep["scores"]) == {"fd", "kid", "pr", "cs", "classes", "accuracy"}  # labels -> accuracy
    assert rep["scores"]["fd"]["n"] == 64 and rep["scores"]["fd"]["n_reference"] == 400
    assert rep["source"]["kind"] == "npz" and len(rep["source"]["sha256"]) == 64
    files = list((tmp_path / "cache" / "ref").glob("npz-train-*.npz"))
    assert len(files) == 1 and len(calls) == 1
    with np.load(files[0], allow_pickle=False) as f:
        assert f["features"].shape == (400, 128) and f["sigma"].shape == (128, 128)
    code, _, err = run_cli(capsys, "eval", tiny_npz, "--ref", "npz", "--data-dir", ref,
                           "--features", "mnist-cnn", "--json", tmp_path / "again.json")
    assert code == 0 and len(calls) == 1                                      # no reload: cache hit
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["scores"]["fd"] == rep["scores"]["fd"]                      # (timings: benchmarks/bench_eval.py)
    # a changed reference file is a different cache entry
    np.savez(ref, images=x[:300])
    run_cli(capsys, "eval", tiny_npz, "--ref", "npz", "--data-dir", ref, "--metrics", "fd",
            "--features", "mnist-cnn")
    assert len(calls) == 2
    # the same images under another file name share the entry: the key is the data, not the path
    np.savez(tmp_path / "copy.npz", images=x[:300])
    run_cli(capsys, "eval", tiny_npz, "--ref", "npz", "--data-dir", tmp_path / "copy.npz",
            "--metrics", "fd", "--features", "mnist-cnn")
    assert len(calls) == 2


def test_reference_cache_matches_fresh_computation(small_mnist):
    a = reference_stats("mnist-5k", "test", str(small_mnist))
    b = reference_stats("mnist-5k", "test", str(small_mnist))
    assert not a["cached"] and b["cached"] and a["data"] == "mnist" and a["n"] == 1000
    for k in ("features", "probs", "mu", "sigma", "knn_radii_sq_k3"):
        assert np.array_equal(a[k], b[k])
    fake = {"features": a["features"][:500], "probs": a["probs"][:500], "name": "mnist-cnn"}
    fresh = {k: a[k] for k in ("features", "probs", "name")}
    assert compute("fd,pr", fake, b) == compute("fd,pr", fake, fresh)    # cached stats = same numbers


def test_errors_are_one_line(capsys, tiny_run, tiny_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "nowhere"))
    import genlab.data
    monkeypatch.setattr(genlab.data, "DEFAULT_ROOT", tmp_path / "nowhere")
    one_line_error(capsys, "eval", tiny_run, "--metrics", "fd,bogus", match="unknown metric 'bogus'; known: ")
    one_line_error(capsys, "eval", tiny_run, "--n", 50, match="--data-dir")   # mnist-5k -> mnist test
    one_line_error(capsys, "eval", tiny_npz, match="--ref")
    bad = tmp_path / "bad.npz"
    np.savez(bad, pictures=np.zeros((3, 28, 28), np.uint8))
    one_line_error(capsys, "eval", bad, "--ref", "mnist", match="no 'images'")
    one_line_error(capsys, "eval", tiny_run, "--metrics", "nll", match="needs a VAE")
    one_line_error(capsys, "eval", tmp_path / "missing", match="neither a run folder")
    with pytest.raises(UsageError, match="cs .*classes|known: .*accuracy"):
        parse_metrics("nope")
    assert parse_metrics("score,coverage,fd,score") == ["cs", "classes", "fd"]
    assert parse_metrics(None, conditional=True)[-1] == "accuracy"


# ------------------------------------------------------------------------------------- IWAE NLL
class LinearGaussianVAE(nn.Module):
    """z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I): log p(x) = log N(x; b, W W^T + s^2 I) exactly.
    The encoder is the exact posterior (diagonal here), widened and shifted, so the bound is not tight
    at k=1 and the importance weights p(x, z) / q(z|x) are bounded."""

    likelihood = "gaussian-continuous"

    def __init__(self, d=2, D=5, s=0.5, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))
        self.W = q * torch.linspace(1.5, 0.7, d, dtype=torch.float64)  # orthogonal columns: the
        # exact posterior is diagonal, so a diagonal q that is wider bounds the importance weights
        self.b = torch.randn(D, generator=g, dtype=torch.float64)
        self.s = s
        prec = torch.eye(d, dtype=torch.float64) + self.W.T @ self.W / s ** 2     # posterior precision
        self.cov = torch.linalg.inv(prec)
        self.d = d

    def encode(self, x):
        mu = (x.double() - self.b) @ self.W @ self.cov.T / self.s ** 2 + 0.3      # shifted mean
        logvar = torch.log(torch.diagonal(self.cov) * 2.0).expand(len(x), self.d)  # diagonal, too wide
        return mu, logvar

    def decode(self, z):
        return z.double() @ self.W.T + self.b

    def log_likelihood(self, x, out):
        return log_normal_diag(x.double(), out, math.log(self.s ** 2))

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s ** 2 * torch.eye(len(self.b), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x.double())


def test_iwae_bound_below_true_log_likelihood_and_tightens():
    m = LinearGaussianVAE()
    x = m.decode(torch.randn(200, 2, generator=torch.Generator().manual_seed(1))) + \
        0.5 * torch.randn(200, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    true = m.log_px(x).mean().item()
    bound = {k: iwae_log_likelihood(m, x, k, torch.Generator().manual_seed(3), batch=4000).mean().item()
             for k in (1, 10, 100, 2000)}
    # Burda et al. theorem 1: L_1 (the ELBO) <= L_k <= log p(x), and L_k -> log p(x); averaged over 200
    # images the Monte Carlo noise is ~0.03 at k=10 and ~0.002 at k=2000
    assert bound[1] < true - 0.2                        # the proposal is genuinely poor
    assert bound[1] < bound[10] - 0.1 and bound[10] < bound[100] + 0.03
    assert bound[100] < true + 0.02 and abs(bound[2000] - true) < 0.01
    # batching (chunks of the k samples across decoder passes) only changes the random draws
    b2 = iwae_log_likelihood(m, x[:50], 2000, torch.Generator().manual_seed(3), batch=64).mean().item()
    assert abs(b2 - m.log_px(x[:50]).mean().item()) < 0.02


def test_iwae_exact_posterior_is_exact():
    m = LinearGaussianVAE(d=1, D=1, s=0.7)             # one dimension: the exact posterior is diagonal
    m.encode = lambda x: (((x.double() - m.b) @ m.W @ m.cov.T) / m.s ** 2,
                          torch.log(torch.diagonal(m.cov)).expand(len(x), 1))
    x = torch.linspace(-2, 2, 7, dtype=torch.float64)[:, None]
    est = iwae_log_likelihood(m, x, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(est, m.log_px(x), rtol=0, atol=1e-9)   # weights are constant = p(x)


def test_nll_protocol_binarisation_and_bits_per_dim():
    u8 = torch.tensor([[[[0, 255, 128, 64]]]], dtype=torch.uint8).expand(2000, 1, 1, 4)
    xb = prepare(u8, "bernoulli", torch.Generator().manual_seed(0))
    assert set(xb.unique().tolist()) == {-1.0, 1.0}
    share = (xb > 0).double().mean(0).flatten()
    assert share[0] == 0 and share[1] == 1 and abs(share[2] - 128 / 255) < 0.05
    assert torch.equal(prepare(u8[:1], "gaussian"), u8[:1].float() / 127.5 - 1)
    rep = nll_report(torch.full((4,), -784 * math.log(2)), "gaussian", 784)
    assert rep["bits_per_dim"] == pytest.approx(1.0) and "bits_per_dim" not in nll_report(
        torch.zeros(3), "bernoulli", 784)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_eval_nll_on_a_vae_run(capsys, tmp_path, small_mnist, likelihood):
    pytest.importorskip("genlab.models.vae")
    run = tmp_path / "vae"
    assert main(["train", "vae", "--preset", "tiny", "--max-steps", "2", "--out", str(run), "--threads", "1",
                 "--sample-every", "0", "--likelihood", likelihood]) == 0
    code, _, err = run_cli(capsys, "eval", run, "--metrics", "nll", "--n", 20, "--k", 50,
                           "--data-dir", small_mnist, "--json", tmp_path / "nll.json")
    assert code == 0, err
    e = json.loads((tmp_path / "nll.json").read_text())["scores"]["nll"]
    assert e["n"] == 20 and e["k"] == 50 and e["likelihood"] == likelihood
    assert e["values"]["nll_nats"] > 0
    if likelihood == "bernoulli":
        assert "dynamically binarised" in e["protocol"] and "bits_per_dim" not in e["values"]
    else:
        assert e["values"]["bits_per_dim"] == pytest.approx(e["values"]["nll_nats"] / (784 * math.log(2)))
    assert e["reference"]["data"] == "mnist" and e["reference"]["split"] == "test"


# ---------------------------------------------------------------------------------- stacked MNIST
def test_stacked_mnist_data_is_deterministic(mnist_dir):
    a = load_data("stacked-mnist", str(mnist_dir), "test", n=300, seed=5)
    b = load_data("stacked-mnist", str(mnist_dir), "test", n=300, seed=5)
    c = load_data("stacked-mnist", str(mnist_dir), "test", n=300, seed=6)
    assert a.images.shape == (300, 3, 28, 28) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images) and a.num_classes == 1000
    assert 0 <= int(a.labels.min()) and int(a.labels.max()) <= 999
    # each channel is an MNIST test digit whose label is the matching decimal digit
    mnist = load_data("mnist", str(mnist_dir), "test")
    idx = np.random.default_rng(5).integers(0, 10_000, size=(300, 3))
    assert torch.equal(a.images[7, 1], mnist.images[idx[7, 1], 0])
    want = mnist.labels[idx[:, 0]] * 100 + mnist.labels[idx[:, 1]] * 10 + mnist.labels[idx[:, 2]]
    assert torch.equal(a.labels, want)
    # the protocol on real stacked digits: the classifier recovers the modes
    modes = classify_channels(a.images)
    assert (modes == a.labels.numpy()).mean() > 0.95


def test_mode_stats_closed_forms():
    even = mode_stats(np.arange(3000) % 1000)
    assert even["modes"] == 1000 and even["kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    one = mode_stats(np.full(500, 123))
    assert one["modes"] == 1 and one["kl_uniform"] == pytest.approx(math.log(1000))
    half = mode_stats(np.arange(1000) % 500)
    assert half["modes"] == 500 and half["kl_uniform"] == pytest.approx(math.log(2))


def test_stacked_protocol_on_npz(capsys, mnist_dir, tmp_path):
    ds = load_data("stacked-mnist", str(mnist_dir), "test", n=200, seed=1)
    p = tmp_path / "s.npz"
    np.savez(p, images=ds.images.numpy(), labels=ds.labels.numpy())
    code, _, err = run_cli(capsys, "eval", p, "--ref", "stacked-mnist", "--protocol", "stacked-mnist")
    assert code == 0, err
    e = json.loads(p.with_suffix(".eval.json").read_text())["scores"]["stacked-mnist"]
    assert e["n"] == 200 and 150 < e["values"]["modes"] <= 200 and e["values"]["conditional_accuracy"] > 0.95


# ------------------------------------------------------------------------ conditional accuracy
def test_conditional_accuracy():
    p = np.eye(10)[[0, 1, 2, 3, 3]]
    out = conditional_accuracy(p, [0, 1, 2, 3, 4])
    assert out["conditional_accuracy"] == pytest.approx(0.8)
    assert out["conditional_accuracy_per_class"][4] == 0.0 and out["conditional_accuracy_per_class"][9] is None
    fake = {"features": np.zeros((5, 2)), "probs": p, "labels": np.array([0, 1, 2, 3, 3]), "name": "x"}
    assert compute(["accuracy"], fake)["conditional_accuracy"] == 1.0      # needs no real features
    with pytest.raises(UsageError, match="labels must be in"):
        conditional_accuracy(p, [0, 1, 2, 3, 10])


def test_conditional_run_reports_accuracy(capsys, tiny_npz, tmp_path):
    run = tmp_path / "cgan"
    assert main(["train", "cgan", "--preset", "tiny", "--data", "npz", "--data-dir", str(tiny_npz),
                 "--max-steps", "2", "--out", str(run), "--threads", "1", "--sample-every", "0"]) == 0
    code, _, err = run_cli(capsys, "eval", run, "--n", 100, "--features", "mnist-cnn",
                           "--json", tmp_path / "c.json")
    assert code == 0, err
    e = json.loads((tmp_path / "c.json").read_text())["scores"]["accuracy"]
    per_class = e["values"]["conditional_accuracy_per_class"]
    assert len(per_class) == 10 and e["n"] == 100     # labels i % 10: 10 samples of each class, so
    assert e["values"]["conditional_accuracy"] == pytest.approx(np.mean(per_class))  # mean = mean


# ------------------------------------------------------------------------------ training health
def test_health_leaves_the_model_alone(tiny_run, small_mnist):
    from genlab.run import load
    model = load(tiny_run).train()
    ref = reference_stats("mnist-5k", "test", str(small_mnist))
    rng = torch.get_rng_state()
    h = health(model, ref, n=500, seed=0)
    assert set(h) >= {"fd", "class_coverage", "class_kl_uniform", "n", "seconds"}
    assert h["fd"] > 0 and 0 <= h["class_coverage"] <= 1 and h["n"] == 500
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert health(model, ref, n=500, seed=0)["fd"] == h["fd"]                # deterministic
