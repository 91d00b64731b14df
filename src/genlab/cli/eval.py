"""`genlab eval SOURCE`: the command line of evaluate.py (scoring is a library function there):
its options, the report's JSON file and the table printed."""
from __future__ import annotations

import sys
from pathlib import Path

from ..registry import UsageError
from .base import Parser, command


def eval_parser() -> Parser:
    from ..evaluate import DEFAULT_N, DEFAULT_NLL_N, PROTOCOL_NAMES, STACKED_N
    e = Parser(prog="genlab eval", description="Score a trained run (or an npz of samples) against a held-out "
                                   "reference set; prints a table and writes JSON.")
    e.add_argument("source", help="run folder, ckpt-XXXXXXXX folder, or FILE.npz of samples")
    e.add_argument("--metrics", help="comma-separated: fd, kid, pr, cs (alias score), classes "
                                     "(alias coverage), accuracy, memorisation, nll "
                                     "(default: fd,kid,pr,cs,classes [+ accuracy])")
    e.add_argument("--n", type=int, help=f"samples to draw (default {DEFAULT_N:,}; nll: test images, "
                                          f"default {DEFAULT_NLL_N:,}; stacked-mnist: {STACKED_N:,})")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--ref", help="reference data (default: the run's data); required for an npz")
    e.add_argument("--data-dir", help="folder of the reference data (default: the run's, else the "
                                      "default data root)")
    from ..metrics import FEATURES
    e.add_argument("--features", help="feature extractor (default: the data's domain classifier); "
                   + "; ".join(f"{n}: {(x.fn.__doc__ or '').strip().splitlines()[0].rstrip('.')}" for n, x in sorted(FEATURES.items())))
    e.set_defaults(weights=None)
    for x in FEATURES.values():  # extractors whose weights file the user names (e.g. not shipped)
        if x.weights_flag:
            e.add_argument(x.weights_flag, metavar="PATH", dest="weights", help=x.weights_help)
    e.add_argument("--protocol", default="auto", choices=PROTOCOL_NAMES,
                   help="stacked-mnist: count modes over 1000 (auto: for stacked-mnist runs)")
    e.add_argument("--k", type=int, default=5000, help="importance samples per image for nll (default 5000)")
    e.add_argument("--json", help="output file (default: RUN/eval.json, or SAMPLES.eval.json)")
    e.add_argument("--batch-size", type=int, default=500, help="samples per generator call")
    e.add_argument("--nll-batch", type=int, default=2500, help="rows per decoder pass for nll")
    e.add_argument("--threads", type=int, help="torch and BLAS CPU threads (default: all cores)")
    return e


def default_json_path(source: Path) -> Path:
    if source.suffix == ".npz":
        return source.with_suffix(".eval.json")
    if (source / "MANIFEST.json").is_file():  # a checkpoint folder: keep its contents as committed
        return source.parent / f"eval-{source.name}.json"
    return source / "eval.json"


@command("eval", "score a run or an npz of samples (FD, KID, PR, ...; NLL)")
def eval_command(argv: list[str]) -> None:
    from ..evaluate import evaluate
    args = eval_parser().parse_args(argv)
    source = Path(args.source)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)
    report = evaluate(source, metrics=args.metrics, n=args.n, seed=args.seed, ref=args.ref,
                      data_dir=args.data_dir, features=args.features, protocol=args.protocol, k=args.k,
                      batch_size=args.batch_size, nll_batch=args.nll_batch,
                      weights=args.weights,
                      json_path=args.json or default_json_path(source),
                      progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_table(report))
    if "json_error" in report:  # the scores are on screen already: only the file is missing
        raise UsageError(f"{report['json_error']} (the scores are printed above); choose another --json")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return "[" + " ".join("-" if a is None else f"{a:.3g}" for a in v) + "]"
    return "-" if v is None else str(v)


def format_table(report: dict) -> str:
    s = report["source"]
    what = (f"{s['path']} ({s['model']}, step {s['step']})" if s["kind"] == "run" else s["path"])
    lines = [f"genlab eval {what}: protocol {report['protocol']}, seed {report['seed']}, "
             f"{report['seconds']:.1f} s"]
    lines.append(f"{'metric':13s} {'value':24s} {'':>12s}  N / reference / features")
    for name, e in report["scores"].items():
        ref = e.get("reference") or {}
        feat = e.get("features") or {}
        where = f"{ref.get('data')}/{ref.get('split')}" if ref.get("split") else ref.get("data", "")
        tail = f"N={e['n']} vs {where}" + (f" ({ref['n']})" if ref.get("n") else "") + \
               (f", {feat['name']} {feat['weights_sha256'][:12]}" if feat else "") + \
               (f" {feat['resize']}" if feat.get("resize") else "") + \
               (f", k={e['k']}" if "k" in e else "")
        for i, (key, v) in enumerate(e["values"].items()):
            lines.append(f"{name if i == 0 else '':13s} {key:24s} {_fmt(v):>12s}  {tail if i == 0 else ''}")
    if "json" in report:
        lines.append(f"json: {report['json']}")
    return "\n".join(lines)
