"""The COMMANDS registry and the argument parser every command uses (the command modules import
these from here, not from the package, so that cli/__init__.py can import them without a cycle)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from ..registry import Registry, UsageError

COMMANDS = Registry("command")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the whole usage too)
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


@dataclass(frozen=True)
class Command:
    name: str
    help: str                        # one line, shown by `genlab --help`
    run: Callable[[list[str]], None]  # the command's arguments -> parses them, does the work


def command(name: str, help: str):
    """Register `genlab NAME`: the decorated function gets the arguments after NAME. It builds its
    own parser (Parser(prog=f"genlab {name}")) and imports what it needs when it runs, so that
    `genlab --help` imports no torch."""
    def deco(fn):
        COMMANDS.register(name)(Command(name, help, fn))
        return fn
    return deco
