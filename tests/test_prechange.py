"""A run folder written by genlab before issue 10's refactor (main 283b6b3; tests/data/prechange,
made by its make_fixture.sh + record.py) still loads, samples the same images and resumes bit-exactly
to the weights an uninterrupted run of that genlab reached."""
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import genlab
from genlab.data import to_uint8
from genlab.sample import draw

FIXTURE = Path(__file__).parent / "data" / "prechange"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
sys.path.insert(0, str(FIXTURE))
from record import weights_sha256  # noqa: E402  (the same hash the fixture was recorded with)

sys.path.remove(str(FIXTURE))


def same_kernels():
    if torch.backends.cpu.get_cpu_capability() != EXPECTED["cpu_capability"]:
        pytest.skip(f"recorded on a {EXPECTED['cpu_capability']} CPU; fp32 kernels may round differently here")


@pytest.fixture
def old_runs(tmp_path, monkeypatch):
    """The fixture copied to a scratch folder, made the working directory (configs name data.npz)."""
    shutil.copy(FIXTURE / "data.npz", tmp_path / "data.npz")
    for m in EXPECTED["models"]:
        shutil.copytree(FIXTURE / m, tmp_path / "runs" / m)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs"


@pytest.mark.parametrize("name", sorted(EXPECTED["models"]))
def test_old_run_loads_and_samples_identical_images(old_runs, name):
    exp = EXPECTED["models"][name]
    model = genlab.load(old_runs / name)
    assert weights_sha256(model.checkpoint / "model.safetensors") == exp["weights_step4_sha256"]
    assert model.step == 4
    x, labels = draw(model, 16, seed=5)
    images = to_uint8(x).numpy()
    assert list(images.shape) == exp["sample_shape"]
    assert (None if labels is None else labels.tolist()) == exp["sample_labels"]
    same_kernels()
    assert hashlib.sha256(images.tobytes()).hexdigest() == exp["sample_n16_seed5_sha256"]


@pytest.mark.parametrize("name", sorted(EXPECTED["models"]))
def test_old_run_resumes_bit_exactly(old_runs, name):
    run = genlab.train(resume=True, out=f"runs/{name}", max_steps=8, quiet=True)
    c = (run / "latest").read_text().strip()
    assert c == "ckpt-00000008"
    same_kernels()
    assert weights_sha256(run / c / "model.safetensors") == EXPECTED["models"][name]["weights_step8_sha256"]
