"""Gradient hooks on every trainable parameter of a model (upstream torchmanager 1.5's `torchmanager_core.backward`)."""

from torch import nn

from ..version import warn_upstream_name
from .hook import add_grad_clip, backward_hook
from .protocols import Removable

__all__ = ["Removable", "add_grad_clip", "backward_hook"]


def add_gard_clip(
    model: nn.Module, /, min_value: float, max_value: float, *, replace_nan: bool = False
) -> list[Removable]:
    """Upstream's misspelling of `add_grad_clip` (warns once, then does the same)."""
    warn_upstream_name("torchmanager_core.backward.add_gard_clip", "`add_grad_clip`")
    return add_grad_clip(model, min_value, max_value, replace_nan=replace_nan)
