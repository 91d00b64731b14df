"""`genlab info`: versions, CPU and ISA, GEMM speed, the precision `auto` picks (sysinfo.py)."""
from __future__ import annotations

from .base import Parser, command


@command("info", "versions, CPU/ISA, GEMM speed, the precision auto picks")
def info(argv: list[str]) -> None:
    p = Parser(prog="genlab info")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--threads", type=int, help="torch threads to measure with (default: all cores)")
    args = p.parse_args(argv)
    import json
    from ..sysinfo import collect, format_info
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    d = collect()
    print(json.dumps(d, indent=1) if args.json else format_info(d))
