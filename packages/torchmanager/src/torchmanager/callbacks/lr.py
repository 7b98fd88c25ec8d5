"""Upstream torchmanager 1.5's module path `torchmanager.callbacks.lr`."""

from typing import Any

from torchmanager_callbacks import LrScheduler
from torchmanager_core.version import warn_upstream_name

__all__ = ["LrScheduler", "LrSchedueler"]


def LrSchedueler(*args: Any, **kwargs: Any) -> LrScheduler:  # upstream's spelling
    """Upstream's misspelling of `LrScheduler` (warns once, then makes an `LrScheduler`)."""
    warn_upstream_name("torchmanager.callbacks.lr.LrSchedueler", "`torchmanager.callbacks.LrScheduler`")
    return LrScheduler(*args, **kwargs)
