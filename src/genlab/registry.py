"""Registries: a dict plus a decorator (the timm / torch-fidelity pattern).

    MODELS = Registry("model")
    @MODELS.register("dcgan")
    class DCGANConfig: ...

An unknown name fails with a one-line `UsageError` that lists the known names.
"""
from __future__ import annotations


class UsageError(ValueError):
    """Bad user input: the CLI prints the message on one line and exits with code 2."""


class Registry(dict):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str):
        def deco(obj):
            if name in self:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self[name] = obj
            return obj
        return deco

    def __missing__(self, name):
        known = ", ".join(sorted(self)) or "(none)"
        raise UsageError(f"unknown {self.kind} {name!r}; known: {known}")
