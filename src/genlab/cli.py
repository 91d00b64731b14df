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
    from .evaluate import add_eval_parser, cmd_eval
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


if __name__ == "__main__":
    sys.exit(main())
