"""Latent walks (apps/interpolate.py, `genlab interpolate`) and latent maps (apps/embed.py, `genlab
embed`): slerp/lerp against their closed forms, PCA against the SVD, the k-NN measure on known
clusters, each walk and map on tiny runs (VAE, DCGAN, conditional GAN), and bad input as one line +
exit 2."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, make_tiny_npz, one_line_error, run_cli
from genlab.apps import embed as em
from genlab.apps import interpolate as ip
from genlab.models import Autoencoder, Discriminator, Generator, SoftLabels
from genlab.registry import UsageError


# --------------------------------------------------------------------------- slerp / lerp closed forms
def _orthonormal_pair(d=16, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q[:, 0], q[:, 1]


def test_slerp_of_orthogonal_unit_vectors_is_cos_sin_and_keeps_the_norm():
    u, v = _orthonormal_pair()
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    z = ip.slerp(u, v, t)                                                  # (11, 16)
    want = torch.cos(t * math.pi / 2)[:, None] * u + torch.sin(t * math.pi / 2)[:, None] * v
    torch.testing.assert_close(z, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(11, dtype=torch.float64), atol=1e-12, rtol=0)
    # lerp's midpoint of the same pair has norm 1/sqrt(2): the norm dip slerp avoids (White 2016)
    m = ip.lerp(u, v, torch.tensor([0.5], dtype=torch.float64))[0]
    assert m.norm().item() == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    torch.testing.assert_close(m, (u + v) / 2)


def test_slerp_angle_is_linear_in_t_and_ends_at_the_endpoints():
    g = torch.Generator().manual_seed(1)
    unit = lambda a: a / a.norm(dim=-1, keepdim=True)
    u0, u1 = unit(torch.randn(3, 8, generator=g, dtype=torch.float64)), unit(torch.randn(3, 8, generator=g, dtype=torch.float64))
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    u = ip.slerp(u0, u1, t)                                                 # (9, 3, 8)
    assert u.shape == (9, 3, 8)
    torch.testing.assert_close(u[0], u0), torch.testing.assert_close(u[-1], u1)
    w = torch.acos((u0 * u1).sum(-1))                                      # (3,) the angle u0 -> u1
    angle = torch.acos((unit(u) * u0).sum(-1).clamp(-1, 1))                # (9, 3) angle u(t) -> u0
    torch.testing.assert_close(angle, t[:, None] * w, atol=1e-6, rtol=0)   # constant angular speed
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(9, 3, dtype=torch.float64))  # on the sphere
    # unequal norms: the closed-form coefficients sin((1-t)w)/sin(w), sin(tw)/sin(w)
    z0, z1 = 2 * u0, 5 * u1
    z = ip.slerp(z0, z1, t)
    s = torch.sin((1 - t)[:, None, None] * w[:, None]) / torch.sin(w[:, None])
    e = torch.sin(t[:, None, None] * w[:, None]) / torch.sin(w[:, None])
    torch.testing.assert_close(z, s * z0 + e * z1)


def test_lerp_closed_form_and_slerp_of_parallel_vectors_falls_back_to_it():
    z0, z1 = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    t = torch.tensor([0.0, 0.25, 1.0])
    torch.testing.assert_close(ip.lerp(z0, z1, t), torch.stack([z0, 0.75 * z0 + 0.25 * z1, z1]))
    torch.testing.assert_close(ip.slerp(z0, 2 * z0, t), ip.lerp(z0, 2 * z0, t))   # sin(w) = 0
    assert torch.isfinite(ip.slerp(z0, -z0, t)).all()


# --------------------------------------------------------------------------- tiny runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny 2-step runs on 64 labelled band images: vae (z_dim 4), vae with z_dim 2, dcgan, cgan."""
    import genlab
    d = tmp_path_factory.mktemp("walk")
    make_tiny_npz(d / "d.npz")
    opts = {**TINY, "data_dir": str(d / "d.npz"), "max_steps": 2, "threads": 1}
    out = {m: genlab.train(m, preset="tiny", out=str(d / m), **opts) for m in ("vae", "dcgan", "cgan")}
    out["vae2"] = genlab.train("vae", preset="tiny", z_dim=2, out=str(d / "vae2"), **opts)
    out["npz"] = d / "d.npz"
    return out


def _load(runs, name):
    import genlab
    return genlab.load(runs[name])


def test_protocols_of_the_models(runs):
    vae, dcgan, cgan = (_load(runs, m) for m in ("vae", "dcgan", "cgan"))
    assert isinstance(vae, Autoencoder) and not isinstance(vae, Discriminator)
    assert isinstance(dcgan, Discriminator) and isinstance(cgan, SoftLabels) and cgan.num_classes == 10
    assert not isinstance(dcgan, Autoencoder)


def test_random_walk_shapes_range_determinism_and_paths(runs):
    m = _load(runs, "dcgan")
    a = ip.walk_random(m, 6, 3, "slerp", torch.Generator().manual_seed(5))
    b = ip.walk_random(m, 6, 3, "slerp", torch.Generator().manual_seed(5))
    c = ip.walk_random(m, 6, 3, "lerp", torch.Generator().manual_seed(5))
    assert a.frames.shape == (6, 3, 1, 28, 28) and a.kind == "random"
    assert a.frames.min() >= -1 and a.frames.max() <= 1
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)
    torch.testing.assert_close(a.frames[[0, -1]], c.frames[[0, -1]])      # same endpoints,
    assert not torch.equal(a.frames[1:-1], c.frames[1:-1])               # different paths
    g = torch.Generator().manual_seed(5)
    z0, z1 = torch.randn(3, m.z_dim, generator=g), torch.randn(3, m.z_dim, generator=g)
    torch.testing.assert_close(a.frames[0], m.generate(z0)), torch.testing.assert_close(a.frames[-1], m.generate(z1))


def test_class_walk_moves_the_label_embedding_from_a_to_b(runs):
    m = _load(runs, "cgan")
    w = ip.walk_classes(m, 2, 7, 5, 2, torch.Generator().manual_seed(0))
    assert w.kind == "embedding" and w.frames.shape == (5, 2, 1, 28, 28)
    z = torch.randn(2, m.z_dim, generator=torch.Generator().manual_seed(0))
    # the soft one-hot endpoints are the hard labels; the middle is neither
    torch.testing.assert_close(w.frames[0], m.generate(z, torch.tensor([2, 2])), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.frames[-1], m.generate(z, torch.tensor([7, 7])), atol=1e-5, rtol=0)
    assert not torch.allclose(w.frames[2], w.frames[0]) and not torch.allclose(w.frames[2], w.frames[-1])
    for bad in (torch.full((2, 10), 0.2), -torch.eye(10)[:2], torch.eye(10)[:2, :9]):
        with pytest.raises(UsageError, match="soft labels must be"):
            m.generate_soft(z, bad)
    with pytest.raises(UsageError, match="need a conditional model"):
        _load(runs, "dcgan").generate_soft(z, torch.eye(10)[:2])


class HardLabelsOnly:
    """A conditional Generator without soft labels: the walk must fall back to the class sweep."""

    def __init__(self, m):
        self.m, self.num_classes, self.z_dim = m, m.num_classes, m.z_dim

    def sample(self, n, labels=None, generator=None):
        return self.m.sample(n, labels, generator)

    def generate(self, z, y=None):
        return self.m.generate(z, y)


def test_class_walk_without_soft_labels_is_the_whole_label_sweep(runs):
    cg = _load(runs, "cgan")
    m = HardLabelsOnly(cg)
    assert isinstance(m, Generator) and not isinstance(m, SoftLabels)
    w = ip.walk_classes(m, 5, 2, 16, 1, torch.Generator().manual_seed(0))
    assert w.kind == "sweep" and w.labels.tolist() == [5, 4, 3, 2] and w.frames.shape == (4, 1, 1, 28, 28)
    z = torch.randn(1, cg.z_dim, generator=torch.Generator().manual_seed(0))
    for i, c in enumerate([5, 4, 3, 2]):
        torch.testing.assert_close(w.frames[i], cg.generate(z, torch.tensor([c])))


def test_walk_between_two_images_starts_and_ends_at_their_reconstructions(runs):
    from genlab.data import to_float
    m = _load(runs, "vae")
    x = to_float(torch.from_numpy(np.load(runs["npz"])["images"][[3, 8]]))
    w = ip.walk_between(m, x[:1], x[1:], 7, "lerp")
    assert w.kind == "between" and w.frames.shape == (7, 1, 1, 28, 28)
    torch.testing.assert_close(w.frames[0], m.reconstruct(x[:1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.frames[-1], m.reconstruct(x[1:]), atol=1e-5, rtol=0)


def test_walk_library_refuses_bad_input(runs):
    dcgan, vae = _load(runs, "dcgan"), _load(runs, "vae")
    with pytest.raises(UsageError, match="need a conditional model"):
        ip.walk_classes(dcgan, 0, 1)
    with pytest.raises(UsageError, match="--to-class must be in 0..9"):
        ip.walk_classes(_load(runs, "cgan"), 0, 10)
    with pytest.raises(UsageError, match="needs an autoencoder"):
        ip.walk_between(dcgan, torch.zeros(1, 1, 28, 28), torch.zeros(1, 1, 28, 28))
    with pytest.raises(UsageError, match="--steps must be in 2..128"):
        ip.walk_random(vae, 1)
    with pytest.raises(UsageError, match="unknown latent path"):
        ip.walk_random(vae, 4, 1, "cubic")


# --------------------------------------------------------------------------- genlab interpolate
def _gif_frames(path):
    with Image.open(path) as im:
        return im.n_frames, im.info.get("loop"), [np.asarray(f.convert("L")) for f in _frames(im)]


def _frames(im):
    for i in range(im.n_frames):
        im.seek(i)
        yield im.copy()


def test_interpolate_gif_and_png(capsys, runs, tmp_path):
    code, out, err = run_cli(capsys, "interpolate", runs["vae"], "--steps", 9, "--rows", 3, "--seed", 4,
                             "--out", tmp_path / "w.gif", "--threads", 1)
    assert code == 0, err
    n, loop, frames = _gif_frames(tmp_path / "w.gif")
    walk = ip.walk_random(_load(runs, "vae"), 9, 3, "slerp", torch.Generator().manual_seed(4))
    u8 = [np.asarray(ip.grid_image(walk.frames[s], 3)) for s in range(9)]
    distinct = 1 + sum(not np.array_equal(a, b) for a, b in zip(u8, u8[1:]))  # Pillow merges repeats
    assert n == distinct and loop == 0 and frames[0].shape == (28 + 4, 3 * 30 + 2)
    np.testing.assert_array_equal(frames[0], u8[0])
    code, out, err = run_cli(capsys, "interpolate", runs["cgan"], "--from-class", 1, "--to-class", 8,
                             "--steps", 10, "--rows", 4, "--lerp", "--out", tmp_path / "c.png")
    assert code == 0, err
    with Image.open(tmp_path / "c.png") as im:                           # rows = walks, columns = steps
        assert im.size == (10 * 30 + 2, 4 * 30 + 2)
    code, out, err = run_cli(capsys, "interpolate", runs["vae"], "--between", runs["npz"], "--index", "2,9",
                             "--out", tmp_path / "b.png")
    assert code == 0 and out.strip() == str(tmp_path / "b.png"), err
    with Image.open(tmp_path / "b.png") as im:
        assert im.size == (16 * 30 + 2, 32)


def test_interpolate_is_deterministic_with_a_seed(capsys, runs, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert run_cli(capsys, "interpolate", runs["vae"], "--rows", 2, "--steps", 4, "--seed", seed,
                       "--out", tmp_path / f"{name}.png")[0] == 0
    a, b, c = ((tmp_path / f"{n}.png").read_bytes() for n in "abc")
    assert a == b and a != c


@pytest.mark.parametrize("run, args, match", [
    ("dcgan", ["--from-class", "1", "--to-class", "2"], "need a conditional model"),
    ("dcgan", ["--between", "{npz}"], "needs an autoencoder run"),
    ("cgan", ["--from-class", "1"], "go together"),
    ("cgan", ["--from-class", "3", "--to-class", "3"], "two different classes"),
    ("cgan", ["--from-class", "0", "--to-class", "12"], "--to-class must be in 0..9"),
    ("vae", ["--between", "{npz}", "--index", "0,64"], "--index 64 is out of range"),
    ("vae", ["--between", "{npz}", "--index", "a"], "--index must be two image numbers"),
    ("vae", ["--between", "{t}/none.npz"], "no such file"),
    ("vae", ["--index", "0,1"], "give --between too"),
    ("vae", ["--between", "{npz}", "--rows", "2"], "drop --rows"),
    ("vae", ["--steps", "1000"], "--steps must be in 2..128"),
    ("vae", ["--rows", "0"], "--rows must be in 1..32"),
    ("vae", ["--slerp", "--lerp"], "not allowed with argument"),
])
def test_interpolate_bad_input_is_one_line_exit_2(capsys, runs, tmp_path, run, args, match):
    args = [a.replace("{npz}", str(runs["npz"])).replace("{t}", str(tmp_path)) for a in args]
    one_line_error(capsys, "interpolate", runs[run], *args, "--out", tmp_path / "w.gif", match=match)
    assert not (tmp_path / "w.gif").exists()
    one_line_error(capsys, "interpolate", runs["vae"], "--out", tmp_path / "w.jpg", match="must end in .gif")


# --------------------------------------------------------------------------- latent maps
def test_pca_projection_matches_the_svd_and_scikit_learn():
    from sklearn.decomposition import PCA
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 6)) * [5, 3, 1, 0.5, 0.2, 0.1] + 7).astype(np.float64)
    coords, ev = em.project(x, "pca")
    xc = x - x.mean(0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)                   # closed form: top-2 PCs
    want = xc @ vt[:2].T
    signs = np.sign((coords * want).sum(0))                               # a PC's sign is arbitrary
    np.testing.assert_allclose(coords * signs, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ev, s[:2] ** 2 / (s ** 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(ev, PCA(2).fit(x).explained_variance_ratio_, rtol=1e-5)
    two = rng.normal(size=(10, 2)).astype(np.float32)
    np.testing.assert_array_equal(em.project(two, "pca")[0], two)        # 2-D latents shown as they are


def test_knn_accuracy_on_separated_and_on_shuffled_clusters():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    x = rng.normal(size=(200, 2)) * 0.1 + np.eye(4, 2)[y] * 10 + (y == 3)[:, None] * 20
    assert em.knn_accuracy(x, y) == 1.0
    assert em.knn_accuracy(x, rng.permutation(y)) < 0.5                  # chance is 0.25


def test_embed_library_on_vae_and_gans(runs):
    images = torch.from_numpy(np.load(runs["npz"])["images"])
    labels = torch.arange(64) % 10
    for name, source, dim in (("vae", "mu", 4), ("dcgan", "D's", 4 * 2 * 7 * 7), ("cgan", "D's", 4 * 2 * 7 * 7)):
        m = em.embed(_load(runs, name), images, labels, "pca")
        assert m.coords.shape == (64, 2) and m.features.shape == (64, dim) and m.source.startswith(source)
        assert m.labels.tolist() == labels.tolist() and m.explained.shape == (2,)
    vae2 = _load(runs, "vae2")
    m = em.embed(vae2, images, labels)
    assert m.method == "none" and m.explained is None
    np.testing.assert_allclose(m.coords, vae2.encode(images.float() / 127.5 - 1)[0].detach().numpy(), atol=1e-5)
    grid = em.manifold(vae2, 5)
    assert grid.shape == (25, 1, 28, 28) and grid.min() >= -1 and grid.max() <= 1
    with pytest.raises(UsageError, match="2-D latent"):
        em.manifold(_load(runs, "vae"))
    with pytest.raises(UsageError, match="reads the class label"):
        em.embed(_load(runs, "cgan"), images, None)


def test_embed_cli_writes_png_npz_and_json(capsys, runs, tmp_path):
    code, out, err = run_cli(capsys, "embed", runs["cgan"], "--data", "npz", "--data-dir", runs["npz"],
                             "--n", 50, "--out", tmp_path / "m.png", "--threads", 1)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["n"] == 50 and rep["method"] == "pca" and 0 <= rep["knn5_2d"] <= 1 and 0 <= rep["knn5_full"] <= 1
    with np.load(tmp_path / "m.npz") as f:
        assert f["coords"].shape == (50, 2) and f["labels"].shape == (50,) and f["explained"].shape == (2,)
        index = f["index"]
        assert len(set(index.tolist())) == 50 and (f["labels"] == index % 10).all()
    with Image.open(tmp_path / "m.png") as im:
        one = im.size
    assert run_cli(capsys, "embed", runs["vae2"], "--data", "npz", "--data-dir", runs["npz"],
                   "--out", tmp_path / "v.png")[0] == 0
    with Image.open(tmp_path / "v.png") as im:                            # scatter + manifold panels
        assert im.size[0] > 1.5 * one[0]
    assert run_cli(capsys, "embed", runs["cgan"], "--data", "npz", "--data-dir", runs["npz"], "--n", 50,
                   "--out", tmp_path / "m2.png")[0] == 0
    assert (tmp_path / "m2.npz").read_bytes() == (tmp_path / "m.npz").read_bytes()   # same seed


@pytest.mark.parametrize("args, match", [
    (["--out", "{t}/m.npz"], "--out must end in .png"),
    (["--n", "2"], "--n must be >= 3"),
    (["--n", "50000"], "--n must be <= 20,000"),
    (["--method", "tsne", "--n", "12000"], "--n must be <= 10,000 for --method tsne"),
    (["--method", "umap"], "invalid choice"),
    (["--data", "nope"], "unknown data"),
])
def test_embed_bad_input_is_one_line_exit_2(capsys, runs, tmp_path, args, match):
    args = [a.replace("{t}", str(tmp_path)) for a in args]
    base = ["--data", "npz", "--data-dir", str(runs["npz"]), "--out", str(tmp_path / "m.png")]
    one_line_error(capsys, "embed", runs["dcgan"], *base, *args, match=match)
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("name", ["cgan", "rnngan", "dcgan", "gan"])
def test_soft_one_hot_is_the_hard_label_and_d_features_are_per_image(name):
    """Untrained tiny networks of every GAN: a one-hot soft label gives exactly the hard label's image;
    phi(x) of one image does not depend on the rest of the batch (no minibatch statistics)."""
    from genlab.config import build
    from genlab.models import MODELS
    torch.manual_seed(0)
    cls = MODELS[name]
    m = build(cls, cls.presets["tiny"]).build((1, 28, 28), 10).eval()
    z, y = torch.randn(3, m.z_dim), torch.tensor([0, 4, 9])
    if m.num_classes:
        torch.testing.assert_close(m.generate_soft(z, torch.eye(10)[y]), m.generate(z, y), atol=1e-6, rtol=0)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    h = m.d_features(x, y if m.num_classes else None)
    assert h.ndim == 2 and len(h) == 3
    torch.testing.assert_close(m.d_features(x[:1], y[:1] if m.num_classes else None), h[:1], atol=1e-5, rtol=1e-5)
