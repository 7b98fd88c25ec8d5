"""Upstream torchmanager 1.5's module path `torchmanager.callbacks.functional`."""

from torchmanager_callbacks import LambdaCallback, on_batch_end, on_batch_start, on_epoch_end, on_epoch_start
from torchmanager_callbacks.functional import PostCallbackFn, PreCallbackFn

__all__ = [
    "LambdaCallback",
    "PostCallbackFn",
    "PreCallbackFn",
    "on_batch_end",
    "on_batch_start",
    "on_epoch_end",
    "on_epoch_start",
]
