"""genlab.metrics: closed forms, reference implementations (pytorch-fid, torch-fidelity) and the shipped
domain classifiers on real images. Fast: small synthetic features except the shipped-weights checks."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.metrics import (METRICS, class_balance, classifier_score, compute, extract, frechet_distance,
                            frechet_distance_from_stats, kernel_distance, memorisation, precision_recall)
from genlab.io import sha256_file
from genlab.metrics.classifier import ASSETS, PINNED, WeightsError, load_classifier
from genlab.metrics.features import to_grey28
from genlab.registry import UsageError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def gaussian(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.5 + shift


# ------------------------------------------------------------------------------- Frechet distance
def test_fd_identical_arrays_and_gaussians_is_zero():
    a = gaussian(500, 16, 0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    mu, s = np.arange(4.0), np.diag([1.0, 2.0, 3.0, 4.0]) + 0.1
    assert frechet_distance_from_stats(mu, s, mu, s) == pytest.approx(0.0, abs=1e-10)


def test_fd_equal_covariances_is_squared_mean_distance():
    a = gaussian(400, 8, 1)
    shift = np.linspace(-1, 1, 8)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_fd_one_dimensional_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance_from_stats([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pytorch-fid passes sqrtm(disp=)
def test_fd_accepts_torch_and_matches_pytorch_fid():
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    a, b = gaussian(600, 32, 2), np.maximum(gaussian(700, 32, 3, shift=0.3), 0)
    ref = fid_score.calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False),
                                               b.mean(0), np.cov(b, rowvar=False))
    ours = frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b))
    assert ours == pytest.approx(ref, rel=1e-6)  # float32 input: a's stats differ at ~1e-7


def test_fd_singular_covariance_is_finite():
    a = gaussian(300, 10, 4)
    a[:, :3] = 0.0  # dead ReLU units: rank-deficient covariance
    b = gaussian(300, 10, 5)
    assert math.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0


# -------------------------------------------------------------------------------------------- KID
def test_kid_matches_torch_fidelity():
    kid_ref = pytest.importorskip("torch_fidelity.metric_kid")
    a, b = gaussian(300, 16, 6), gaussian(250, 16, 7, shift=0.2)
    ref = kid_ref.kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=20,
                                         kid_subset_size=200, verbose=False)
    ours = kernel_distance(a, b, subsets=20, subset_size=200)
    assert ours["kid_mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9)
    assert ours["kid_std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-9)


def test_kid_same_distribution_near_zero_and_shift_positive():
    w = np.random.default_rng(0).normal(size=(8, 8)) * 0.5
    a, b = (np.random.default_rng(s).normal(size=(400, 8)) @ w for s in (1, 2))  # same distribution
    same = kernel_distance(a, b, subsets=10, subset_size=200)
    far = kernel_distance(a, b + 0.5, subsets=10, subset_size=200)
    assert abs(same["kid_mean"]) < 0.1 * far["kid_mean"] and far["kid_subset_size"] == 200
    assert kernel_distance(a, b, subset_size=1000)["kid_subset_size"] == 400  # capped at the set size


# ---------------------------------------------------------------------------- precision / recall
def test_precision_recall_matches_torch_fidelity():
    prc = pytest.importorskip("torch_fidelity.metric_prc")
    real, fake = gaussian(300, 8, 9), gaussian(250, 8, 10, shift=0.3)
    ref = prc.prc_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), verbose=False)
    ours = precision_recall(real, fake)
    assert ours["precision"] == pytest.approx(ref["precision"], abs=1e-6)
    assert ours["recall"] == pytest.approx(ref["recall"], abs=1e-6)


def test_precision_recall_limits():
    real = gaussian(200, 4, 11)
    same = precision_recall(real, real)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = precision_recall(real, real + 100.0)
    assert far["precision"] == far["recall"] == far["density"] == far["coverage"] == 0.0
    collapsed = precision_recall(real, np.repeat(real[:1], 50, axis=0))  # one mode: precise, no recall
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.05


# ------------------------------------------------------------------------------ class statistics
def one_hot(labels, k=10):
    return np.eye(k)[labels]


def test_classifier_score_bounds():
    balanced = one_hot(np.arange(1000) % 10)
    assert classifier_score(balanced, splits=1)["classifier_score"] == pytest.approx(10.0)
    assert 9.0 < classifier_score(balanced)["classifier_score"] <= 10.0  # 10 shuffled splits
    assert classifier_score(one_hot(np.full(500, 3)))["classifier_score"] == pytest.approx(1.0)
    assert classifier_score(np.full((500, 10), 0.1))["classifier_score"] == pytest.approx(1.0)


def test_class_balance_uniform_vs_collapsed():
    even = class_balance(one_hot(np.arange(1000) % 10))
    assert even["class_kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert even["class_coverage"] == 1.0 and even["confident_fraction"] == 1.0
    assert even["class_histogram"] == [0.1] * 10
    one = class_balance(one_hot(np.full(1000, 7)))
    assert one["class_kl_uniform"] == pytest.approx(math.log(10))
    assert one["class_coverage"] == 0.1
    unsure = class_balance(np.full((10, 10), 0.1))
    assert unsure["confident_fraction"] == 0.0


# --------------------------------------------------------------------------------- memorisation
def test_memorisation_catches_copies():
    train, held, fresh = gaussian(1000, 16, 12), gaussian(300, 16, 13), gaussian(300, 16, 14)
    rng = np.random.default_rng(0)
    honest = memorisation(fresh, held, train)
    copies = memorisation(train[rng.choice(1000, 300)] + 1e-9, held, train)
    assert 0.8 < honest["nn_median_ratio"] < 1.25 and honest["closer_than_heldout_p01"] < 0.05
    assert copies["nn_median_ratio"] < 0.01 and copies["closer_than_heldout_p01"] == 1.0
    assert copies["exact_copy_fraction"] == 1.0 and honest["exact_copy_fraction"] == 0.0


# ------------------------------------------------------------------------------------ registry
def test_compute_is_json_and_registry_documented():
    rng = np.random.default_rng(15)
    p = rng.dirichlet(np.ones(10) * 0.1, size=60)
    fake = {"features": gaussian(60, 8, 16), "probs": p, "name": "x", "weights_sha256": "0"}
    real = {"features": gaussian(80, 8, 17), "probs": p, "name": "x", "weights_sha256": "0"}
    train = {"features": gaussian(90, 8, 18), "name": "x"}
    out = compute(list(METRICS), fake, real, train=train)
    json.dumps(out, allow_nan=False)
    for key in ("fd", "kid_mean", "precision", "recall", "classifier_score", "class_kl_uniform",
                "nn_median_ratio"):
        assert key in out
    assert all(fn.__doc__ and "\n" not in fn.__doc__.strip() for fn in METRICS.values())
    assert compute("fd,cs", fake, real)["fd"] == out["fd"]
    assert set(compute("all", fake, real)) >= {"fd", "kid_mean", "precision", "classifier_score"}
    with pytest.raises(UsageError, match="known: "):
        compute(["nope"], fake, real)
    with pytest.raises(UsageError, match="training-set"):
        compute(["memorisation"], fake, real)
    with pytest.raises(UsageError, match="different extractors"):
        compute(["fd"], fake, dict(real, name="y"))


def test_input_rule_luma_and_resize():
    rgb = torch.zeros(2, 3, 56, 56, dtype=torch.uint8)
    rgb[:, 0] = 100
    rgb[:, 1] = 200
    g = to_grey28(rgb.numpy())
    assert g.shape == (2, 1, 28, 28) and g.dtype == torch.uint8
    assert int(g[0, 0, 5, 5]) == round(0.299 * 100 + 0.587 * 200)
    with pytest.raises(UsageError, match="uint8"):
        to_grey28(torch.zeros(2, 1, 28, 28))


# ------------------------------------------------------------------------- shipped classifiers
def test_shipped_weights_match_pins_and_json():
    for name, (fname, sha) in PINNED.items():
        path = ASSETS / fname
        assert sha256_file(path) == sha
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["sha256"] == sha and meta["data"] == name
        assert path.stat().st_size < 600_000
        assert meta["test_accuracy"] >= {"mnist": 0.993, "fashion-mnist": 0.92}[name]


def test_tampered_weights_are_refused(tmp_path):
    fname, sha = PINNED["mnist"]
    raw = bytearray((ASSETS / fname).read_bytes())
    raw[-10] ^= 0xFF  # one weight byte
    bad = tmp_path / "classifier.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="sha256 .* expected .*refusing"):
        load_classifier(str(bad), sha256=sha)
    with pytest.raises(WeightsError, match="expected sha256"):
        load_classifier(str(bad))
    net = load_classifier(str(ASSETS / fname), sha256=sha)  # the intact file loads
    assert not net.training


@pytest.mark.parametrize("data,extractor,floor", [("mnist", "mnist-cnn", 0.99),
                                                  ("fashion-mnist", "fashion-cnn", 0.9)])
def test_shipped_classifier_on_real_test_images(data, extractor, floor):
    if not (DATA / data).is_dir():
        pytest.skip(f"{DATA / data} not present")
    from genlab.data import load_data
    ds = load_data(data, data_dir=str(DATA / data), split="test")
    idx = torch.arange(0, 10000, 25)  # 400 images spread over the split
    out = extract(extractor, ds.images[idx])
    assert out["features"].shape == (400, 128) and out["features"].dtype == np.float64
    assert out["probs"].shape == (400, 10) and np.allclose(out["probs"].sum(1), 1.0)
    assert out["weights_sha256"] == PINNED[data][1] and out["name"] == extractor
    acc = float((out["probs"].argmax(1) == ds.labels[idx].numpy()).mean())
    assert acc >= floor
    # real test images against themselves: the metrics' sane end
    half = {k: (v[:200] if isinstance(v, np.ndarray) else v) for k, v in out.items()}
    rest = {k: (v[200:] if isinstance(v, np.ndarray) else v) for k, v in out.items()}
    res = compute(["classes", "cs"], half)
    assert res["class_coverage"] == 1.0 and res["class_kl_uniform"] < 0.1
    labels = ds.labels[idx].numpy()
    one_class = out["features"][labels == labels[0]]  # a fully collapsed "generator"
    assert frechet_distance(half["features"], rest["features"]) < \
        0.2 * frechet_distance(half["features"], one_class)
