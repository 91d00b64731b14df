"""`genlab list`: what the registries hold."""
from __future__ import annotations

from .base import Parser, command


def first_line(obj) -> str:
    return ((obj.__doc__ or "").strip().splitlines() or [""])[0]


@command("list", "models, losses, data sources, metrics")
def list_command(argv: list[str]) -> None:
    Parser(prog="genlab list").parse_args(argv)
    from ..data import DATA
    from ..losses import LOSSES
    from ..models import MODELS
    tables = [("models", MODELS, first_line), ("losses", LOSSES, lambda l: first_line(l.d)),
              ("data sources", DATA, first_line)]
    try:
        from ..metrics import METRICS
        tables.append(("metrics", METRICS, first_line))
    except ImportError:
        pass
    for title, reg, doc in tables:
        print(f"{title}:")
        for name in sorted(reg):
            print(f"  {name:16s} {doc(reg[name])}")
