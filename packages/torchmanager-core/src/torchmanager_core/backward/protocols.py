"""What a hook registration returns: a handle that removes the hook."""

from typing import Protocol

__all__ = ["Removable"]


class Removable(Protocol):
    """A hook handle, such as `torch.utils.hooks.RemovableHandle`."""

    def remove(self) -> None: ...
