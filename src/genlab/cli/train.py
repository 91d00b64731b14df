"""`genlab train MODEL`: flags generated from the run options (config.TrainConfig) and the model's
config dataclass; the run folder is printed last."""
from __future__ import annotations

import os

from .base import Parser, command


def train_parser(model: str | None) -> Parser:
    from ..config import TrainConfig, add_flags
    from ..models import MODELS
    p = Parser(prog="genlab train", description="Train a model; the run folder is printed last.")
    p.add_argument("model", help=f"one of: {', '.join(sorted(MODELS))}")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--config", dest="config_file", metavar="FILE", help="TOML/JSON file of options")
    p.add_argument("--preset", help="a named preset of the model (e.g. tiny, for tests)")
    p.add_argument("--nproc", type=int, metavar="N", help="data-parallel training in N processes on "
                   "this machine (torchrun; --batch-size stays the global batch; README: Scaling out)")
    add_flags(p, TrainConfig, "run options")
    if model is not None:
        add_flags(p, MODELS[model], f"{model} options")
    return p


@command("train", "train a model (genlab train MODEL --help)")
def train(argv: list[str]) -> None:
    from ..train import train
    from ..models import MODELS
    rest = [a for a in argv if a not in ("-h", "--help")]
    if not argv or (len(rest) < len(argv) and not set(rest) & set(MODELS)):
        train_parser(None).parse_args(argv)  # prints help, or the one-line error
    # the model may follow run options (`train --out X dcgan`): parse those first to find it, without
    # -h, so that `genlab train MODEL --help` lists the model's own options too
    model = train_parser(None).parse_known_args(rest)[0].model
    args = vars(train_parser(model).parse_args(argv))
    nproc = args.pop("nproc")
    if nproc is not None and nproc != 1:
        return train_nproc(model, args, argv, nproc)
    run = train(args.pop("model"), resume=args.pop("resume"), overwrite=args.pop("overwrite"),
                config_file=args.pop("config_file"), preset=args.pop("preset"), **args)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        print(run)


def train_nproc(model: str | None, args: dict, argv: list[str], nproc: int) -> None:
    """`--nproc N`: check what can be checked here (one line, exit 2, before N processes start),
    then run the same command under torchrun without --nproc."""
    import sys

    from ..distributed import World, launch
    from ..registry import UsageError
    from ..run import resolve
    if nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {nproc}")
    if "WORLD_SIZE" in os.environ:
        raise UsageError("--nproc starts torchrun; under torchrun already, drop --nproc")
    *_, mcfg, _, _ = resolve(model, {k: v for k, v in args.items() if k not in
                                     ("model", "resume", "overwrite", "config_file", "preset")},
                             args["config_file"], args["preset"], args["resume"], args["overwrite"])
    World(size=nproc).check_batch(mcfg.batch_size)
    code, last = launch(without_nproc(argv), nproc, args.get("threads"))
    if last and last.startswith("genlab: error:") and code == 2:
        raise UsageError(last.removeprefix("genlab: error: "))
    if last:
        print(last, file=sys.stderr, flush=True)
    if code and not (last or "").startswith("genlab: interrupted"):
        raise SystemExit(code)


def without_nproc(argv: list[str]) -> list[str]:
    """argv without `--nproc N` / `--nproc=N`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out
