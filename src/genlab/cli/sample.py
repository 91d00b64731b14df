"""`genlab sample RUN --out FILE.png|FILE.npz`: a grid or uint8 arrays from a trained run."""
from __future__ import annotations

from pathlib import Path

from ..registry import UsageError
from .base import Parser, command


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
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    from ..run import load
    from ..sample import draw, save_grid, save_npz
    model = load(args.run)
    x, labels = draw(model, args.n, args.seed, args.label, args.batch_size)
    if out.suffix == ".png":
        save_grid(x, out, args.nrow, labels)
    else:
        save_npz(x, out, labels)
    print(out)
