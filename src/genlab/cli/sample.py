"""`genlab sample RUN --out FILE.png|FILE.npz`: a grid or uint8 arrays from a trained run."""
from __future__ import annotations

import math
from pathlib import Path

from ..registry import UsageError
from .base import Parser, command


MAX_GRID = 10_000  # a 100x100 grid of 28 px images is already 3,000 px wide


@command("sample", "draw samples from a trained run")
def sample(argv: list[str]) -> None:
    s = Parser(prog="genlab sample")
    s.add_argument("run", help="run folder (or a ckpt-XXXXXXXX folder)")
    s.add_argument("--n", type=int, default=100, help="number of samples (default 100)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="FILE.png (grid) or FILE.npz (uint8 arrays)")
    s.add_argument("--label", type=int, help="class to draw (conditional models)")
    s.add_argument("--nrow", type=int, help="images per grid row (default: square)")
    s.add_argument("--batch-size", type=int, default=500)
    args = s.parse_args(argv)
    out = Path(args.out)
    if out.suffix not in (".png", ".npz"):
        raise UsageError(f"--out must end in .png (a grid) or .npz (arrays), got {args.out!r}")
    for flag, v, lo, hi in (("--n", args.n, 1, None), ("--batch-size", args.batch_size, 1, None),
                            ("--nrow", args.nrow, 1, None), ("--seed", args.seed, 0, 2 ** 63 - 1)):
        if v is not None and (v < lo or (hi is not None and v > hi)):
            raise UsageError(f"{flag} must be {'>= ' + str(lo) if hi is None else f'in {lo}..{hi}'}, got {v}")
    if out.suffix == ".png" and args.n > MAX_GRID:
        raise UsageError(f"--n {args.n:,} is too many for one PNG grid (at most {MAX_GRID:,}): "
                         f"write FILE.npz instead")
    from ..run import load, memory_bytes
    from ..sample import draw, save_grid, save_npz
    model = load(args.run)
    need, have = args.n * math.prod(model.shape) * 5, memory_bytes()  # float32 samples + uint8 copy
    if have and need > have // 2:
        raise UsageError(f"--n {args.n:,} samples need ~{need / 2**30:,.1f} GiB in memory, more than half "
                         f"of this machine's {have / 2**30:.0f} GiB: draw fewer per call "
                         f"(several --seed values)")
    x, labels = draw(model, args.n, args.seed, args.label, args.batch_size, progress=True)
    try:
        if out.suffix == ".png":
            save_grid(x, out, args.nrow, labels)
        else:
            save_npz(x, out, labels)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}; choose another --out") from None
    print(out)
