"""--classes (data selection) and anomaly scores (apps/anomaly.py, `genlab anomaly`)."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import genlab
import genlab.classes
from conftest import TINY, one_line_error, run_cli
from genlab.apps import likelihood_corrections as lc
from genlab.apps.anomaly import anomaly_scores, methods_for
from genlab.data import load_data, to_float
from genlab.registry import UsageError


# ------------------------------------------------------------------------------------- --classes
def test_classes_keeps_only_those_labels(tiny_npz):
    y = np.load(tiny_npz)["labels"]
    ds = load_data("npz", str(tiny_npz), classes=[3, 1])
    assert sorted(set(ds.labels.tolist())) == [1, 3]
    assert len(ds) == int(np.isin(y, [1, 3]).sum()) == len(ds.images)
    assert ds.num_classes == 10                               # labels keep their values
    x = np.load(tiny_npz)["images"]
    assert torch.equal(ds.images, torch.from_numpy(x[np.isin(y, [1, 3])]))
    assert len(load_data("npz", str(tiny_npz), classes="1, 3,1")) == len(ds)  # the flag's text form


def test_classes_is_a_run_option_saved_and_kept_on_resume(tiny_npz, tmp_path, monkeypatch):
    seen = []
    real = genlab.classes.select_classes
    monkeypatch.setattr(genlab.data, "select_classes", lambda ds, c: seen.append(c) or real(ds, c))
    run = genlab.train("vae", preset="tiny", max_steps=2, **TINY, data_dir=str(tiny_npz),
                       out=str(tmp_path / "r"), classes=[3, 1])
    assert json.loads((run / "config.json").read_text())["train"]["classes"] == [1, 3]
    genlab.train(resume=True, out=str(run), max_steps=3, quiet=True)
    assert seen == [[1, 3], [1, 3]]                            # the resumed run loads the same digits
    with pytest.raises(UsageError, match="differs from the saved run"):
        genlab.train(resume=True, out=str(run), max_steps=4, classes=[2], quiet=True)
    # one class of tiny_npz is 7 images: the filter really reaches the loop
    with pytest.raises(UsageError, match=r"larger than the data \(7 images\)"):
        genlab.train("vae", preset="tiny", max_steps=1, **TINY, data_dir=str(tiny_npz),
                     out=str(tmp_path / "one"), classes=[1])


@pytest.mark.parametrize("value, match", [
    ("0,x", "labels separated by commas"), ("", "labels separated by commas"),
    ("1.5", "labels separated by commas"), ("-1", "labels >= 0"), ("12", "not a label of npz (its labels: 0..9)"),
])
def test_classes_bad_values_one_line(capsys, tiny_npz, tmp_path, value, match):
    one_line_error(capsys, "train", "vae", "--preset", "tiny", "--data", "npz", "--data-dir", tiny_npz,
                   "--out", tmp_path / "r", f"--classes={value}", match=match)
    assert not (tmp_path / "r").exists()                      # refused before the run folder is made


def test_classes_on_unlabelled_data(capsys, tmp_path):
    p = tmp_path / "u.npz"
    np.savez(p, images=np.zeros((16, 1, 28, 28), np.uint8))
    one_line_error(capsys, "train", "vae", "--preset", "tiny", "--data", "npz", "--data-dir", p,
                   "--out", tmp_path / "r", "--classes", "0", match="needs labelled data")
    with pytest.raises(UsageError, match="labels separated by commas"):
        genlab.train("vae", preset="tiny", data="npz", data_dir=str(p), classes=[True], quiet=True)


# ------------------------------------------------------------------------------------- scores
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A tiny VAE, its background model (perturbed inputs) and a tiny DCGAN trained for 3 steps on
    64 made-up 28x28 images."""
    root = tmp_path_factory.mktemp("anomaly")
    rng = np.random.default_rng(0)
    data = root / "d.npz"
    np.savez(data, images=rng.integers(0, 255, (64, 1, 28, 28), dtype=np.uint8), labels=np.arange(64) % 10)
    runs = {m: genlab.train(m, preset="tiny", max_steps=3, **TINY, data_dir=str(data), out=str(root / m))
            for m in ("vae", "dcgan")}
    runs["vae-bg"] = genlab.train("vae", preset="tiny", max_steps=3, **TINY, data_dir=str(data),
                                  out=str(root / "vae-bg"), perturb=0.2)   # ratio's background model
    return runs, data


@pytest.mark.parametrize("model, method, opts", [
    ("vae", "elbo", {}), ("vae", "iwae", {"k": 5}), ("vae", "recon", {}), ("vae", "ssim", {}),
    ("vae", "complexity", {"samples": 2}), ("vae", "recon-complexity", {}), ("vae", "knn", {"k": 3}),
    ("vae", "gmm", {"components": 2}), ("dcgan", "anogan", {"steps": 3}),
    ("dcgan", "disc", {})])
def test_scores_shape_determinism_and_no_side_effects(tiny_runs, model, method, opts):
    runs, data = tiny_runs
    m = genlab.load(runs[model])
    x = to_float(torch.from_numpy(np.load(data)["images"][:20]))
    m.train()                                                 # the mode a caller left it in
    before = {k: v.clone() for k, v in m.state_dict().items()}
    s1, name = anomaly_scores(m, x, method, torch.Generator().manual_seed(1), batch_size=7, **opts)
    assert name == method and s1.shape == (20,) and s1.dtype == np.float64 and np.isfinite(s1).all()
    assert m.training                                         # restored; scored in eval mode (below)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # BN stats and weights
    s2, _ = anomaly_scores(m, x, method, torch.Generator().manual_seed(1), batch_size=7, **opts)
    assert np.array_equal(s1, s2)                             # same seed (and batching): same scores
    m.eval()
    s3, _ = anomaly_scores(m, x, method, torch.Generator().manual_seed(1), batch_size=7, **opts)
    np.testing.assert_allclose(s1, s3, rtol=1e-5)             # train mode or not: eval-mode scores
    if method not in ("disc", "recon", "ssim", "recon-complexity", "knn", "gmm"):  # the stochastic ones depend on the seed
        s4, _ = anomaly_scores(m, x, method, torch.Generator().manual_seed(2), **opts)
        assert not np.allclose(s1, s4)


def test_default_methods_and_wrong_method(tiny_runs):
    runs, data = tiny_runs
    vae, gan = genlab.load(runs["vae"]), genlab.load(runs["dcgan"])
    assert methods_for(vae) == ["gmm", "elbo", "iwae", "recon", "ssim", "complexity", "recon-complexity", "ratio", "knn"]
    assert methods_for(gan) == ["anogan", "disc"]
    x = to_float(torch.from_numpy(np.load(data)["images"][:4]))
    with pytest.raises(UsageError, match="--method disc needs a GAN"):
        anomaly_scores(vae, x, "disc")
    with pytest.raises(UsageError, match=r"do not fit this model's \(1, 28, 28\)"):
        anomaly_scores(vae, x[:, :, :14, :14])


def test_iwae_bound_is_tighter_than_the_elbo(tiny_runs):
    """Burda et al. 2016, theorem 1: E[L_k] >= E[L_1] = ELBO, so mean -L_k <= mean -ELBO."""
    runs, data = tiny_runs
    m = genlab.load(runs["vae"])
    x = to_float(torch.from_numpy(np.load(data)["images"]))
    elbo, _ = anomaly_scores(m, x, "elbo", torch.Generator().manual_seed(0), samples=50)
    iwae, _ = anomaly_scores(m, x, "iwae", torch.Generator().manual_seed(0), k=50)
    assert iwae.mean() < elbo.mean()
    np.testing.assert_allclose(elbo, -m.elbo(x, torch.Generator().manual_seed(0), 50).double().numpy())


def test_knn_and_gmm_closed_forms(tiny_runs, tmp_path):
    """knn: the mean of the k smallest distances between encoder means (numpy brute force); an image
    that is its own reference scores 0 at k = 1. gmm with one component: -log N(mu(x); m, S + 1e-4 I)
    with m, S the maximum-likelihood mean and covariance of the reference codes (scipy)."""
    from scipy.stats import multivariate_normal
    runs, data = tiny_runs
    m = genlab.load(runs["vae"])
    u = torch.from_numpy(np.load(data)["images"])            # the run's own training images
    x, ref = to_float(u[:10]), u[10:]
    with torch.no_grad():
        zx, zr = (m.encode(t)[0].double().numpy() for t in (x, to_float(ref)))
    d = np.sqrt(((zx[:, None] - zr[None]) ** 2).sum(-1))
    knn, _ = anomaly_scores(m, x, "knn", k=4, reference=ref)
    np.testing.assert_allclose(knn, np.sort(d, 1)[:, :4].mean(1), rtol=1e-5)
    own, _ = anomaly_scores(m, to_float(u), "knn", k=1)      # default reference: the training data
    np.testing.assert_allclose(own, 0, atol=1e-4)
    gmm, _ = anomaly_scores(m, x, "gmm", components=1, reference=ref)
    cov = np.cov(zr.T, bias=True) + 1e-4 * np.eye(zr.shape[1])
    np.testing.assert_allclose(gmm, -multivariate_normal(zr.mean(0), cov).logpdf(zx), rtol=1e-4)
    with pytest.raises(UsageError, match="1 <= k <= 54"):
        anomaly_scores(m, x, "knn", k=55, reference=ref)
    with pytest.raises(UsageError, match=r"reference images of shape \(1, 14, 14\)"):
        anomaly_scores(m, x, "knn", reference=ref[:, :, :14, :14])


def test_knn_without_the_training_data_names_reference(capsys, tiny_runs, tmp_path):
    """A run whose training data moved: knn says to pass --reference, and works when it is passed."""
    runs, data = tiny_runs
    moved = tmp_path / "moved.npz"
    moved.write_bytes(data.read_bytes())
    run = genlab.train("vae", preset="tiny", max_steps=2, **TINY, data_dir=str(moved), out=str(tmp_path / "v"))
    moved.unlink()
    out = tmp_path / "s.npz"
    one_line_error(capsys, "anomaly", run, "--input", data, "--out", out, "--method", "knn",
                   match="pass the training images with --reference FILE.npz")
    one_line_error(capsys, "anomaly", run, "--input", data, "--out", out, "--method", "knn",
                   "--reference", tmp_path / "none.npz", match="none.npz not found")
    code, _, err = run_cli(capsys, "anomaly", run, "--input", data, "--out", out, "--method", "knn",
                           "--reference", data)
    assert code == 0, err
    with np.load(out) as f:
        assert f["scores"].shape == (64,) and str(f["method"]) == "knn" and np.isfinite(f["scores"]).all()
    assert not moved.exists()


# ------------------------------------------------------------------------------------- corrections
def test_png_bits_are_the_png_file_lengths():
    """L(x) = 8 x the bytes of the PNG file Pillow writes for the uint8 image, computed here directly;
    a blank image codes shorter than noise, and RGB images are coded as RGB."""
    import io
    from PIL import Image
    rng = np.random.default_rng(0)
    u = rng.integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    u[0] = 0
    got = lc.png_bits(to_float(torch.from_numpy(u)))
    for img, bits in zip(u, got):
        buf = io.BytesIO()
        Image.fromarray(img[0]).save(buf, format="PNG", optimize=True)
        assert bits == 8 * len(buf.getvalue())
    assert got[0] < got[1] and got.dtype == torch.float64
    rgb = rng.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    assert np.array_equal(lc.hwc_uint8(to_float(torch.from_numpy(rgb))), rgb.transpose(0, 2, 3, 1))
    buf = io.BytesIO()
    Image.fromarray(rgb[1].transpose(1, 2, 0)).save(buf, format="PNG", optimize=True)
    assert lc.png_bits(to_float(torch.from_numpy(rgb)))[1] == 8 * len(buf.getvalue())


def test_ssim_error_closed_form_and_scikit_image(tiny_runs):
    """Constant images a, b (intensities in [0, 1]): SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = 0.01^2
    (the contrast-structure term is C2 / C2 = 1); on a real reconstruction, scikit-image's value."""
    from skimage.metrics import structural_similarity
    from genlab.apps.anomaly import ssim_error

    class Const:
        def reconstruct(self, x):
            return torch.full_like(x, 0.5)
    got = ssim_error(Const(), torch.full((2, 1, 28, 28), -0.25))
    a, b = 0.375, 0.75                                        # -0.25 and 0.5 mapped to [0, 1]
    np.testing.assert_allclose(got, 1 - (2 * a * b + 1e-4) / (a * a + b * b + 1e-4), rtol=1e-9)
    m = genlab.load(tiny_runs[0]["vae"])
    x = to_float(torch.from_numpy(np.load(tiny_runs[1])["images"][:3]))
    s, _ = anomaly_scores(m, x, "ssim")
    r = m.reconstruct(x).double().numpy()
    for i in range(3):
        p, q = (x[i, 0].double().numpy() + 1) / 2, (r[i, 0] + 1) / 2
        assert s[i] == pytest.approx(1 - structural_similarity(p, q, data_range=1.0, gaussian_weights=True,
                                                               sigma=1.5, use_sample_covariance=False))


def test_complexity_and_ratio_closed_forms(tiny_runs):
    """complexity = -ELBO / ln 2 - L(x); recon-complexity = -log p(x | mu(x)) / ln 2 - L(x); ratio =
    -ELBO_model + ELBO_background, each with the same draws of z as computed here."""
    import math
    runs, data = tiny_runs
    m, bg = genlab.load(runs["vae"]), genlab.load(runs["vae-bg"])
    x = to_float(torch.from_numpy(np.load(data)["images"][:12]))
    bits = lc.png_bits(x).numpy()
    s, _ = anomaly_scores(m, x, "complexity", torch.Generator().manual_seed(4), samples=3)
    e = -m.elbo(x, torch.Generator().manual_seed(4), 3).double().numpy()
    np.testing.assert_allclose(s, e / math.log(2) - bits, rtol=1e-6)
    s, _ = anomaly_scores(m, x, "recon-complexity")
    with torch.no_grad():
        r = -m.log_likelihood(x, m.decode(m.encode(x)[0])).double().numpy()
    np.testing.assert_allclose(s, r / math.log(2) - bits, rtol=1e-6)
    s, _ = anomaly_scores(m, x, "ratio", torch.Generator().manual_seed(4), background=bg, samples=3)
    g = torch.Generator().manual_seed(4)                      # the model's draws first, then the background's
    a, b = -m.elbo(x, g, 3).double(), -bg.elbo(x, g, 3).double()
    np.testing.assert_allclose(s, (a - b).numpy(), rtol=1e-6)
    with pytest.raises(UsageError, match="needs --background RUN"):
        anomaly_scores(m, x, "ratio")
    with pytest.raises(UsageError, match="must be a vae"):
        anomaly_scores(m, x, "ratio", background=genlab.load(runs["dcgan"]))


def test_perturb_replaces_that_fraction_of_pixels_by_grey_levels():
    from genlab.models.vae import perturb
    x = to_float(torch.full((50, 1, 28, 28), 255, dtype=torch.uint8))
    assert torch.equal(perturb(x, 0.0, torch.Generator().manual_seed(0)), x)
    y = perturb(x, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(y, perturb(x, 0.2, torch.Generator().manual_seed(0)))       # seeded
    changed = (y != x).float().mean().item()                  # a replaced pixel stays 255 w.p. 1/256
    assert abs(changed - 0.2 * 255 / 256) < 0.01, changed
    levels = (y + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and y.min() >= -1
    z = perturb(x, 1.0, torch.Generator().manual_seed(0))     # every pixel redrawn: all 256 levels occur
    assert len(torch.unique(((z + 1) * 127.5).round())) == 256


# ------------------------------------------------------------------------------------- the CLI
def test_cli_writes_scores(capsys, tiny_runs, tmp_path):
    runs, data = tiny_runs
    out = tmp_path / "s.npz"
    code, stdout, err = run_cli(capsys, "anomaly", runs["vae"], "--input", data, "--out", out, "--seed", "3")
    assert code == 0, err
    assert stdout.strip() == str(out)
    with np.load(out, allow_pickle=False) as f:
        assert f["scores"].shape == (64,) and str(f["method"]) == "gmm"
        assert np.array_equal(f["labels"], np.arange(64) % 10)
        first = f["scores"]
    run_cli(capsys, "anomaly", runs["vae"], "--input", data, "--out", out, "--seed", "3")
    assert np.array_equal(np.load(out)["scores"], first)    # same seed, same scores
    code, _, err = run_cli(capsys, "anomaly", runs["vae"], "--input", data, "--out", out, "--method", "ratio",
                           "--background", runs["vae-bg"])
    assert code == 0, err
    with np.load(out) as f:
        assert f["scores"].shape == (64,) and str(f["method"]) == "ratio" and np.isfinite(f["scores"]).all()
    cfg = json.loads((runs["vae-bg"] / "config.json").read_text())
    assert cfg["model_config"]["perturb"] == 0.2
    grey = tmp_path / "hw.npz"                                # (N, H, W) input, no labels
    np.savez(grey, images=np.load(data)["images"][:5, 0])
    code, _, err = run_cli(capsys, "anomaly", runs["dcgan"], "--input", grey, "--out", out,
                           "--method", "disc")
    assert code == 0, err
    with np.load(out) as f:
        assert f["scores"].shape == (5,) and str(f["method"]) == "disc" and "labels" not in f.files


def test_cli_bad_inputs_one_line(capsys, tiny_runs, tmp_path):
    runs, data = tiny_runs
    run, out = runs["vae"], tmp_path / "s.npz"
    (tmp_path / "text.npz").write_text("not an npz")
    np.savez(tmp_path / "rgb.npz", images=np.zeros((2, 3, 28, 28), np.uint8))
    np.savez(tmp_path / "small.npz", images=np.zeros((2, 1, 14, 14), np.uint8))
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 1, 28, 28), np.float32))
    for argv, match in [
        (["--input", tmp_path / "none.npz", "--out", out], "not found"),
        (["--input", tmp_path / "text.npz", "--out", out], "could not be read as a plain npz"),
        (["--input", tmp_path / "rgb.npz", "--out", out], "(3, 28, 28) do not fit"),
        (["--input", tmp_path / "small.npz", "--out", out], "(1, 14, 14) do not fit"),
        (["--input", tmp_path / "float.npz", "--out", out], "must be non-empty uint8"),
        (["--input", data, "--out", tmp_path / "no" / "s.npz"], "does not exist"),
        (["--input", data, "--out", tmp_path / "s.csv"], "must end in .npz"),
        (["--input", data, "--out", out, "--method", "anogan"], "needs a GAN"),
        (["--input", data, "--out", out, "--method", "nope"], "invalid choice"),
        (["--input", data, "--out", out, "--method", "ratio"], "needs --background RUN"),
        (["--input", data, "--out", out, "--batch-size", "0"], "--batch-size must be >= 1"),
    ]:
        one_line_error(capsys, "anomaly", run, *argv, match=match)
    one_line_error(capsys, "anomaly", tmp_path / "norun", "--input", data, "--out", out, match="no checkpoint")
    assert not out.exists()
    out.mkdir()                                               # the out path is a folder: unwritable
    one_line_error(capsys, "anomaly", run, "--input", data, "--out", out, match="cannot write")


# ------------------------------------------------------------------------------------- real digits
def test_vae_on_digits_scores_foreign_images_higher(mnist_dir, tmp_path):
    """A VAE trained briefly on real digits (mnist-5k, shipped) ranks inverted digits and uniform noise
    above 300 held-out MNIST test digits: AUROC >= 0.99 each."""
    run = genlab.train("vae", data="mnist-5k", max_steps=150, threads=1, precision="fp32", seed=0,
                       sample_every=0, ckpt_every=0, log_every=150, quiet=True, out=str(tmp_path / "v"))
    m = genlab.load(run)
    normal = load_data("mnist", str(mnist_dir), "test").images[:300]
    noise = torch.randint(0, 256, normal.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    s_normal, s_inv, s_noise = (anomaly_scores(m, to_float(u), generator=torch.Generator().manual_seed(0))[0]
                                for u in (normal, 255 - normal, noise))
    for foreign in (s_inv, s_noise):
        auroc = roc_auc_score(np.r_[np.zeros(300), np.ones(300)], np.r_[s_normal, foreign])
        assert auroc >= 0.99, auroc


@pytest.mark.slow
def test_gmm_finds_a_held_out_digit_that_reconstructions_miss(mnist_dir, tmp_path):
    """Protocol (b) on one digit: a VAE trained on the nine other MNIST digits redraws 0s about as well
    as its own digits (ssim AUROC near 0.5: 0.55 on the validation split at 1,500 steps), but its
    encoder puts them where its training codes are sparse: the latent-density score (the default)
    separates them (validation 0.98)."""
    run = genlab.train("vae", data="mnist", data_dir=str(mnist_dir), classes=list(range(1, 10)),
                       max_steps=600, threads=1, precision="fp32", seed=0, sample_every=0, ckpt_every=0,
                       log_every=600, quiet=True, out=str(tmp_path / "v"))
    m = genlab.load(run)
    test = load_data("mnist", str(mnist_dir), "test")
    x, held_out = to_float(test.images[:2000]), test.labels[:2000].numpy() == 0
    s_gmm, name = anomaly_scores(m, x)
    s_ssim, _ = anomaly_scores(m, x, "ssim")
    a_gmm, a_ssim = roc_auc_score(held_out, s_gmm), roc_auc_score(held_out, s_ssim)
    assert name == "gmm" and a_gmm >= 0.9 and a_gmm >= a_ssim + 0.2, (a_gmm, a_ssim)
