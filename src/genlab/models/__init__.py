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


def place(model: torch.nn.Module, device) -> torch.nn.Module:
    """Move a model to `device` with its 4-D weights in channels_last, oneDNN's native convolution
    layout: 1.11-1.16x faster DCGAN steps with bf16 on this CPU (same process, 1 thread); a no-op for
    linear and recurrent layers. Training and loading both place models this way, so sampling from a
    loaded run runs the same kernels as the run did."""
    return model.to(device, memory_format=torch.channels_last)


for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_m}")
