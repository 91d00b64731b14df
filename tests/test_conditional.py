"""Conditional models (cgan, rnngan): labels reach G and D, `--label K` draws class K, the default grid
has row k = class k, cgan refuses unlabelled data, bf16 autocast works."""
import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.models import MODELS
from genlab.registry import UsageError
from genlab.sample import draw

from conftest import TINY

FAST = dict(TINY, ckpt_every=0, log_every=1000, seed=0)


@pytest.mark.parametrize("name", ["cgan", "rnngan"])
def test_label_flag_draws_only_that_class(name, tiny_npz, tmp_path, capsys):
    run = genlab.train(name, preset="tiny", data_dir=str(tiny_npz), out=str(tmp_path / "r"),
                       max_steps=2, **FAST)
    assert genlab.load(run).num_classes == 10
    out = tmp_path / "sevens.npz"
    assert main(["sample", str(run), "--label", "7", "--n", "12", "--out", str(out)]) == 0
    f = np.load(out)
    assert f["images"].shape == (12, 1, 28, 28) and f["images"].dtype == np.uint8
    assert f["labels"].tolist() == [7] * 12
    assert main(["sample", str(run), "--label", "10", "--out", str(tmp_path / "x.npz")]) == 2
    assert "0..9" in capsys.readouterr().err


def test_default_grid_has_row_k_class_k(tiny_npz, tmp_path):
    run = genlab.train("cgan", preset="tiny", data_dir=str(tiny_npz), out=str(tmp_path / "r"),
                       max_steps=1, **FAST)
    model = genlab.load(run)
    x, labels = draw(model, 100)                   # the npz rule: class i % K
    assert labels.tolist() == [i % 10 for i in range(100)]
    # the grid sorts by class: row k of the 10 x 10 grid is class k (checked on the pixels)
    from genlab.sample import save_grid
    from PIL import Image
    marked = torch.full_like(x, -1)
    marked[labels == 3] = 1                        # class 3 white, everything else black
    save_grid(marked, tmp_path / "g.png", 10, labels)
    img = np.asarray(Image.open(tmp_path / "g.png").convert("L"), dtype=np.float32)
    cell = 28 + 2                                  # image + padding
    row_means = [np.mean([img[2 + r * cell:(r + 1) * cell, 2 + c * cell:(c + 1) * cell].mean()
                          for c in range(10)]) for r in range(10)]   # image cells only, no padding
    assert np.argmax(row_means) == 3 and row_means[3] > 250 and sorted(row_means)[-2] < 5


def test_cgan_on_unlabelled_data_is_a_usage_error(tmp_path):
    p = tmp_path / "unlabelled.npz"
    np.savez(p, images=np.zeros((16, 1, 28, 28), np.uint8))
    with pytest.raises(UsageError, match="cgan needs labelled data"):
        genlab.train("cgan", preset="tiny", data_dir=str(p), out=str(tmp_path / "r"), max_steps=1,
                     **FAST)
    assert not (tmp_path / "r").exists()           # refused before the run folder is made
    # rnngan is conditional only when the data has labels
    run = genlab.train("rnngan", preset="tiny", data_dir=str(p), out=str(tmp_path / "u"),
                       max_steps=1, **FAST)
    model = genlab.load(run)
    assert model.num_classes == 0 and draw(model, 4)[1] is None


@pytest.mark.parametrize("name, options", [("cgan", {}), ("cgan", {"d_cond": "concat"}),
                                           ("rnngan", {})])
def test_forward_passes_under_bf16_autocast(name, options):
    model = genlab.config.build(MODELS[name], options, "tiny").build((1, 28, 28), 10)
    model.autocast_dtype = torch.bfloat16
    opts = model.configure_optimizers()
    y = torch.arange(8) % 10
    batches = iter([(torch.rand(8, 1, 28, 28) * 2 - 1, y)] * 2)
    stats = model.train_step(batches, opts, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in stats.values())
    with model.autocast("cpu"):
        x = model.G(torch.randn(8, model.config.z_dim), y)
        assert x.shape == (8, 1, 28, 28) and model.D(x, y).shape == (8,)
