"""genlab: train, sample and evaluate image-generation models (GAN, DCGAN, cGAN, RNN-GAN, VAE).

    import torch, genlab
    run = genlab.train("dcgan", data="mnist-5k", max_seconds=60, out="runs/dc")
    model = genlab.load(run)
    x = model.sample(64, generator=torch.Generator().manual_seed(0))  # (64, 1, 28, 28) in [-1, 1]

The names below are imported when first used (PEP 562), so that `import genlab.cli` and
`genlab --help` do not import torch.
"""
import sys
import types
from importlib import import_module

from .registry import UsageError

__all__ = ["train", "load", "load_data", "list_models", "MODELS", "LOSSES", "DATA", "UsageError"]
_LAZY = {"train": "train", "load": "run", "load_data": "data", "DATA": "data", "LOSSES": "losses",
         "MODELS": "models"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # importing the submodule genlab.train binds it on the package; `genlab.train` stays the function
        if name == "train" and isinstance(value, types.ModuleType):
            value = value.train
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def list_models() -> list[str]:
    from .models import MODELS
    return sorted(MODELS)
