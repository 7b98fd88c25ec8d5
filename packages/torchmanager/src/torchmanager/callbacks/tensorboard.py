"""Upstream torchmanager 1.5's module path `torchmanager.callbacks.tensorboard` (tensorboard itself is
imported when a `TensorBoard` callback is made, not here)."""

from torchmanager_callbacks import TensorBoard

__all__ = ["SummaryResult", "TensorBoard"]

SummaryResult = tuple[set[str], dict[str, float], dict[str, float] | None]
"""Upstream's annotation of a summary: the names to write, the training and the validation values."""
