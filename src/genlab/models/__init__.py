"""MODELS: name -> config dataclass. A config's `build(shape, num_classes)` returns the model, an
nn.Module with `configure_optimizers()`, `train_step(batches, opt, generator)` and
`sample(n, labels=None, generator=None)`. Adding a model is one file in this folder plus one
decorator: every module here is imported, and the registry-wide tests cover what it registers."""
import importlib
import pkgutil

from ..registry import Registry

MODELS = Registry("model")

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_m}")
