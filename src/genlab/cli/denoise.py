"""`genlab denoise RUN --input FILE.npz [--sigma S] --out restored.npz`: the image a trained run can make
nearest to each noisy input, as a MAP estimate (genlab.apps.restore.denoise). The input is the noisy
image as given: the command adds no noise."""
from __future__ import annotations

from ..registry import UsageError
from .base import Parser, command
from .inpaint import options, prepare, search_flags, write


@command("denoise", "remove Gaussian noise by projecting onto a trained run's images")
def denoise(argv: list[str]) -> None:
    p = Parser(prog="genlab denoise")
    search_flags(p)
    p.add_argument("--sigma", type=float,
                   help="noise std in [-1, 1] units (2/255 per grey level: 0.3 = 38 levels); "
                        "default: estimated from the images (Donoho-Johnstone wavelet MAD)")
    args = p.parse_args(argv)
    if args.sigma is not None and not args.sigma > 0:
        raise UsageError(f"--sigma must be > 0 (noise std in [-1, 1] units), got {args.sigma}")
    model, x, labels, g = prepare(args)
    from ..apps.restore import denoise as run
    write(run(model, x, args.sigma, g, labels, **options(args)), labels, args.out)
