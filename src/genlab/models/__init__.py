"""MODELS: name -> config dataclass. A config's `build(shape, num_classes)` returns the model, an
nn.Module with `configure_optimizers()`, `train_step(batches, opt, generator)` and
`sample(n, labels=None, generator=None)`. Adding a model is one file in this folder plus one
decorator: every module here is imported, and the registry-wide tests cover what it registers."""
import importlib
import pkgutil

import torch

from ..registry import Registry

MODELS = Registry("model")


class Precision:
    """Mixed precision for a model's forward passes: the loop sets `autocast_dtype` from --precision
    (None = fp32); models run their networks under `self.autocast(device_type)`, losses in fp32."""
    autocast_dtype: torch.dtype | None = None

    def autocast(self, device_type: str):
        return torch.autocast(device_type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_m}")
