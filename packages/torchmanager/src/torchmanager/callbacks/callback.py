"""Upstream torchmanager 1.5's module path `torchmanager.callbacks.callback`."""

from torchmanager_callbacks import Callback, FrequencyCallback, MultiCallbacks

__all__ = ["Callback", "FrequencyCallback", "MultiCallbacks"]
