"""Restoration (genlab.apps.restore, `genlab inpaint`, `genlab denoise`): the scores against closed
forms and scikit-image, the known pixels kept exactly, shapes/ranges/determinism on tiny runs of a VAE
and of GANs, the commands' outputs and one-line errors; slow: on real MNIST, inpainting a small VAE's
digits raises the shipped classifier's accuracy over the masked input."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

import genlab
from conftest import TINY, make_tiny_npz, one_line_error, run_cli
from genlab.apps import restore
from genlab.data import to_float, to_uint8


# ------------------------------------------------------------------------------------------ scores
def test_region_psnr_closed_form():
    rng = np.random.default_rng(0)
    x = rng.integers(20, 200, (28, 28)).astype(np.uint8)
    region = np.zeros((28, 28), bool)
    region[7:21, 7:21] = True
    x_hat = x.copy()
    x_hat[region] += 5                                    # error 5 on the region only, 0 elsewhere
    assert restore.region_psnr(x, x_hat, region) == pytest.approx(10 * np.log10(255 ** 2 / 25))
    mse_all = 25 * region.mean()                          # the whole image: the error diluted
    assert restore.region_psnr(x, x_hat) == pytest.approx(10 * np.log10(255 ** 2 / mse_all))


def test_region_ssim_is_skimage_map_mean():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (28, 28)).astype(np.uint8)
    x_hat = np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(np.uint8)
    mssim = structural_similarity(x, x_hat, data_range=255)
    inner = np.zeros(x.shape, bool)
    inner[3:-3, 3:-3] = True                              # skimage's mean crops (7 - 1) // 2 = 3 pixels
    assert restore.region_ssim(x, x_hat, inner) == pytest.approx(mssim, abs=1e-12)
    assert restore.region_ssim(x, x) == pytest.approx(1.0)
    # a change inside a box: windows (7x7) that miss it score exactly 1, the box itself less
    y = x.copy()
    y[12:18, 12:18] = 255 - y[12:18, 12:18]
    box, far = np.zeros(x.shape, bool), np.zeros(x.shape, bool)
    box[12:18, 12:18], far[:6, :6] = True, True
    assert restore.region_ssim(x, y, far) == pytest.approx(1.0)
    assert restore.region_ssim(x, y, box) < 0.5


def test_estimate_sigma_of_gaussian_noise():
    g = torch.Generator().manual_seed(0)
    y = 0.25 * torch.randn(8, 1, 64, 64, generator=g)     # flat image + N(0, 0.25^2)
    assert restore.estimate_sigma(y) == pytest.approx(0.25, rel=0.05)


def test_box_mask():
    m = restore.box_mask((1, 28, 28), (7, 5, 14, 10))
    assert m.shape == (1, 1, 28, 28) and m.sum() == 28 * 28 - 140
    assert m[0, 0, 5:15, 7:21].sum() == 0 and m[0, 0, 4, 7] == 1 and m[0, 0, 5, 6] == 1
    for bad in ((20, 0, 10, 5), (-1, 0, 3, 3), (0, 0, 0, 3), (0, 25, 4, 4)):
        with pytest.raises(genlab.registry.UsageError, match="not inside the 28x28 image"):
            restore.box_mask((1, 28, 28), bad)


# ------------------------------------------------------------------------------------------ tiny runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs of a VAE, an unconditional and a conditional GAN on banded noise (see tiny_npz)."""
    d = tmp_path_factory.mktemp("restore")
    make_tiny_npz(d / "tiny.npz")
    out = {name: genlab.train(name, preset="tiny", max_steps=2, **TINY, data_dir=str(d / "tiny.npz"),
                              out=str(d / name), ckpt_every=0)
           for name in ("vae", "dcgan", "cgan")}
    return d, out


FAST = dict(restarts=3, steps=5)


@pytest.mark.parametrize("name", ["vae", "dcgan", "cgan"])
def test_inpaint_keeps_known_pixels_and_is_deterministic(runs, name):
    d, out = runs
    model = genlab.load(out[name])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]    # a GAN's G_ema is frozen by design
    x = to_float(torch.from_numpy(np.load(d / "tiny.npz")["images"][:6]))
    mask = (torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.5).to(torch.uint8)
    labels = torch.arange(6) % 10
    r = restore.inpaint(model, x, mask, torch.Generator().manual_seed(0), labels, **FAST)
    assert r.shape == x.shape and r.dtype == torch.float32 and r.min() >= -1 and r.max() <= 1
    known = mask.bool().expand_as(x)
    assert torch.equal(r[known], x[known])                # known pixels exactly, not approximately
    assert not torch.equal(r[~known], x[~known])          # the missing ones come from G(z*)
    again = restore.inpaint(model, x, mask, torch.Generator().manual_seed(0), labels, **FAST, batch_size=4)
    assert torch.allclose(r, again, atol=1e-5)            # same seed, other chunking: same result
    other = restore.inpaint(model, x, mask, torch.Generator().manual_seed(1), labels, **FAST)
    assert not torch.equal(r, other)
    # the model is untouched: weights, train/eval mode and requires_grad as they were
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("name", ["vae", "dcgan"])
def test_search_fits_an_image_the_model_can_make(runs, name):
    """Target = G(z_true): more steps lower the objective, and the fill gets closer to G(z_true)."""
    _, out = runs
    model = genlab.load(out[name])
    x = model.generate(torch.randn(4, model.z_dim, generator=torch.Generator().manual_seed(5)))
    mask = restore.box_mask(model.shape, (7, 7, 14, 14))
    loss, err = [], []
    for steps in (1, 200):
        g, z = restore.search(model, x, mask, 0.01, torch.Generator().manual_seed(0), restarts=2,
                              steps=steps, lr=0.05)
        loss.append(restore.objective(g, z, x, mask, 0.01).sum().item())
        err.append(((g - x) ** 2 * (1 - mask)).sum().item())
    assert loss[1] < 0.5 * loss[0], loss
    assert err[1] < err[0], err


@pytest.mark.parametrize("name", ["vae", "dcgan"])
def test_denoise_shapes_and_estimated_sigma(runs, name):
    d, out = runs
    model = genlab.load(out[name])
    x = to_float(torch.from_numpy(np.load(d / "tiny.npz")["images"][:4]))
    r = restore.denoise(model, x, None, torch.Generator().manual_seed(0), **FAST)
    assert r.shape == x.shape and r.min() >= -1 and r.max() <= 1
    assert torch.equal(r, restore.denoise(model, x, None, torch.Generator().manual_seed(0), **FAST))


def test_bad_library_inputs(runs):
    _, out = runs
    model = genlab.load(out["vae"])
    g = torch.Generator()
    x = torch.zeros(3, 1, 28, 28)
    UsageError = genlab.registry.UsageError
    with pytest.raises(UsageError, match="mask must be"):
        restore.inpaint(model, x, torch.ones(2, 1, 28, 28), g)
    with pytest.raises(UsageError, match="only 0"):
        restore.inpaint(model, x, torch.full((1, 1, 28, 28), 2), g)
    with pytest.raises(UsageError, match=r"the model makes \(1, 28, 28\)"):
        restore.inpaint(model, torch.zeros(3, 3, 28, 28), torch.ones(1, 1, 28, 28), g)
    with pytest.raises(UsageError, match="--sigma must be > 0"):
        restore.denoise(model, x, 0.0, g)
    cgan = genlab.load(out["cgan"])
    with pytest.raises(UsageError, match="labels must be in 0..9"):
        restore.inpaint(cgan, x, torch.ones(1, 1, 28, 28), g, torch.tensor([0, 1, 10]))
    # all unlabelled (-1, the data convention) is no labels: the search tries the classes
    assert restore.inpaint(cgan, x, torch.ones(1, 1, 28, 28), g, torch.full((3,), -1), **FAST).shape == x.shape


# ------------------------------------------------------------------------------------------ the commands
def test_cli_inpaint_and_denoise_write_npz(runs, capsys, tmp_path):
    d, out = runs
    src = d / "tiny.npz"
    m = np.ones((1, 1, 28, 28), np.uint8)
    m[..., 10:18, 10:18] = 0
    np.savez(tmp_path / "m.npz", mask=m)
    flags = ("--restarts", 2, "--steps", 3, "--threads", 1)
    for argv in (("inpaint", out["cgan"], "--input", src, "--box", "7,7,14,14", "--out", tmp_path / "a.npz"),
                 ("inpaint", out["vae"], "--input", src, "--mask", tmp_path / "m.npz", "--out", tmp_path / "b.npz"),
                 ("denoise", out["dcgan"], "--input", src, "--sigma", 0.3, "--out", tmp_path / "c.npz")):
        code, stdout, err = run_cli(capsys, *argv, *flags)
        assert code == 0, err
        assert stdout.strip() == str(argv[-1])
        with np.load(argv[-1], allow_pickle=False) as f:
            assert f["images"].dtype == np.uint8 and f["images"].shape == (64, 1, 28, 28)
            assert np.array_equal(f["labels"], np.arange(64) % 10)   # the input's labels, passed through
    x = np.load(src)["images"]
    b = np.load(tmp_path / "b.npz")["images"]
    known = np.broadcast_to(m.astype(bool), x.shape)
    assert np.array_equal(b[known], x[known])             # the known pixels survive the uint8 round trip
    run_cli(capsys, "inpaint", out["cgan"], "--input", src, "--box", "7,7,14,14", "--out", tmp_path / "a2.npz", *flags)
    assert np.array_equal(np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "a2.npz")["images"])


def test_cli_bad_inputs(runs, capsys, tmp_path):
    d, out = runs
    src, vae = d / "tiny.npz", out["vae"]
    np.savez(tmp_path / "big.npz", images=np.zeros((2, 1, 32, 32), np.uint8))
    np.savez(tmp_path / "rgb.npz", images=np.zeros((2, 3, 28, 28), np.uint8))
    np.savez(tmp_path / "m.npz", mask=np.ones((2, 1, 28, 28), np.uint8))
    np.savez(tmp_path / "m3.npz", mask=np.full((1, 1, 28, 28), 3, np.uint8))
    np.savez(tmp_path / "nomask.npz", images=np.ones((1, 1, 28, 28), np.uint8))
    o = ("--out", tmp_path / "o.npz")
    for argv, match in (
            (("inpaint", vae, "--input", src, "--box", "20,20,10,10", *o), "not inside the 28x28 image"),
            (("inpaint", vae, "--input", src, "--box", "1,2,3", *o), "--box must be x,y,w,h"),
            (("inpaint", vae, "--input", src, "--mask", tmp_path / "m.npz", *o), "the mask must be (N or 1, 1, H, W)"),
            (("inpaint", vae, "--input", src, "--mask", tmp_path / "m3.npz", *o), "only 0 (missing) and 1"),
            (("inpaint", vae, "--input", src, "--mask", tmp_path / "nomask.npz", *o), "has no 'mask' array"),
            (("inpaint", vae, "--input", src, "--mask", tmp_path / "none.npz", *o), "is not a file"),
            (("inpaint", vae, "--input", src, *o), "one of the arguments --box --mask is required"),
            (("inpaint", vae, "--input", tmp_path / "big.npz", "--box", "0,0,4,4", *o), "the model makes (1, 28, 28)"),
            (("denoise", vae, "--input", tmp_path / "rgb.npz", *o), "the model makes (1, 28, 28)"),
            (("denoise", vae, "--input", tmp_path / "none.npz", *o), "is not a file"),
            (("denoise", vae, "--input", src, "--sigma", "-1", *o), "--sigma must be > 0"),
            (("denoise", vae, "--input", src, "--out", tmp_path / "o.png"), "--out must end in .npz"),
            (("denoise", vae, "--input", src, "--restarts", "0", *o), "--restarts must be >= 1"),
            (("denoise", tmp_path / "norun", "--input", src, *o), "no checkpoint in")):
        one_line_error(capsys, *argv, match=match)
    assert not (tmp_path / "o.npz").exists()


# ------------------------------------------------------------------------------------------ real MNIST
@pytest.mark.slow
def test_inpainting_mnist_raises_classifier_accuracy(mnist_dir, tmp_path):
    """A small VAE trained here on MNIST (1,500 steps; the test takes ~2.5 min on 1 loaded thread): filling a 14x14 centre box from its
    latent space lets the shipped classifier recognise far more digits than the masked input."""
    from genlab.data import load_data
    from genlab.metrics.classifier import evaluate, load_classifier
    run = genlab.train("vae", data="mnist", data_dir=str(mnist_dir), out=str(tmp_path / "vae"), max_steps=1500,
                       seed=0, precision="fp32", threads=1, sample_every=0, quiet=True)
    model = genlab.load(run)
    test = load_data("mnist", str(mnist_dir), split="test")
    x, y = to_float(test.images[:100]), test.labels[:100]
    mask = restore.box_mask(model.shape, (7, 7, 14, 14))
    masked = mask * x + (1 - mask) * -1.0                 # the box blanked to background
    r = restore.inpaint(model, x, mask, torch.Generator().manual_seed(0), restarts=3, steps=100)
    net = load_classifier("mnist")
    acc = {k: evaluate(net, to_uint8(v), y) for k, v in (("clean", x), ("masked", masked), ("restored", r))}
    assert acc["clean"] > 0.97
    # measured (loaded machine, 139 s): masked 0.23 -> restored 0.73
    assert acc["restored"] > acc["masked"] + 0.3, acc
