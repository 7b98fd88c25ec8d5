"""DataParallel: one process drives several GPUs (upstream's `use_multi_gpus=True`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import devices
from .base import Strategy

__all__ = ["DataParallel"]


class DataParallel(Strategy):
    """The model wrapped in `torch.nn.DataParallel` over `targets` (CUDA devices; the first is the main one).

    Args:
        targets: The devices to replicate the model on.
    """

    def __init__(self, targets: Sequence[torch.device]) -> None:
        super().__init__()
        self.targets = list(targets)

    def setup(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        self.device = device
        wrapped, _ = devices.data_parallel(model, self.targets)
        return wrapped
