"""ONNX export of a trained model's deterministic maps, checked against PyTorch.

What is exported, by the model's Protocol (models/__init__.py), never by its name:
  * a Generator's `generate(z, y)` -> generate.onnx: inputs z (n, z_dim) float32 (and y (n,) int64 for
    a conditional model, num_classes > 0), output x (n, C, H, W) float32 in [-1, 1]. For the GANs this
    is G (G_ema when the run keeps one) in eval mode; for the VAE the decoder mean (same convention);
  * an Autoencoder's `encode(x)` -> encode.onnx: input x (n, C, H, W) float32 in [-1, 1], outputs mu
    and logvar (n, z_dim) of q(z|x) (Kingma & Welling 2014).
The batch n is dynamic; the graphs hold no random op (z is an input: the caller draws it).

Always fp32, whatever precision the run resolved (precision.py): ONNX Runtime's CPU kernels are fp32
(bf16 would be emulated), and fp32 is what the 1e-4 check below can hold the graph to.

Exporter: torch.export in strict mode (TorchDynamo), then torch.onnx (the dynamo/onnxscript
translator, ONNX opset OPSET). Measured on this code (torch 2.14): the TorchScript exporter
(`dynamo=False`) and non-strict torch.export both pin the batch to the example's size, because the
models write `len(z)` (Python's len must return an int, so the traced size becomes a constant); the
ONNX files then fail at any other n (Reshape/Concat errors in onnxruntime), RNN-GAN's initial row and
LSTM state included. Strict mode traces len(z) symbolically, and all five families export with a
dynamic batch.

Traps handled: spectral norm (Miyato et al. 2018) is a parametrization recomputing W / sigma(W) from
u, v; the copy exported holds the effective weight W / sigma(W), computed once in eval mode (where no
power iteration runs); BatchNorm runs with its running statistics (eval mode).

Verification: `CHECK_N` random inputs (z ~ N(0, I), labels uniform over the classes, images uniform
in [-1, 1]) in batches of CHECK_BATCHES (1 and 7 test the dynamic batch), run by onnxruntime's
CPUExecutionProvider and by the fp32 PyTorch model; the max abs difference must be <= TOLERANCE, or
nothing is written and ExportMismatch is raised.
"""
from __future__ import annotations

import copy
import importlib.metadata
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .io import atomic_write_bytes, atomic_write_json, sha256_file
from .models import Autoencoder, Generator, Loaded
from .precision import Precision
from .registry import UsageError

OPSET = 18
TOLERANCE = 1e-4
CHECK_BATCHES = (1, 7, 56)           # 64 inputs; n = 1 and 7 differ from the export example's 3
CHECK_N = sum(CHECK_BATCHES)
EXAMPLE_N = 3                        # the example batch torch.export traces with (then made dynamic)
FILES = ("generate.onnx", "encode.onnx", "export.json")


class ExportMismatch(UsageError):
    """The exported graph does not compute what PyTorch computes (beyond TOLERANCE)."""


class _Generate(nn.Module):
    """generate(z, y) as a module torch.export can trace (y only for conditional models)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z, y=None):              # z: (n, z_dim), y: (n,) -> x: (n, C, H, W) in [-1, 1]
        return self.model.generate(z, y)


class _Encode(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):                      # x: (n, C, H, W) in [-1, 1] -> mu, logvar: (n, z_dim)
        return self.model.encode(x)


def fp32_copy(model: nn.Module) -> nn.Module:
    """A CPU fp32 eval-mode copy of `model` with every parametrization (spectral norm) replaced by the
    weight it computes; the model given is left as it was."""
    net = copy.deepcopy(model).cpu().float().eval()
    net = net.to(memory_format=torch.contiguous_format)
    if isinstance(net, Precision):           # autocast_dtype None: no autocast, fp32
        net.autocast_dtype = None
    for m in [m for m in net.modules() if torch.nn.utils.parametrize.is_parametrized(m)]:
        _materialise(m)
    return net.requires_grad_(False)


def _materialise(m: nn.Module) -> None:
    """Turn a parametrized module (eval mode) back into its plain class holding the computed tensors.
    Not parametrize.remove_parametrizations: it deletes the property from the generated class
    (ParametrizedLinear, ...), which a deepcopy shares with the original model, breaking the original."""
    with torch.no_grad():
        tensors = {name: getattr(m, name).detach().clone() for name in m.parametrizations}
    m.__class__ = type(m).__bases__[0]       # the generated class derives from the original one
    del m._modules["parametrizations"]
    for name, t in tensors.items():
        m.register_parameter(name, nn.Parameter(t, requires_grad=False))


def _graphs(net, shape) -> list[dict]:
    """What to export for this model: one entry per graph (module, example inputs, names, shapes)."""
    out = []
    if isinstance(net, Generator):
        k, zd = net.num_classes, net.z_dim
        inputs = [("z", ["n", zd], "float32")] + ([("y", ["n"], "int64")] if k else [])
        out.append(dict(file="generate.onnx", module=_Generate(net), inputs=inputs,
                        outputs=[("x", ["n", *shape], "float32")], num_classes=k))
    if isinstance(net, Autoencoder):
        zd = net.z_dim
        out.append(dict(file="encode.onnx", module=_Encode(net), inputs=[("x", ["n", *shape], "float32")],
                        outputs=[("mu", ["n", zd], "float32"), ("logvar", ["n", zd], "float32")],
                        num_classes=0))
    if not out:
        raise UsageError(f"{type(net).__name__} is neither a Generator nor an Autoencoder: nothing to export")
    return out


def _inputs(g: dict, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random inputs of graph `g` for a batch of n."""
    args = []
    for name, shp, dtype in g["inputs"]:
        size = [n, *shp[1:]]
        if dtype == "int64":                  # class labels
            args.append(torch.randint(0, g["num_classes"], size, generator=gen))
        elif name == "z":
            args.append(torch.randn(size, generator=gen))
        else:                                  # images in [-1, 1]
            args.append(torch.rand(size, generator=gen) * 2 - 1)
    return tuple(args)


def _to_onnx(g: dict, opset: int) -> bytes:
    args = _inputs(g, EXAMPLE_N, torch.Generator().manual_seed(0))
    names = [i[0] for i in g["inputs"]]
    n = torch.export.Dim("n", min=1, max=1 << 20)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")       # dynamo's notes on eval_mode's attribute writes
        ep = torch.export.export(g["module"], args, dynamic_shapes={k: {0: n} for k in names},
                                 strict=True)  # why strict: the module docstring
        prog = torch.onnx.export(ep, args, None, input_names=names,
                                 output_names=[o[0] for o in g["outputs"]], opset_version=opset,
                                 dynamo=True, verbose=False)
    return prog.model_proto.SerializeToString()


def verify(g: dict, onnx_bytes: bytes, seed: int = 0) -> float:
    """Max abs difference between onnxruntime (CPU) and PyTorch over CHECK_N random inputs, in batches
    CHECK_BATCHES; raises ExportMismatch above TOLERANCE (or on a wrong output shape)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    gen, worst = torch.Generator().manual_seed(seed), 0.0
    for n in CHECK_BATCHES:
        args = _inputs(g, n, gen)
        with torch.no_grad():
            ref = g["module"](*args)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = sess.run(None, {i[0]: a.numpy() for i, a in zip(g["inputs"], args)})
        for (name, _, _), r, o in zip(g["outputs"], ref, got):
            if o.shape != tuple(r.shape):
                raise ExportMismatch(f"{g['file']}: output {name} has shape {o.shape} at batch {n}, "
                                     f"PyTorch {tuple(r.shape)}: the batch is not dynamic")
            worst = max(worst, float(np.abs(o - r.numpy()).max()))
    if not worst <= TOLERANCE:
        raise ExportMismatch(f"{g['file']} differs from PyTorch by {worst:.3g} (> {TOLERANCE:g}) on "
                             f"{CHECK_N} random inputs: the export is wrong, not saved")
    return worst


def _versions() -> dict:
    out = {}
    for pkg in ("genlab", "torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def export_onnx(model: nn.Module, out_dir, opset: int = OPSET, seed: int = 0) -> dict:
    """Export `model` (a Generator and/or Autoencoder, e.g. from genlab.load) to `out_dir`: the .onnx
    files and export.json (returned as a dict), written atomically once every graph verified."""
    out_dir = Path(out_dir)
    shape = list(model.shape)
    net = fp32_copy(model)
    graphs, written = _graphs(net, shape), {}
    for g in graphs:
        data = _to_onnx(g, opset)
        g["max_abs_diff"] = verify(g, data, seed)
        written[g["file"]] = data
    loaded = isinstance(model, Loaded)
    info = {
        "model": model.name if loaded else type(model).__name__,
        "run": str(Path(model.run_dir).resolve()) if loaded else None,
        "step": model.step if loaded else None,
        "checkpoint": str(Path(model.checkpoint).resolve()) if loaded else None,
        "checkpoint_sha256": sha256_file(Path(model.checkpoint) / "model.safetensors") if loaded else None,
        "run_precision": (model.train_config.get("precision") if loaded else None),
        "precision": "fp32",
        "opset": opset,
        "exporter": "torch.export (strict) + torch.onnx (dynamo)",
        "versions": _versions(),
        "graphs": {},
    }
    for g in graphs:
        info["graphs"][g["file"].removesuffix(".onnx")] = {
            "file": g["file"],
            "inputs": [dict(name=n, shape=s, dtype=t) for n, s, t in g["inputs"]],
            "outputs": [dict(name=n, shape=s, dtype=t) for n, s, t in g["outputs"]],
            "verification": {"provider": "CPUExecutionProvider", "inputs": CHECK_N,
                             "batches": list(CHECK_BATCHES), "seed": seed,
                             "max_abs_diff": g["max_abs_diff"], "tolerance": TOLERANCE},
        }
    for name, data in written.items():
        atomic_write_bytes(out_dir / name, data)
        info["graphs"][name.removesuffix(".onnx")]["sha256"] = sha256_file(out_dir / name)
    for stale in set(FILES) - set(written) - {"export.json"}:   # from an earlier export (--overwrite)
        (out_dir / stale).unlink(missing_ok=True)
    atomic_write_json(out_dir / "export.json", info)            # last: its presence means complete
    return info
