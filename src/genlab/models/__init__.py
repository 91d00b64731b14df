"""MODELS: name -> config dataclass. A config's `build(shape, num_classes)` returns the model, an
nn.Module with `configure_optimizers()`, `train_step(batches, opt, generator)` and
`sample(n, labels=None, generator=None)`. Adding a model is one file here plus one decorator."""
from ..registry import Registry

MODELS = Registry("model")

from . import gan, dcgan  # noqa: E402,F401  (each registers itself)
