"""genlab's command line: `genlab <command>`, one file per command in this folder, each registered in
COMMANDS with one decorator (cli/base.py). Flags of `genlab train` are generated from the config
dataclasses. Usage errors print one line and exit 2; they never print a traceback. `genlab --help`
lists the commands without importing torch (each command imports what it needs when it runs)."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings

from ..registry import UsageError
from .base import COMMANDS, Parser

_FIRST = ("list", "info", "train", "sample", "eval")  # the help's order; the other commands follow, by name
for _m in _FIRST + tuple(sorted({m.name for m in pkgutil.iter_modules(__path__)} - set(_FIRST)
                                - {"base", "__main__"})):
    importlib.import_module(f"{__name__}.{_m}")  # each registers its command

__all__ = ["main", "COMMANDS"]


def parser() -> Parser:
    """The top-level parser: only the command names and their one-line help."""
    p = Parser(prog="genlab", description="Train, sample and evaluate image-generation models.")
    p.add_argument("-V", "--version", action="store_true", help="print genlab's version")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    for c in COMMANDS.values():
        sub.add_parser(c.name, help=c.help, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    warnings.formatwarning = lambda msg, cat, *a, **k: f"genlab: warning: {msg}\n"  # one line
    if argv[:1] in (["--version"], ["-V"]):
        from importlib.metadata import PackageNotFoundError, version
        try:
            print(f"genlab {version('genlab')}")
        except PackageNotFoundError:
            print("genlab (not installed: run from a source tree)")
        return 0
    try:
        if not argv or argv[0] not in COMMANDS:
            parser().parse_args(argv)  # --help, or the one-line error (no / unknown command)
        COMMANDS[argv[0]].run(argv[1:])
    except UsageError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `genlab list | head`: the reader left; nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from ..guard import Diverged  # only now: guard imports torch (already imported if raised)
        if not isinstance(e, Diverged):
            raise
        print(f"genlab: error: {e}", file=sys.stderr)
        return 1
    return 0
