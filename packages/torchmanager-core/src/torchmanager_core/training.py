"""The training managers: `BasicTrainingManager` (the `fit` loop) and `TrainingManager` (its default step).

Who owns what: `fit` reads top to bottom: check arguments, place the model, then for each epoch
train over the batches, validate through `run_test`, report. The step (`train_step`, `backward`,
`optimize`) is the extension point; nothing in it waits for the device.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import torch

from .callbacks import Callback, CallbackList
from .errors import NonFiniteLossError, StopTraining
from .progress import logger
from .random import get_rng_state, set_rng_state
from .testing import BasicTestingManager, DataSource, Devices, TestingManager, batches_in
from .tracking import count_samples, to_floats

__all__ = ["BaseTrainingManager", "BasicTrainingManager", "Manager", "TrainingManager"]


class BasicTrainingManager(BasicTestingManager, abc.ABC):
    """A manager that trains: the `fit` loop around an abstract `train_step`.

    Subclass it and implement `train_step` (and `test_step`) to define one iteration; `backward`
    and `optimize` are the default gradient and update steps a `train_step` may call.
    """

    stop_training: bool
    """Set it (from a callback or a step) to end `fit` at the next batch boundary."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_training = False
        self._current_epoch = 0
        self._epoch_step = 0  # batches done in the epoch in progress: where a mid-epoch checkpoint resumes
        self._epoch_rng: dict[str, Any] | None = None  # generators when the epoch's data order was drawn
        self._resume_rng: dict[str, Any] | None = None  # generators when the checkpoint resumed from was saved
        self._callbacks = CallbackList()

    @property
    def current_epoch(self) -> int:
        """The index of the epoch in progress during `fit`; the number of epochs done afterwards."""
        return self._current_epoch

    @current_epoch.setter
    def current_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"`current_epoch` must be a non-negative int. Received: current_epoch={epoch!r}")
        self._current_epoch = epoch

    @abc.abstractmethod
    def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        """One training iteration; returns the batch's summary (floats or 0-dim tensors)."""

    def backward(self, loss: torch.Tensor, /) -> None:
        """Compute the gradients of `loss`."""
        loss.backward()

    def optimize(self) -> None:
        """Update the parameters from their gradients, then clear the gradients."""
        assert self.optimizer is not None  # checked by `fit`
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def fit(
        self,
        training_dataset: DataSource,
        /,
        epochs: int | None = None,
        val_dataset: DataSource | None = None,
        callbacks_list: Sequence[Callback] | None = None,
        *,
        iterations: int | None = None,
        initial_epoch: int | None = None,
        return_summary: bool = False,
        device: Devices = None,
        devices: Devices = None,
        use_multi_gpus: bool = False,
        show_verbose: bool = False,
        resume_from: str | os.PathLike[str] | None = None,
        on_nonfinite_loss: Literal["raise", "stop"] = "raise",
    ) -> Any:
        """Train the model and return it (unwrapped), with the last epoch's summary if asked.

        Args:
            training_dataset: Batches of `(x, y)`: a torchmanager `Dataset`, a `DataLoader`, a list.
            epochs: How many epochs to train in all (counting those already done); or give `iterations`.
            val_dataset: Optional batches to validate on after each epoch (reported as `val_<name>`).
            callbacks_list: Callbacks called at the hooks they override.
            iterations: How many steps to train in all, instead of `epochs`.
            initial_epoch: The epoch index to start from (default: `current_epoch`).
            return_summary: Return `(model, summary)` instead of the model.
            device: Where to train (a device, a name, a CUDA index, or a list for DataParallel);
                by default the best available. `devices` is the same (the README's name).
            use_multi_gpus: Use DataParallel over several given or visible GPUs.
            show_verbose: Show a progress bar per epoch (the summary line is always logged).
            resume_from: A checkpoint of this run to continue from, at the batch where it was saved.
            on_nonfinite_loss: "raise" a `NonFiniteLossError` when an epoch's loss is NaN or infinite,
                or "stop" training cleanly.
        Returns:
            The trained raw model, or `(model, summary)` with `return_summary=True`.
        """
        total_epochs, steps_per_epoch = self._check_fit(training_dataset, epochs, iterations, initial_epoch, on_nonfinite_loss)
        callbacks = self._callbacks = CallbackList(callbacks_list)
        resume_step = 0
        if resume_from is not None:
            payload = self.load_checkpoint(resume_from)
            callbacks.on_load_checkpoint(payload)
            resume_step = self._epoch_step
            if resume_step == 0 and self._resume_rng is not None:
                set_rng_state(self._resume_rng)  # saved at an epoch's end: continue the same random draws
        elif initial_epoch is not None:
            self.current_epoch = initial_epoch
        summary: dict[str, float] = {}
        self.stop_training = False
        with self.placed(device, devices, use_multi_gpus):
            try:
                callbacks.on_train_start(self.current_epoch)
                for epoch in range(self.current_epoch, total_epochs):
                    self.current_epoch = epoch
                    limit = self._steps_in_epoch(epoch, iterations, steps_per_epoch)
                    train_summary = self._train_epoch(training_dataset, callbacks, limit, resume_step, show_verbose)
                    resume_step = 0
                    val_summary = None
                    if val_dataset is not None:
                        callbacks.on_validation_start(epoch)
                        val_summary = self.run_test(val_dataset, CallbackList(), show_verbose=show_verbose, description="Validation")
                        callbacks.on_validation_end(epoch, val_summary)
                    summary = {**train_summary, **{_val_name(k): v for k, v in (val_summary or {}).items()}}
                    self.log_summary(f"Epoch {epoch + 1}/{total_epochs}", summary)
                    self._epoch_step = 0
                    self.current_epoch = epoch + 1  # the epoch is done: a checkpoint now resumes at the next one
                    if not math.isfinite(train_summary.get("loss", 0.0)):
                        self._nonfinite(epoch, train_summary["loss"], on_nonfinite_loss)
                    callbacks.on_epoch_end(epoch, train_summary, val_summary)
                    if self.stop_training:
                        break
            except StopTraining:
                logger.info("Training stopped by a callback.")
            except KeyboardInterrupt:
                logger.warning("Training interrupted (Ctrl-C); returning the model as it is.")
            finally:
                callbacks.on_train_end(self.raw_model)
                self._callbacks = CallbackList()
        model = self.raw_model
        return (model, summary) if return_summary else model

    def _train_epoch(
        self, dataset: DataSource, callbacks: CallbackList, limit: int | None, skip: int, show_verbose: bool
    ) -> dict[str, float]:
        """Train over one epoch's batches (after `skip` already done) and return its summary floats."""
        self.model.train()
        if skip == 0:
            self.reset_metrics()
        callbacks.on_epoch_start(self.current_epoch)
        set_epoch = getattr(getattr(dataset, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.current_epoch)
        progress = self.progress(dataset, f"Epoch {self.current_epoch + 1}", show_verbose)
        batch_start, batch_end = callbacks.uses("on_batch_start"), callbacks.uses("on_batch_end")
        if skip == 0:
            self._epoch_rng = get_rng_state()  # the data order is drawn from these when iteration starts
        elif self._epoch_rng is not None:
            set_rng_state(self._epoch_rng)  # draw the same order again, then skip what was done
        self._epoch_step = skip
        for x, y in self.batches(dataset, skip, then_rng=self._resume_rng if skip else None):
            if limit is not None and self._epoch_step >= limit:
                break
            if batch_start:
                callbacks.on_batch_start(self._epoch_step)
            step_summary = self.train_step(x, y)
            self.record(step_summary, count_samples(x, y), training=True)
            self._epoch_step += 1
            if batch_end:
                callbacks.on_batch_end(self._epoch_step - 1, step_summary)
            progress.step(lambda: self.epoch_values(training=True))
            if self.stop_training:
                break
        if self._epoch_step == 0:
            progress.close()
            raise ValueError(
                f"`training_dataset` yielded no batches in epoch {self.current_epoch + 1}; give a non-empty data set "
                f"(and check `drop_last` with a batch size larger than the data). Received: training_dataset={dataset!r}"
            )
        summary = to_floats(self.epoch_values(training=True))
        progress.close(summary)
        return summary

    def _check_fit(
        self, dataset: DataSource, epochs: int | None, iterations: int | None, initial_epoch: int | None, on_nonfinite: str
    ) -> tuple[int, int | None]:
        """Check `fit`'s arguments; return the total number of epochs and the batches per epoch."""
        if self.optimizer is None:
            raise ValueError(
                f"`fit` needs an optimizer: pass one to {type(self).__name__}(model, optimizer, ...). Received: optimizer=None"
            )
        if self.compiled_losses is None and type(self).train_step is TrainingManager.train_step:
            raise ValueError(
                "`fit` needs a `loss_fn` for the default training step: pass one to the manager, or override "
                "`train_step`. Received: loss_fn=None"
            )
        if on_nonfinite not in ("raise", "stop"):
            raise ValueError(f"`on_nonfinite_loss` must be 'raise' or 'stop'. Received: on_nonfinite_loss={on_nonfinite!r}")
        if (epochs is None) == (iterations is None):
            raise ValueError(f"Give exactly one of `epochs` and `iterations`. Received: epochs={epochs!r}, iterations={iterations!r}")
        steps = batches_in(dataset)
        count, name = (epochs, "epochs") if epochs is not None else (iterations, "iterations")
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise ValueError(f"`{name}` must be a positive int. Received: {name}={count!r}")
        if steps == 0:
            raise ValueError(f"`training_dataset` is empty (0 batches); give a non-empty data set. Received: training_dataset={dataset!r}")
        if iterations is not None:
            if steps is None:
                raise ValueError("`iterations` needs a data set whose number of batches is known (`len`); give `epochs` instead.")
            total = math.ceil(iterations / steps)
        else:
            total = count
        if initial_epoch is not None and (isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch < total):
            raise ValueError(f"`initial_epoch` must be an int in [0, {total}). Received: initial_epoch={initial_epoch!r}")
        return total, steps

    @staticmethod
    def _steps_in_epoch(epoch: int, iterations: int | None, steps_per_epoch: int | None) -> int | None:
        """With `iterations`, the last epoch stops early; otherwise every batch is used."""
        if iterations is None or steps_per_epoch is None:
            return None
        return min(steps_per_epoch, iterations - epoch * steps_per_epoch)

    def _nonfinite(self, epoch: int, loss: float, policy: str) -> None:
        message = (
            f"The training loss of epoch {epoch + 1} is {loss}; lower the learning rate, clip gradients or check the data "
            "for NaN/inf values, or pass `on_nonfinite_loss='stop'` to stop cleanly instead."
        )
        if policy == "stop":
            logger.error(message)
            self.stop_training = True
        else:
            raise NonFiniteLossError(message)


def _val_name(name: str) -> str:
    return name if name.startswith("val_") else f"val_{name}"


BaseTrainingManager = BasicTrainingManager
"""Upstream torchmanager 1.5's name."""


class TrainingManager(BasicTrainingManager, TestingManager):
    """The default manager: forward, loss, backward, optimizer step, metrics; and `test`.

    Example:
        manager = Manager(model, optimizer, loss_fn=CrossEntropy(), metrics={"accuracy": SparseCategoricalAccuracy()})
        model = manager.fit(training_dataset, epochs=10, val_dataset=val_dataset)
    """

    def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        """Forward, loss, gradients, update, metrics; returns the batch values as device tensors."""
        y, loss = self.forward(x_train, y_train)
        assert loss is not None  # `fit` checked that there is a loss_fn
        if not loss.requires_grad:
            raise RuntimeError(
                "The loss does not depend on any trainable parameter (it has no gradient); check that the model's "
                "parameters require grad and that the loss is computed from the model output."
            )
        self.backward(loss)
        self.optimize()
        summary: dict[str, Any] = {"loss": loss.detach()}
        summary.update(self.eval(y.detach() if isinstance(y, torch.Tensor) else y, y_train, training=True))
        return summary


Manager = TrainingManager
"""The manager most users want: `Manager(model, optimizer, loss_fn, metrics).fit(...)`."""
