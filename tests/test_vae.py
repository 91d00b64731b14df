"""The VAE's pieces against closed forms, its ELBO on tiny data, and the Olivetti faces split."""
import math

import numpy as np
import pytest
import torch

from genlab.data import load_data, to_float
from genlab.models import MODELS
from genlab.models.vae import discretized_gaussian_log_likelihood, kl_normal
from genlab.registry import UsageError

from conftest import SHARED_DATA


def build(shape=(1, 28, 28), **kw):
    torch.manual_seed(0)
    cfg = MODELS["vae"](**{**dict(nf=4, max_ch=8, z_dim=4), **kw})
    return cfg.build(shape, 0)


class Batches:
    def __init__(self, x):
        self.x = x

    def __next__(self):
        return self.x, torch.full((len(self.x),), -1)


def test_kl_closed_form():
    assert torch.equal(kl_normal(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))
    # 1-D by hand: mu = 1, s^2 = e  ->  1/2 (1 + e - 1 - 1) = (e - 1) / 2
    kl = kl_normal(torch.tensor([[1.0]]), torch.tensor([[1.0]]))
    assert kl.item() == pytest.approx((math.e - 1) / 2, rel=1e-6)
    # sums over dimensions; agrees with torch.distributions
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl_normal(mu, logvar), ref)


def test_discretized_gaussian_is_a_distribution_over_grey_levels():
    levels = to_float(torch.arange(256, dtype=torch.uint8)).view(256, 1, 1, 1)
    for mean, sigma in ((0.3, 0.05), (-0.99, 0.002), (1.7, 0.4), (0.0, 3.0)):
        logp = discretized_gaussian_log_likelihood(levels, torch.tensor(mean),
                                                   torch.tensor(math.log(sigma)))
        assert torch.isfinite(logp).all()
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    # far in a tail it stays finite (log_ndtr), where Phi differences would underflow
    far = discretized_gaussian_log_likelihood(levels[128:129], torch.tensor(-0.9), torch.tensor(-6.0))
    assert torch.isfinite(far).all() and far.item() < -1e4


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_elbo_finite_and_improves(likelihood, tiny_npz):
    x = to_float(load_data("npz", str(tiny_npz)).images[:16])
    torch.set_num_threads(1)
    net = build(likelihood=likelihood)
    opt = net.configure_optimizers()
    g = torch.Generator().manual_seed(0)
    before = net.elbo(x, torch.Generator().manual_seed(1), samples=4).mean()
    for _ in range(30):
        stats = net.train_step(Batches(x), opt, g)
        assert set(stats) == {"loss", "recon", "kl"} and all(torch.isfinite(v) for v in stats.values())
    after = net.elbo(x, torch.Generator().manual_seed(1), samples=4).mean()
    assert torch.isfinite(before) and after > before + 10       # nats per image
    # beta = 1: the logged loss is -ELBO = recon + KL
    assert stats["loss"].item() == pytest.approx((stats["recon"] + stats["kl"]).item(), rel=1e-5)


def test_reparameterisation_uses_the_generator(tiny_npz):
    x = to_float(load_data("npz", str(tiny_npz)).images[:4])
    net = build()
    e = [net.elbo(x, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(e[0], e[1]) and not torch.equal(e[0], e[2])


def test_beta_scales_the_kl_term(tiny_npz):
    x = to_float(load_data("npz", str(tiny_npz)).images[:8])
    stats = {}
    for beta in (1.0, 4.0):
        net = build(beta=beta)          # same seed: same weights, same noise
        stats[beta] = net.train_step(Batches(x), net.configure_optimizers(),
                                     torch.Generator().manual_seed(0))
    s1, s4 = stats[1.0], stats[4.0]
    assert torch.equal(s1["kl"], s4["kl"]) and torch.equal(s1["recon"], s4["recon"])
    assert s4["loss"].item() == pytest.approx((s4["recon"] + 4 * s4["kl"]).item(), rel=1e-5)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 64, 64), (1, 128, 128)])
def test_shapes_ranges_and_likelihood_rule(shape):
    net = build(shape)
    assert net.likelihood == ("bernoulli" if shape == (1, 28, 28) else "gaussian")
    assert net.config.likelihood == net.likelihood                 # recorded resolved
    x = torch.rand(3, *shape) * 2 - 1
    mu, logvar = net.encode(x)
    assert mu.shape == logvar.shape == (3, 4) and net.decode(mu).shape == x.shape
    for y in (net.reconstruct(x), net.sample(3, generator=torch.Generator().manual_seed(0))):
        assert y.shape == x.shape and y.dtype == torch.float32 and y.min() >= -1 and y.max() <= 1
    assert net.training                                            # mode restored


def test_bf16_autocast_keeps_losses_fp32(tiny_npz):
    x = to_float(load_data("npz", str(tiny_npz)).images[:8])
    net = build()
    net.autocast_dtype = torch.bfloat16
    stats = net.train_step(Batches(x), net.configure_optimizers(), torch.Generator().manual_seed(0))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in stats.values())
    assert net.encode(x)[0].dtype == torch.float32


def test_non_square_images_are_refused():
    with pytest.raises(UsageError, match="square"):
        MODELS["vae"]().build((1, 28, 32))


@pytest.fixture
def faces_dir():
    d = SHARED_DATA / "faces"
    if not (d / "olivetti_faces_uint8.npz").is_file():
        pytest.skip("../shared/data/faces is not available")
    return d


def test_olivetti_split(faces_dir):
    train, test = (load_data("olivetti", str(faces_dir), s) for s in ("train", "test"))
    assert train.images.shape == (350, 1, 64, 64) and test.images.shape == (50, 1, 64, 64)
    assert set(test.labels.tolist()) == {35, 36, 37, 38, 39}
    assert set(train.labels.tolist()) == set(range(35))           # disjoint people
    assert torch.bincount(train.labels).tolist() == [10] * 35
    flat = lambda d: {bytes(im.numpy().tobytes()) for im in d.images}
    assert not flat(train) & flat(test)                            # no image in both
    same = load_data("olivetti", str(faces_dir / "olivetti_faces_uint8.npz"), "test", image_size=128)
    assert same.images.shape == (50, 1, 128, 128)                  # the file itself; upsampled


def test_olivetti_missing_file(tmp_path):
    with pytest.raises(UsageError, match="olivetti_faces_uint8.npz"):
        load_data("olivetti", str(tmp_path))
