"""`EMA`: an exponential moving average of the model's weights, evaluated instead of the training weights.

Who owns what: this callback keeps the averaged copy and swaps it into the model around evaluation;
the loop never knows. The training weights are what the optimizer updates and what checkpoints keep
as `model` (so a resume is exact); the averaged copy is this callback's state in the checkpoint.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from torchmanager_core.callbacks import Callback

from ._hooks import error_leaving_fit, handled_error
from ._state import get_state, put_state

__all__ = ["EMA"]


class EMA(Callback):
    """Keeps `averaged = decay * averaged + (1 - decay) * weights` after every `every_n_steps` optimizer updates.

    Validation inside `fit` runs on the averaged weights, and the training weights are put back
    before training goes on; a `test()` whose `callbacks_list` holds this callback (e.g. called from
    another callback during `fit`) does the same, and so does `with ema.averaged(): ...`. Floating
    parameters and buffers are averaged (BatchNorm's running statistics included); integer buffers
    are copied. The average starts from the weights `fit` starts with, is updated on the model's
    device without waiting for it, and is kept in checkpoints (a resumed run averages on exactly).
    When training ends normally the model keeps the averaged weights (as Keras's `use_ema` does);
    `apply_on_train_end=False` leaves the training weights.

    Args:
        decay: The weight of the old average, in [0, 1) (0.999 averages over about 1,000 updates).
        every_n_steps: Average after every this many optimizer updates.
        apply_on_train_end: Put the averaged weights into the model when training ends without an error.
    Raises:
        ValueError: `decay` is not in [0, 1), or `every_n_steps` is not an int >= 1.
    """

    reads_batch_summary = False  # averages the weights, never reads the batch values

    def __init__(self, decay: float = 0.999, every_n_steps: int = 1, *, apply_on_train_end: bool = True) -> None:
        super().__init__()
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ValueError(f"`decay` must be a number in [0, 1), such as 0.999. Received: decay={decay!r}")
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be an int >= 1. Received: every_n_steps={every_n_steps!r}")
        self.decay = float(decay)
        self.every_n_steps = every_n_steps
        self.apply_on_train_end = apply_on_train_end
        self.updates = 0
        self._averaged: dict[str, torch.Tensor] | None = None
        self._live: dict[str, torch.Tensor] = {}  # the model's state tensors (sharing its storage)
        self._stash: dict[str, torch.Tensor] | None = None  # the training weights while evaluation swapped them
        self._seen_step: int | None = None
        self._error_before: BaseException | None = None

    def averaged_state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the averaged weights, as the model's `state_dict` (empty before training started)."""
        return {name: tensor.detach().clone() for name, tensor in (self._averaged or {}).items()}

    def _model(self) -> torch.nn.Module:
        model = getattr(self.manager, "raw_model", None)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                "`EMA` averages the weights of the manager whose `fit` runs it: list it in `manager.fit(..., "
                f"callbacks_list=[...])`. Received: manager={self.manager!r}"
            )
        return model

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self._live = dict(self._model().state_dict())
        if self._averaged is None:  # a fresh run: the average starts at the initial weights
            self._averaged = {name: tensor.detach().clone() for name, tensor in self._live.items()}
        else:  # resumed from a checkpoint (or a second fit): on the model's device
            self._averaged = {name: self._averaged[name].to(tensor.device) for name, tensor in self._live.items()}
        self._seen_step = getattr(self.manager, "global_step", None)
        self._error_before = handled_error()

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        step = getattr(self.manager, "global_step", None)
        if step == self._seen_step or self._averaged is None:
            return  # no optimizer update since the last batch (inside an accumulation window)
        self._seen_step = step
        if isinstance(step, int) and step % self.every_n_steps:
            return
        floats = [name for name, tensor in self._live.items() if tensor.is_floating_point()]
        with torch.no_grad():
            torch._foreach_lerp_(
                [self._averaged[name] for name in floats], [self._live[name] for name in floats], 1 - self.decay
            )
            for name, tensor in self._live.items():
                if not tensor.is_floating_point():
                    self._averaged[name].copy_(tensor)
        self.updates += 1

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """In the body, the model holds the averaged weights; the training weights are back afterwards."""
        self._swap_in()
        try:
            yield
        finally:
            self._swap_out()

    def _swap_in(self) -> None:
        if self._averaged is None or self._stash is not None:
            return
        with torch.no_grad():
            self._stash = {name: tensor.detach().clone() for name, tensor in self._live.items()}
            for name, tensor in self._live.items():
                tensor.copy_(self._averaged[name])

    def _swap_out(self) -> None:
        if self._stash is None:
            return
        with torch.no_grad():
            for name, tensor in self._live.items():
                tensor.copy_(self._stash[name])
        self._stash = None

    def on_validation_start(self, epoch: int) -> None:
        self._swap_in()

    def on_validation_end(self, epoch: int, val_summary: Mapping[str, float]) -> None:
        self._swap_out()

    def on_test_start(self) -> None:
        if not self._live and self.manager is not None:  # a test() outside fit: the model of its manager
            self._live = dict(self._model().state_dict())
        self._swap_in()

    def on_test_end(self, summary: Mapping[str, float]) -> None:
        self._swap_out()

    def on_train_end(self, model: torch.nn.Module) -> None:
        self._swap_out()  # an error during validation: the training weights first
        if self.apply_on_train_end and self._averaged is not None and error_leaving_fit(self._error_before) is None:
            with torch.no_grad():
                for name, tensor in model.state_dict().items():
                    tensor.copy_(self._averaged[name])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        averaged = {name: tensor.detach().cpu() for name, tensor in (self._averaged or {}).items()}
        put_state(checkpoint, self, {"averaged": averaged, "updates": self.updates, "decay": self.decay})

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        state = get_state(checkpoint, self)
        if state is None:
            return
        if not math.isclose(float(state["decay"]), self.decay):
            raise ValueError(
                f"The checkpoint's EMA averaged with decay={state['decay']}; resume it with the same decay. "
                f"Received: decay={self.decay}"
            )
        self._averaged = dict(state["averaged"]) or None
        self.updates = int(state["updates"])
