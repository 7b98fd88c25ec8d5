"""One device: the model runs unwrapped where the run is placed (the CPU, one GPU, MPS)."""

from __future__ import annotations

import torch

from .base import Strategy

__all__ = ["SingleDevice"]


class SingleDevice(Strategy):
    """The model on one device, unwrapped."""

    def setup(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        self.device = device
        return model
