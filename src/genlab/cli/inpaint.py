"""`genlab inpaint RUN --input FILE.npz (--box x,y,w,h | --mask MASK.npz) --out restored.npz`: fill the
missing pixels of images from a trained run's latent space (genlab.apps.restore.inpaint)."""
from __future__ import annotations

from ..registry import UsageError
from .base import Parser, command


def search_flags(p: Parser) -> None:
    """The options of the latent search shared by inpaint and denoise."""
    from ..apps.restore import DEFAULTS  # imports torch only when the command runs (cli/base.py)
    p.add_argument("run", help="run folder (or a ckpt-XXXXXXXX folder) of a model with generate(z, y)")
    p.add_argument("--input", required=True, help="npz with `images` uint8 (N, C, H, W) [+ `labels`]")
    p.add_argument("--out", required=True, help="restored.npz: `images` uint8 (+ `labels` if given)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting latents (default 0)")
    p.add_argument("--restarts", type=int, default=DEFAULTS["restarts"],
                   help=f"starting points per image, the best kept (default {DEFAULTS['restarts']}, Bora et al. 2017)")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], help=f"Adam steps on z (default {DEFAULTS['steps']})")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help=f"Adam learning rate on z (default {DEFAULTS['lr']})")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                   help=f"images x restarts optimised at once (default {DEFAULTS['batch_size']}; same result)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")


def prepare(args):
    """-> (model, x float (N, C, H, W) in [-1, 1], labels (N,) or None, generator) from the flags."""
    from pathlib import Path
    import torch
    from ..data import read_npz, to_float
    from ..run import load
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if not 0 <= args.seed < 2 ** 63:
        raise UsageError(f"--seed must be in 0..{2 ** 63 - 1}, got {args.seed}")
    if Path(args.out).suffix != ".npz":
        raise UsageError(f"--out must end in .npz, got {args.out!r}")
    if not Path(args.input).is_file():
        raise UsageError(f"--input {args.input} is not a file; give an npz with an `images` array")
    x, y = read_npz(args.input)
    x = torch.from_numpy(x)
    model = load(args.run)
    from ..apps.restore import check_images
    check_images(model, x)
    labels = None if y is None else torch.from_numpy(y.astype("int64"))  # kept in --out; used if conditional
    return model, to_float(x), labels, torch.Generator().manual_seed(args.seed)


def options(args) -> dict:
    return dict(restarts=args.restarts, steps=args.steps, lr=args.lr, batch_size=args.batch_size)


def write(x, labels, out) -> None:
    from ..sample import save_npz
    try:
        save_npz(x, out, labels)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}; choose another --out") from None
    print(out)


def read_mask(path):
    """`mask` (N or 1, 1, H, W) (or (H, W)) uint8/bool of an npz -> torch tensor (checked later)."""
    from pathlib import Path
    import numpy as np
    import torch
    if not Path(path).is_file():
        raise UsageError(f"--mask {path} is not a file; give an npz with a `mask` array (1 = known, 0 = missing)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "mask" not in f.files:
                raise UsageError(f"{path} has no 'mask' array (keys: {', '.join(f.files) or 'none'})")
            m = f["mask"]
    except (ValueError, OSError) as e:
        raise UsageError(f"{path} could not be read as a plain npz ({e})") from None
    if m.dtype != bool and m.dtype.kind not in "ui":
        raise UsageError(f"{path}: 'mask' must be uint8 or bool (1 = known, 0 = missing), got {m.dtype}")
    return torch.from_numpy(m.astype(np.uint8))


def parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise UsageError(f"--box must be x,y,w,h (four whole numbers: top-left column, row, width, "
                         f"height), got {text!r}")
    return box


@command("inpaint", "fill missing pixels (a box or a mask) from a trained run's latent space")
def inpaint(argv: list[str]) -> None:
    p = Parser(prog="genlab inpaint")
    search_flags(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--box", help="x,y,w,h: the missing box (top-left column, row, width, height)")
    where.add_argument("--mask", help="npz with `mask` (N or 1, 1, H, W) uint8/bool: 1 = known, 0 = missing")
    p.add_argument("--prior", type=float, default=0.1,
                   help="weight lam of ||z||^2 against the known pixels' squared error (default 0.1)")
    args = p.parse_args(argv)
    if not args.prior >= 0:
        raise UsageError(f"--prior must be >= 0, got {args.prior}")
    box = parse_box(args.box) if args.box else None
    mask = None if box else read_mask(args.mask)
    model, x, labels, g = prepare(args)
    from ..apps import restore
    mask = restore.box_mask(model.shape, box) if box else mask
    out = restore.inpaint(model, x, mask, g, labels, lam=args.prior, **options(args))
    write(out, labels, args.out)
