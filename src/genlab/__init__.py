"""genlab: train, sample and evaluate image-generation models (GAN, DCGAN, cGAN, RNN-GAN, VAE).

    import torch, genlab
    run = genlab.train("dcgan", data="mnist-5k", max_seconds=60, out="runs/dc")
    model = genlab.load(run)
    x = model.sample(64, generator=torch.Generator().manual_seed(0))  # (64, 1, 28, 28) in [-1, 1]
"""
from .data import DATA, load_data
from .losses import LOSSES
from .models import MODELS
from .registry import UsageError
from .run import load
from .train import train

__all__ = ["train", "load", "load_data", "list_models", "MODELS", "LOSSES", "DATA", "UsageError"]


def list_models() -> list[str]:
    return sorted(MODELS)
