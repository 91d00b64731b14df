"""genlab export: every registered model's graphs run in onnxruntime and match PyTorch (dynamic batch,
eval mode, fp32, spectral norm materialised); export.json; the command and its one-line errors."""
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

import genlab
from conftest import TINY, make_tiny_npz, one_line_error
from genlab.export import ExportMismatch, _graphs, export_onnx, fp32_copy, verify
from genlab.io import sha256_file
from genlab.models import MODELS, Autoencoder

# RNN-GAN's G is unrolled over the image rows: 8 px rows keep its export a few seconds
IMAGE_SIZE = {"rnngan": 8}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> a tiny run trained 2 steps (conftest.tiny_npz's data, made once for the module)."""
    d = tmp_path_factory.mktemp("export_runs")
    make_tiny_npz(d / "tiny.npz")
    out = {name: genlab.train(name, preset="tiny", max_steps=2, **TINY, data_dir=str(d / "tiny.npz"),
                              image_size=IMAGE_SIZE.get(name), threads=1, out=str(d / name))
           for name in sorted(MODELS)}
    return out


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory):
    """name -> (loaded model, export folder, export.json as returned)."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("exports")
    out = {}
    for name, run in runs.items():
        model = genlab.load(run)
        out[name] = (model, d / name, export_onnx(model, d / name))
    return out


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_runs_in_onnxruntime_like_pytorch(exports, name):
    model, d, info = exports[name]
    k, g = model.num_classes, torch.Generator().manual_seed(1)
    s = session(d / "generate.onnx")
    assert [i.name for i in s.get_inputs()] == (["z", "y"] if k else ["z"])
    for n in (1, 7, 64):  # the export traced batch 3: 1, 7 and 64 prove the batch is dynamic
        z = torch.randn(n, model.z_dim, generator=g)
        y = torch.randint(0, k, (n,), generator=g) if k else None
        x, = s.run(None, {"z": z.numpy(), **({"y": y.numpy()} if k else {})})
        ref = model.generate(z, y).numpy()   # the loaded model, as genlab sample uses it
        assert x.shape == (n, *model.shape) and x.dtype == np.float32
        assert np.abs(x - ref).max() <= 1e-4
        assert x.min() >= -1 and x.max() <= 1
    # eval mode (BatchNorm's running statistics): an image does not depend on the rest of its batch
    one, = s.run(None, {"z": z[:1].numpy(), **({"y": y[:1].numpy()} if k else {})})
    assert np.abs(one - x[:1]).max() <= 1e-5
    if isinstance(model, Autoencoder):
        e = session(d / "encode.onnx")
        for n in (1, 7):
            xin = torch.rand(n, *model.shape, generator=g) * 2 - 1
            mu, logvar = e.run(None, {"x": xin.numpy()})
            with torch.no_grad():
                ref_mu, ref_logvar = model.encode(xin)
            assert mu.shape == logvar.shape == (n, model.z_dim)
            assert np.abs(mu - ref_mu.numpy()).max() <= 1e-4
            assert np.abs(logvar - ref_logvar.numpy()).max() <= 1e-4
    else:
        assert not (d / "encode.onnx").exists()


def test_export_json_records_what_and_how(exports):
    model, d, info = exports["vae"]
    assert json.loads((d / "export.json").read_text()) == info
    assert info["model"] == "vae" and info["step"] == 2 and info["precision"] == "fp32"
    assert info["checkpoint_sha256"] == sha256_file(model.checkpoint / "model.safetensors")
    assert set(info["graphs"]) == {"generate", "encode"}
    gen, enc = info["graphs"]["generate"], info["graphs"]["encode"]
    assert gen["inputs"] == [{"name": "z", "shape": ["n", model.z_dim], "dtype": "float32"}]
    assert gen["outputs"] == [{"name": "x", "shape": ["n", *model.shape], "dtype": "float32"}]
    assert [o["name"] for o in enc["outputs"]] == ["mu", "logvar"]
    for g in (gen, enc):
        assert g["sha256"] == sha256_file(d / g["file"])
        v = g["verification"]
        assert v["inputs"] == 64 and v["provider"] == "CPUExecutionProvider"
        assert 0 <= v["max_abs_diff"] <= v["tolerance"] == 1e-4
    cgan = exports["cgan"][2]["graphs"]["generate"]
    assert cgan["inputs"][1] == {"name": "y", "shape": ["n"], "dtype": "int64"}
    assert "encode" not in exports["cgan"][2]["graphs"]


def test_spectral_norm_and_bf16_runs_export_their_fp32_effective_weights(runs, tmp_path):
    """A G under spectral norm (a parametrization: W / sigma(W)) and a run at bf16: the ONNX graph holds
    the effective fp32 weights; the model given is not changed."""
    model = genlab.load(runs["dcgan"])
    for m in model.G_ema.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.ConvTranspose2d, torch.nn.Conv2d)):
            torch.nn.utils.parametrizations.spectral_norm(m)
    model.eval()
    model.autocast_dtype = torch.bfloat16
    info = export_onnx(model, tmp_path)
    assert info["precision"] == "fp32"
    assert model.autocast_dtype is torch.bfloat16                         # untouched
    assert torch.nn.utils.parametrize.is_parametrized(model.G_ema.net[-2])
    z = torch.randn(5, model.z_dim, generator=torch.Generator().manual_seed(0))
    x, = session(tmp_path / "generate.onnx").run(None, {"z": z.numpy()})
    model.autocast_dtype = None
    assert np.abs(x - model.generate(z).numpy()).max() <= 1e-4
    # the graph holds W / sigma(W), not the raw W the parametrization keeps: with the raw weights the
    # images differ
    raw = fp32_copy(model)
    plain = dict(raw.G_ema.named_modules())
    for name, m in model.G_ema.named_modules():
        if torch.nn.utils.parametrize.is_parametrized(m):
            plain[name].weight.data.copy_(m.parametrizations.weight.original)
    assert np.abs(x - raw.generate(z).numpy()).max() > 1e-3


def test_a_graph_that_differs_from_pytorch_is_refused(exports):
    """verify() is the guard: dcgan's graph checked against another set of weights fails loudly."""
    model, d, _ = exports["dcgan"]
    other = fp32_copy(model)
    with torch.no_grad():
        other.G_ema.net[-2].bias.add_(1e-3)                 # a tiny change of the output layer
    g, = _graphs(other, list(model.shape))
    with pytest.raises(ExportMismatch, match="differs from PyTorch"):
        verify(g, (d / "generate.onnx").read_bytes())


def test_export_command(runs, tmp_path, capsys):
    """The command as a user meets it: a subprocess, then the refusals (one line, exit 2)."""
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "encode.onnx").write_bytes(b"stale")   # as if a VAE had been exported here before
    p = subprocess.run([sys.executable, "-m", "genlab.cli", "export", str(runs["cgan"]), "--format",
                        "onnx", "--out", str(out), "--overwrite"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == str(out / "export.json")
    assert sorted(f.name for f in out.iterdir()) == ["export.json", "generate.onnx"]  # stale one gone
    assert json.loads((out / "export.json").read_text())["model"] == "cgan"
    before = (out / "generate.onnx").read_bytes()
    one_line_error(capsys, "export", runs["cgan"], "--out", out, match="--overwrite")
    assert (out / "generate.onnx").read_bytes() == before           # nothing lost
    one_line_error(capsys, "export", runs["cgan"], "--format", "tflite", "--out", tmp_path / "a",
                   match="--format must be one of onnx")
    one_line_error(capsys, "export", tmp_path / "nowhere", "--out", tmp_path / "b", match="not a run folder")
    one_line_error(capsys, "export", runs["cgan"], "--seed", "-1", "--out", tmp_path / "d", match="--seed must be")
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, "export", tmp_path / "empty", "--out", tmp_path / "c", match="no checkpoint")
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, "export", runs["cgan"], "--out", tmp_path / "file", match="is a file")
    assert not any((tmp_path / d).exists() for d in "abcd")


@pytest.mark.slow
def test_exported_dcgan_draws_digits_like_pytorch(mnist_dir, tmp_path):
    """A DCGAN trained briefly on MNIST: the shipped classifier is as confident on the ONNX graph's
    samples as on PyTorch's (same z), and they are digits: 0.456 of them confident after 400 steps here,
    0.0 for the untrained G (3 seeds; the classifier is not confident on a fresh DCGAN's blobs)."""
    from genlab.data import to_float, to_uint8
    from genlab.metrics.classes import class_balance
    from genlab.metrics.classifier import load_classifier
    run = genlab.train("dcgan", max_steps=400, data="mnist", data_dir=str(mnist_dir), sample_every=0,
                       log_every=100, seed=0, precision="fp32", quiet=True, threads=1,
                       out=str(tmp_path / "run"))
    torch.set_num_threads(1)
    model = genlab.load(run)
    export_onnx(model, tmp_path / "onnx")
    z = torch.randn(500, model.z_dim, generator=torch.Generator().manual_seed(0))
    x_onnx = torch.from_numpy(session(tmp_path / "onnx" / "generate.onnx").run(None, {"z": z.numpy()})[0])
    clf = load_classifier("mnist")

    def confident(x):
        with torch.no_grad():
            return class_balance(torch.softmax(clf(to_float(to_uint8(x))), 1).numpy())["confident_fraction"]
    c_onnx, c_torch = confident(x_onnx), confident(model.generate(z))
    print(f"confident share: onnx {c_onnx:.3f}, torch {c_torch:.3f}")
    assert abs(c_onnx - c_torch) <= 0.01, (c_onnx, c_torch)
    assert c_onnx >= 0.3, c_onnx
