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


def make_tiny_npz(path: Path) -> Path:
    """64 labelled 28x28 images made here: class k is a bright k-th horizontal band on noise."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 40, size=(64, 1, 28, 28), dtype=np.uint8)
    y = np.arange(64) % 10
    for i, k in enumerate(y):
        x[i, 0, 2 * k + 4:2 * k + 7] = 250
    np.savez(path, images=x, labels=y)
    return path


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    return make_tiny_npz(tmp_path / "tiny.npz")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    d = SHARED_DATA / "mnist"
    if not (d / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("../shared/data/mnist is not available")
    return d


# run options of the tiny training runs most tests make (tiny_npz data; add data_dir, out, max_steps)
TINY = dict(data="npz", sample_every=0, log_every=1, seed=3, precision="fp32", quiet=True)


def run_cli(capsys, *argv):
    """The CLI in-process: -> (exit code, stdout, stderr); arguments may be paths or numbers."""
    capsys.readouterr()                                       # drop what earlier steps printed
    from genlab.cli import main
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *argv, match: str = "", code: int = 2, only: bool = True) -> str:
    """Run the CLI; it must exit `code` with its error on one line, printed last, and no traceback;
    `match` must be in it; `only`: nothing else on stderr (else progress lines may precede it)."""
    got, out, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert got == code, (got, out, err)
    assert len(lines) == 1 or not only, err
    assert "Traceback" not in err and [l for l in lines if l.startswith("genlab:")] == lines[-1:], err
    assert match in lines[-1], lines[-1]
    return lines[-1]
