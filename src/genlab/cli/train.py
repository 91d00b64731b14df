"""`genlab train MODEL`: flags generated from the run options (config.TrainConfig) and the model's
config dataclass; the run folder is printed last."""
from __future__ import annotations

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
    add_flags(p, TrainConfig, "run options")
    if model is not None:
        add_flags(p, MODELS[model], f"{model} options")
    return p


@command("train", "train a model (genlab train MODEL --help)")
def train(argv: list[str]) -> None:
    from ..train import train
    if not argv or argv[0] in ("-h", "--help"):
        train_parser(None).parse_args(argv)  # prints help, or the one-line error
    # the model may follow run options (`train --out X dcgan`): parse those first to find it
    model = train_parser(None).parse_known_args(argv)[0].model
    args = vars(train_parser(model).parse_args(argv))
    run = train(args.pop("model"), resume=args.pop("resume"), overwrite=args.pop("overwrite"),
                config_file=args.pop("config_file"), preset=args.pop("preset"), **args)
    print(run)
