"""genlab's command line: `genlab list | train | sample` (argparse; flags generated from the config
dataclasses). Usage errors print one line and exit 2; they never print a traceback."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .guard import Diverged
from .registry import UsageError


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the whole usage too)
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def cmd_list(args) -> None:
    from .data import DATA
    from .losses import LOSSES
    from .models import MODELS
    tables = [("models", MODELS, lambda c: (c.__doc__ or "").strip().splitlines()[0]),
              ("losses", LOSSES, lambda l: (l.d.__doc__ or "").strip().splitlines()[0]),
              ("data sources", DATA, lambda f: (f.__doc__ or "").strip().splitlines()[0])]
    try:
        from .metrics import METRICS
        tables.append(("metrics", METRICS, lambda f: (f.__doc__ or "").strip().splitlines()[0]))
    except ImportError:
        pass
    for title, reg, doc in tables:
        print(f"{title}:")
        for name in sorted(reg):
            print(f"  {name:16s} {doc(reg[name])}")


def train_parser(model: str | None) -> Parser:
    from .config import TrainConfig, add_flags
    from .models import MODELS
    p = Parser(prog="genlab train", description="Train a model; the run folder is printed last.")
    p.add_argument("model", help=f"one of: {', '.join(sorted(MODELS))}")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--config", dest="config_file", metavar="FILE", help="TOML/JSON file of options")
    p.add_argument("--preset", help="a named preset of the model (e.g. tiny, for tests)")
    add_flags(p, TrainConfig, "run options")
    if model is not None:
        add_flags(p, MODELS[model], f"{model} options")
    return p


def cmd_train(argv: list[str]) -> None:
    from .train import train
    model = next((a for a in argv if not a.startswith("-")), None)
    if model is None or model in ("-h", "--help"):
        train_parser(None).parse_args(argv)  # prints help, or the one-line error
    args = vars(train_parser(model).parse_args(argv))
    run = train(args.pop("model"), resume=args.pop("resume"), overwrite=args.pop("overwrite"),
                config_file=args.pop("config_file"), preset=args.pop("preset"), **args)
    print(run)


def cmd_sample(args) -> None:
    from .run import load
    from .sample import draw, save_grid, save_npz
    out = Path(args.out)
    if out.suffix not in (".png", ".npz"):
        raise UsageError(f"--out must end in .png (a grid) or .npz (arrays), got {args.out!r}")
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    model = load(args.run)
    x, labels = draw(model, args.n, args.seed, args.label, args.batch_size)
    if out.suffix == ".png":
        save_grid(x, out, args.nrow, labels)
    else:
        save_npz(x, out, labels)
    print(out)


def cmd_info(args) -> None:
    import json
    from .sysinfo import collect, format_info
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    d = collect()
    print(json.dumps(d, indent=1) if args.json else format_info(d))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    warnings.formatwarning = lambda msg, cat, *a, **k: f"genlab: warning: {msg}\n"  # one line
    p = Parser(prog="genlab", description="Train, sample and evaluate image-generation models.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    sub.add_parser("list", help="models, losses, data sources, metrics")
    i = sub.add_parser("info", help="versions, CPU/ISA, GEMM speed, the precision auto picks")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--threads", type=int, help="torch threads to measure with (default: all cores)")
    sub.add_parser("train", help="train a model (genlab train MODEL --help)", add_help=False)
    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run", help="run folder (or a ckpt-XXXXXXXX folder)")
    s.add_argument("--n", type=int, default=100, help="number of samples (default 100)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="FILE.png (grid) or FILE.npz (uint8 arrays)")
    s.add_argument("--label", type=int, help="class to draw (conditional models)")
    s.add_argument("--nrow", type=int, help="images per grid row (default: square)")
    s.add_argument("--batch-size", type=int, default=500)
    add_eval_parser(sub)
    try:
        if argv and argv[0] == "train":
            cmd_train(argv[1:])
            return 0
        args = p.parse_args(argv)
        {"list": cmd_list, "info": cmd_info, "sample": cmd_sample, "eval": cmd_eval}[args.cmd](args)
    except UsageError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `genlab list | head`: the reader left; nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130
    except Diverged as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return 1
    return 0



# ------------------------------------------------------------------------------------- genlab eval
def add_eval_parser(sub):
    """Register `genlab eval` on the CLI's subparsers."""
    from .evaluate import DEFAULT_N, DEFAULT_NLL_N, PROTOCOL_NAMES, STACKED_N
    e = sub.add_parser("eval", help="score a run or an npz of samples (FD, KID, PR, ...; NLL)",
                       description="Score a trained run (or an npz of samples) against a held-out "
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
    from .metrics import FEATURES
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


def cmd_eval(args) -> None:
    from .evaluate import evaluate
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

if __name__ == "__main__":
    sys.exit(main())
