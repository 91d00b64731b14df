"""A small MNIST-style CNN: the domain feature extractor behind genlab's FD / KID / PR / class metrics.

Inception-v3 (the network FID uses; Heusel et al. 2017) is trained on ImageNet photos and sees 28x28
digits through a 10x upscale; a classifier trained on the data itself gives features that mean
something for digits and clothes, the practice of e.g. the "FID on MNIST" tables of Lucic et al. 2018
("Are GANs Created Equal?", section 5, which used a LeNet-style MNIST classifier).

    net = load_classifier("mnist")               # sha256-verified safetensors, eval mode, fp32
    logits = net(x)                              # x: (B, 1, 28, 28) float in [-1, 1]
    logits, feats = net(x, features=True)        # feats: (B, 128) penultimate ReLU activations

Training (the shipped weights were made with exactly this; see the JSON next to each file):

    python -m genlab.metrics.classifier --data mnist --data-dir ../shared/data/mnist \\
        --out src/genlab/assets/classifier-mnist.safetensors

Weights are stored as fp16 safetensors (no pickle) and loaded only after their sha256 matches the
value pinned in `PINNED` below.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import sha256_file
from ..registry import UsageError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
FEATURE_DIM = 128
NUM_CLASSES = 10

# name -> (file in genlab/assets, sha256 of that file). A file whose hash differs is refused.
PINNED: dict[str, tuple[str, str]] = {
    "mnist": ("classifier-mnist.safetensors",
              "21469a0ced509ccde07d14ba5c6322fcb30901c9a13c423ba80fc02685e71aa1"),
    "fashion-mnist": ("classifier-fashion-mnist.safetensors",
                      "925786f620db9b7454a19b754dac05edce4968d5b087f80a2ca493d077c1433d"),
}


class WeightsError(UsageError):
    """A weights file that is missing, altered, or does not fit the network."""


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Classifier(nn.Module):
    """conv(32) pool conv(64) pool conv(128) pool -> fc 128 (features) -> fc 10; ~0.24 M parameters.

    The VGG pattern (3x3 conv + BatchNorm + ReLU, 2x2 max-pool; Simonyan & Zisserman 2015) at MNIST
    scale: 28 -> 14 -> 7 -> 3.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(_block(1, w), nn.MaxPool2d(2),
                                  _block(w, 2 * w), nn.MaxPool2d(2),
                                  _block(2 * w, 4 * w), nn.MaxPool2d(2))
        self.fc = nn.Linear(4 * w * 3 * 3, FEATURE_DIM)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor, features: bool = False):
        h = F.relu(self.fc(self.body(x).flatten(1)))
        logits = self.head(self.drop(h))
        return (logits, h) if features else logits


# --------------------------------------------------------------------------------------- weights I/O
def load_classifier(name_or_path: str, sha256: str | None = None) -> Classifier:
    """A Classifier in eval mode (fp32) from a pinned name ("mnist", "fashion-mnist") or a path.

    The file is read once; its sha256 must equal the pinned value (or `sha256` for a path), then it is
    parsed by safetensors (no pickle) and every tensor is checked for name, shape and finiteness.
    """
    if name_or_path in PINNED:
        fname, expected = PINNED[name_or_path]
        path = ASSETS / fname
    else:
        path, expected = Path(name_or_path), sha256
        if expected is None:
            raise WeightsError(f"{path}: loading classifier weights needs the expected sha256")
    if not Path(path).is_file():
        raise WeightsError(f"classifier weights {path} not found")
    raw = Path(path).read_bytes()
    got = hashlib.sha256(raw).hexdigest()
    if got != expected:
        raise WeightsError(f"classifier weights {path} have sha256 {got}, expected {expected}: "
                           f"the file was altered or replaced; refusing to load it")
    from safetensors.torch import load as st_load
    try:
        state = st_load(raw)
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise WeightsError(f"{path} is not a valid safetensors file ({e})") from None
    net = Classifier()
    want = {k: v.shape for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    if set(state) != set(want):
        raise WeightsError(f"{path}: tensor names differ from the network "
                           f"(missing {sorted(set(want) - set(state))}, extra {sorted(set(state) - set(want))})")
    for k, v in state.items():
        if v.shape != want[k]:
            raise WeightsError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(want[k])}")
        if not torch.isfinite(v.float()).all():
            raise WeightsError(f"{path}: {k} holds non-finite values")
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return net.eval()


def save_classifier(net: Classifier, path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """Write fp16 weights (BatchNorm counters dropped) as safetensors; returns the file's sha256."""
    from safetensors.torch import save_file
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=metadata or {})
    tmp.replace(path)
    return sha256_file(path)


# ------------------------------------------------------------------------------------------ training
def _augment(x: torch.Tensor, g: torch.Generator, shift: int, flip: bool, rotate: float = 0.0) -> torch.Tensor:
    """Random rotation by up to `rotate` degrees, then translation by up to `shift` pixels (both fill
    with the background -1), optional h-flip. x: (B, 1, H, W) in [-1, 1]."""
    b, _, h, w = x.shape
    if rotate:  # affine_grid/grid_sample pad with 0, so rotate x + 1 (background 0) and shift back
        a = (torch.rand(b, generator=g) * 2 - 1) * math.radians(rotate)
        theta = torch.stack([torch.stack([a.cos(), -a.sin(), torch.zeros(b)], 1),
                             torch.stack([a.sin(), a.cos(), torch.zeros(b)], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x + 1, grid, align_corners=False) - 1
    xp = F.pad(x, (shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=g)
    rows = (torch.arange(h)[None] + dy[:, None])[:, :, None]  # (B, H, 1)
    cols = (torch.arange(w)[None] + dx[:, None])[:, None, :]  # (B, 1, W)
    out = xp[torch.arange(b)[:, None, None], 0, rows, cols][:, None]
    if flip:
        m = torch.rand(b, generator=g) < 0.5
        out[m] = out[m].flip(-1)
    return out


@torch.no_grad()
def evaluate(net: Classifier, images_u8: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy in fp32, eval mode."""
    from ..data import to_float
    net.eval()
    correct = 0
    for i in range(0, len(images_u8), batch):
        correct += (net(to_float(images_u8[i:i + batch])).argmax(1) == labels[i:i + batch]).sum().item()
    return correct / len(images_u8)


def fit(x_all: torch.Tensor, y_all: torch.Tensor, steps: int, g: torch.Generator, batch_size: int = 128,
        lr: float = 3e-3, shift: int = 2, flip: bool = False, rotate: float = 0.0, bf16: bool = False,
        log_every: int = 0, net: Classifier | None = None) -> Classifier:
    """A fresh Classifier trained for `steps` on in-memory uint8 images x_all (N, 1, H, W) and labels
    y_all (N,): the recipe of train_classifier (AdamW, one-cycle, shuffled epochs without their last
    partial batch; a set smaller than a batch is one batch), augmented with `_augment`. Randomness
    (order, augmentation, and the init unless `net` is given) comes from `g`. Prints a JSON line every
    `log_every` steps."""
    from ..data import to_float
    batch_size = min(batch_size, len(x_all))
    steps_per_epoch = len(x_all) // batch_size
    if net is None:
        with torch.random.fork_rng():  # the init draws from the global RNG: seed it from g, restore it
            torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=g)))
            net = Classifier()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    t0, run_loss = time.time(), 0.0
    net.train()
    for step in range(steps):
        s = step % steps_per_epoch
        if s == 0:
            perm = torch.randperm(len(x_all), generator=g)
        idx = perm[s * batch_size:(s + 1) * batch_size]
        x = _augment(to_float(x_all[idx]), g, shift=shift, flip=flip, rotate=rotate)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x).float(), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run_loss += loss.item()
        if log_every and (step + 1) % log_every == 0:
            print(json.dumps({"step": step + 1, "loss": round(run_loss / log_every, 4),
                              "seconds": round(time.time() - t0, 1)}), flush=True)
            run_loss = 0.0
    return net.eval()


def train_classifier(data: str, data_dir: str | None, out: str, epochs: int = 6, seed: int = 0,
                     threads: int | None = 2, batch_size: int = 128, lr: float = 3e-3,
                     precision: str = "auto") -> dict:
    """Train the Classifier on `data`'s train split, test it, write `out` (.safetensors) + `out`.json.

    Recipe: AdamW (wd 5e-4), one-cycle learning rate (Smith & Topin 2017: 20% warm-up, cosine decay),
    random +-2 px shifts (+ horizontal flips for Fashion-MNIST), bf16 autocast for the training passes
    only where `precision` resolves to it (genlab.precision: auto = where the CPU runs bf16 natively); the reported accuracy is measured in fp32 on the test split with the fp16-rounded weights
    that are shipped. Returns the JSON record.
    """
    from ..data import load_data
    from ..precision import resolve
    bf16 = resolve(precision).precision == "bf16"
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train = load_data(data, data_dir=data_dir, split="train")
    test = load_data(data, data_dir=data_dir, split="test")
    steps_per_epoch = len(train) // batch_size
    net = fit(train.images, train.labels, epochs * steps_per_epoch, g, batch_size, lr, shift=2,
              flip=data.startswith("fashion"), bf16=bf16, log_every=steps_per_epoch,
              net=Classifier())  # initialised from torch.manual_seed(seed), as the shipped weights were
    # round to the shipped precision before testing, so the recorded accuracy is the shipped one's
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    acc = evaluate(net, test.images, test.labels)
    command = (f"python -m genlab.metrics.classifier --data {data} --data-dir {data_dir} --out {out} "
               f"--epochs {epochs} --seed {seed} --threads {threads}")
    sha = save_classifier(net, out, metadata={"data": data, "format": "genlab-classifier-1"})
    record = {"data": data, "test_accuracy": acc, "test_images": len(test), "epochs": epochs,
              "seed": seed, "batch_size": batch_size, "lr": lr, "bf16_training": bf16,
              "train_seconds": round(time.time() - t0, 1), "sha256": sha,
              "bytes": Path(out).stat().st_size, "parameters": sum(p.numel() for p in net.parameters()),
              "torch": torch.__version__, "command": command}
    Path(out).with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m genlab.metrics.classifier", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="mnist or fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True, help="output .safetensors (a .json is written beside it)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    print(json.dumps(train_classifier(a.data, a.data_dir, a.out, a.epochs, a.seed, a.threads)))


if __name__ == "__main__":
    main()
