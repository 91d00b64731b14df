from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run single-threaded: deterministic and no oversubscription on 2 cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    """64 labelled 28x28 images made here: class k is a bright k-th horizontal band on noise."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 40, size=(64, 1, 28, 28), dtype=np.uint8)
    y = np.arange(64) % 10
    for i, k in enumerate(y):
        x[i, 0, 2 * k + 4:2 * k + 7] = 250
    p = tmp_path / "tiny.npz"
    np.savez(p, images=x, labels=y)
    return p


@pytest.fixture
def mnist_dir() -> Path:
    d = SHARED_DATA / "mnist"
    if not (d / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("../shared/data/mnist is not available")
    return d
