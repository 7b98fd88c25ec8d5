"""Upstream torchmanager 1.5's module path `torchmanager.data.sliding`."""

from torchmanager_data import reversed_sliding_window, sliding_window

__all__ = ["reversed_sliding_window", "sliding_window"]
