"""`genlab export RUN --format onnx --out DIR`: the run's generate(z, y) (and a VAE's encoder) as ONNX
files plus export.json, each verified against PyTorch in onnxruntime (genlab/export.py)."""
from __future__ import annotations

from pathlib import Path

from ..registry import UsageError
from .base import Parser, command

FORMATS = ("onnx",)


@command("export", "export a trained run for deployment (ONNX, verified against PyTorch)")
def export(argv: list[str]) -> None:
    s = Parser(prog="genlab export")
    s.add_argument("run", help="run folder (or a ckpt-XXXXXXXX folder)")
    s.add_argument("--format", default="onnx", help="export format: onnx (the only one)")
    s.add_argument("--out", required=True, help="folder for the .onnx files and export.json")
    s.add_argument("--overwrite", action="store_true", help="replace an export already in --out")
    s.add_argument("--seed", type=int, default=0, help="seed of the verification's random inputs")
    args = s.parse_args(argv)
    if args.format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"--out {out} is not empty; add --overwrite to replace its export or choose "
                         f"another folder")
    if not Path(args.run).is_dir():
        raise UsageError(f"{args.run} is not a run folder (no such folder); pass the --out of a "
                         f"`genlab train` run")
    if not 0 <= args.seed < 2 ** 63:
        raise UsageError(f"--seed must be in 0..{2 ** 63 - 1}, got {args.seed}")
    from ..export import export_onnx
    from ..run import load
    model = load(args.run)
    try:
        info = export_onnx(model, out, seed=args.seed)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}; choose another --out") from None
    for name, g in info["graphs"].items():
        print(f"{out / g['file']}  max |onnx - torch| = {g['verification']['max_abs_diff']:.2g}")
    print(out / "export.json")
