"""Train and eval modes: remember each submodule's mode, switch for a pass, put them back exactly.

Why: `model.train()` on the whole model would wake a frozen backbone the user put in eval mode
(its BatchNorm statistics would drift, its dropout would fire). The loop remembers the mode of
every submodule when `fit` starts and restores that, and evaluation switches to eval mode and back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

__all__ = ["ModuleModes", "evaluating"]


class ModuleModes:
    """The train/eval mode of every submodule of some modules, taken when made.

    Args:
        modules: The modules (a model, losses and metrics that are modules).
    """

    def __init__(self, modules: Iterable[torch.nn.Module]) -> None:
        self._modes = [(module, module.training) for root in modules for module in root.modules()]

    @property
    def all_eval(self) -> bool:
        """Whether every remembered module was in eval mode."""
        return bool(self._modes) and not any(training for _, training in self._modes)

    def restore(self) -> None:
        """Put every remembered module back into the mode it had."""
        for module, training in self._modes:
            if module.training != training:
                module.training = training


@contextlib.contextmanager
def evaluating(modules: Iterable[torch.nn.Module]) -> Iterator[None]:
    """Run the body with `modules` in eval mode; afterwards each submodule has its mode back."""
    modules = list(modules)
    modes = ModuleModes(modules)
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        modes.restore()
