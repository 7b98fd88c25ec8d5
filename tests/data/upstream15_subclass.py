"""A manager subclass as projects built on torchmanager 1.5 write them, importable with 1.5 and with ours.

scripts/upstream15_checkpoint.py pickles one with 1.5 (`upstream15_subclass.model`); the tests load
that file with this module on the path, as a project's own checkpoint would be loaded.
"""

from __future__ import annotations

from typing import Any

import torch

import torchmanager


class StepsManager(torchmanager.Manager):  # type: ignore[misc]
    """A subclass with its own constructor argument and attribute (like torchmanager-diffusion's `time_steps`)."""

    def __init__(self, model: torch.nn.Module, time_steps: int, optimizer: Any = None, loss_fn: Any = None) -> None:
        super().__init__(model, optimizer, loss_fn)
        self.time_steps = time_steps
