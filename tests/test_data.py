"""Data sources: shapes, dtypes, labels, the offline default, and their errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import DATA, load_data, to_float, to_uint8
from genlab.images import read_idx
from genlab.registry import UsageError


def test_mnist_5k_offline_default():
    ds = load_data("mnist-5k")
    assert ds.images.shape == (5000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.bincount(ds.labels).tolist() == [500] * 10 and ds.num_classes == 10
    assert 0.08 < ds.images.float().mean().item() / 255 < 0.2      # real digits: mostly black


def test_mnist_from_shared_idx_files(mnist_dir):
    test = load_data("mnist", data_dir=str(mnist_dir), split="test")
    assert test.images.shape == (10000, 1, 28, 28) and test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    # mnist-5k holds real MNIST training digits: its first image is among them
    train = load_data("mnist", data_dir=str(mnist_dir))
    first = load_data("mnist-5k").images[0]
    assert (train.images[:6000] == first).flatten(1).all(1).any()


def test_resize_on_load():
    ds = load_data("mnist-5k", image_size=32)
    assert ds.images.shape == (5000, 1, 32, 32) and ds.images.dtype == torch.uint8


def test_float_convention_round_trips():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    f = to_float(x)
    assert f.min() == -1 and f.max() == 1
    assert torch.equal(to_uint8(f), x)


def test_npz_source(tiny_npz, tmp_path):
    ds = load_data("npz", data_dir=str(tiny_npz))
    assert ds.images.shape == (64, 1, 28, 28) and ds.num_classes == 10
    hwc = tmp_path / "hwc.npz"
    np.savez(hwc, images=np.zeros((5, 8, 8, 3), np.uint8))
    ds = load_data("npz", data_dir=str(hwc))
    assert ds.images.shape == (5, 3, 8, 8) and ds.num_classes == 0 and (ds.labels == -1).all()


def test_npz_refuses_object_arrays(tmp_path):
    p = tmp_path / "evil.npz"
    np.savez(p, images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UsageError, match="object arrays are refused"):
        load_data("npz", data_dir=str(p))


def test_folder_source(tmp_path):
    for cls, value in (("a", 30), ("b", 200)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((40, 30), value + i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    Image.new("RGB", (10, 10), (255, 0, 0)).save(tmp_path / "red.jpg")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    ds = load_data("folder", data_dir=str(tmp_path), image_size=16)
    assert ds.images.shape == (7, 3, 16, 16)                  # one RGB image makes the set RGB
    assert sorted(ds.labels.tolist()) == [-1, 0, 0, 0, 1, 1, 1]
    assert len(ds.skipped) == 1 and "broken.png" in ds.skipped[0]
    (tmp_path / "red.jpg").unlink()
    grey = load_data("folder", data_dir=str(tmp_path), image_size=16)
    assert grey.images.shape == (6, 1, 16, 16)


def test_idx_reader_rejects_truncated(tmp_path):
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28]) + b"\0" * 100)
    with pytest.raises(UsageError, match="truncated"):
        read_idx(p)


def test_unknown_source_lists_known():
    with pytest.raises(UsageError, match="known: fashion-mnist, folder, mnist, mnist-5k, npz"):
        DATA["cifar100"]
