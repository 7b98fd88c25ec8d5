"""The training managers: `BasicTrainingManager` (the `fit` loop) and `TrainingManager` (its default step).

Who owns what: `fit` reads top to bottom: check arguments, place the model, then for each epoch
train over the batches, validate through `run_test`, report. The step (`train_step`, `backward`,
`optimize`) is the extension point; nothing in it waits for the device.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from . import distributed
from .callbacks import Callback, CallbackList
from .errors import NonFiniteLossError, StopTraining
from .precision import needs_grad_scaler
from .progress import logger
from .random import get_rng_state, set_rng_state
from .testing import BasicTestingManager, DataSource, Devices, TestingManager, batches_in

__all__ = ["BaseTrainingManager", "BasicTrainingManager", "Manager", "TrainingManager"]


class BasicTrainingManager(BasicTestingManager, abc.ABC):
    """A manager that trains: the `fit` loop around an abstract `train_step`.

    Subclass it and implement `train_step` (and `test_step`) to define one iteration; `backward`
    and `optimize` are the default gradient and update steps a `train_step` may call.

    Args (keyword-only, besides those of `BasicTestingManager`):
        accumulate_grad_batches: Sum the gradients of this many batches before each optimizer
            step (each batch's loss is divided by the window's size; an epoch's last, shorter
            window steps too).
        clip_grad_norm: Clip the gradients' total L2 norm to this value before each step.
        clip_grad_value: Clip each gradient element to [-value, value] before each step.
    """

    stop_training: bool
    """Set it (from a callback or a step) to end `fit` at the next batch boundary."""

    def __init__(
        self,
        *args: Any,
        accumulate_grad_batches: int = 1,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if (
            isinstance(accumulate_grad_batches, bool)
            or not isinstance(accumulate_grad_batches, int)
            or accumulate_grad_batches < 1
        ):
            raise ValueError(
                f"`accumulate_grad_batches` must be a positive int. Received: accumulate_grad_batches={accumulate_grad_batches!r}"
            )
        for name, value in (("clip_grad_norm", clip_grad_norm), ("clip_grad_value", clip_grad_value)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"`{name}` must be a positive number or None. Received: {name}={value!r}")
        self.accumulate_grad_batches = accumulate_grad_batches
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.scaler: torch.amp.GradScaler | None = None
        self._scaler_state: dict[str, Any] | None = None  # restored from a checkpoint before the scaler exists
        self._steps_this_epoch: int | None = None
        self._total_epochs = 0
        self._on_nonfinite = "raise"
        self.saved_checkpoints: list[str] = []
        """The checkpoint files the last `fit` wrote (each once, in the order first written)."""
        self._in_fit = False  # while True, a checkpoint reuses the model structure it packed first
        self._packed_structure: tuple[torch.nn.Module, torch.Tensor | None] | None = None
        self.stop_training = False
        self._current_epoch = 0
        self._global_step = 0  # optimizer updates done in the whole run
        self._epoch_step = 0  # batches done in the epoch in progress: where a mid-epoch checkpoint resumes
        self._epoch_rng: dict[str, Any] | None = None  # generators when the epoch's data order was drawn
        self._resume_rng: dict[str, Any] | None = None  # generators when the checkpoint resumed from was saved

    @property
    def current_epoch(self) -> int:
        """The index of the epoch in progress during `fit`; the number of epochs done afterwards."""
        return self._current_epoch

    @current_epoch.setter
    def current_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"`current_epoch` must be a non-negative int. Received: current_epoch={epoch!r}")
        self._current_epoch = epoch

    @property
    def global_step(self) -> int:
        """The optimizer updates done in the whole run (with gradient accumulation, one per window)."""
        return self._global_step

    @abc.abstractmethod
    def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        """One training iteration; returns the batch's summary (floats or 0-dim tensors)."""

    def backward(self, loss: torch.Tensor, /) -> None:
        """Compute the gradients of `loss` (scaled for accumulation and float16 as configured)."""
        if self.accumulate_grad_batches > 1:
            loss = loss / self._window_size()
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        model = self.model
        if (
            self.accumulate_grad_batches > 1
            and not self._at_window_end()
            and isinstance(model, torch.nn.parallel.DistributedDataParallel)
        ):
            with model.no_sync():  # DDP: gradients are averaged across processes once per window
                loss.backward()  # type: ignore[no-untyped-call]
        else:
            loss.backward()  # type: ignore[no-untyped-call]

    def optimize(self) -> None:
        """Update the parameters from their gradients, then clear them (at the end of each accumulation window)."""
        if self.accumulate_grad_batches == 1 or self._at_window_end():
            self.step_optimizer()

    def step_optimizer(self) -> None:
        """Clip the gradients as configured, step the optimizer (through the grad scaler) and clear them."""
        optimizer = self.optimizer
        assert optimizer is not None  # checked by `fit`
        if self.scaler is not None and (self.clip_grad_norm or self.clip_grad_value):
            self.scaler.unscale_(optimizer)
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.clip_grad_norm)
        if self.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(self.raw_model.parameters(), self.clip_grad_value)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self._global_step += 1

    def _at_window_end(self) -> bool:
        step = self._epoch_step + 1
        return step % self.accumulate_grad_batches == 0 or step == self._steps_this_epoch

    def _window_size(self) -> int:
        start = self._epoch_step - self._epoch_step % self.accumulate_grad_batches
        if self._steps_this_epoch is None:
            return self.accumulate_grad_batches
        return min(self.accumulate_grad_batches, self._steps_this_epoch - start)

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
        total_epochs = self._total_epochs = self._check_fit(
            training_dataset, val_dataset, epochs, iterations, initial_epoch, on_nonfinite_loss
        )
        self._on_nonfinite = on_nonfinite_loss
        callbacks = self._callbacks = CallbackList(callbacks_list)
        callbacks.set_manager(self)
        if resume_from is not None:
            payload = self.load_checkpoint(resume_from)
            callbacks.on_load_checkpoint(payload)
        elif initial_epoch is not None:
            self.current_epoch, self._epoch_step, self._resume_rng = initial_epoch, 0, None
        # a checkpoint loaded here or before (`load_checkpoint`, `Experiment(resume=True)`) resumes at its step
        resume_step = self._epoch_step
        if resume_step == 0 and self._resume_rng is not None:
            set_rng_state(self._resume_rng)  # saved at an epoch's end: continue the same random draws
            self._resume_rng = None
        summary: dict[str, float] = {}
        self.stop_training = False
        if self.current_epoch >= total_epochs:
            logger.warning(
                f"Nothing to train: {self.current_epoch} epochs are done and `epochs` asks for {total_epochs} in all "
                "(counting those done); ask for more epochs to continue."
            )
        with self.placed(device, devices, use_multi_gpus):
            training_dataset = distributed.shard(training_dataset)
            val_dataset = distributed.shard(val_dataset) if val_dataset is not None else None
            if iterations is not None:  # counted in this process's batches (its share under torchrun)
                total_epochs = self._total_epochs = math.ceil(iterations / (batches_in(training_dataset) or 1))
            self._start_grad_scaler()
            try:
                self._in_fit, self._packed_structure = True, None
                self.saved_checkpoints = []
                callbacks.on_train_start(self.current_epoch)
                for epoch in range(self.current_epoch, total_epochs):
                    self.current_epoch = epoch
                    limit = self._steps_in_epoch(epoch, iterations, batches_in(training_dataset))
                    train_summary = self._train_epoch(training_dataset, callbacks, limit, resume_step, show_verbose)
                    resume_step = 0
                    val_summary = None
                    if val_dataset is not None:
                        callbacks.on_validation_start(epoch)
                        val_summary = self.run_test(
                            val_dataset, CallbackList(), show_verbose=show_verbose, description="Validation"
                        )
                        callbacks.on_validation_end(epoch, val_summary)
                    self._epoch_step = 0
                    self.current_epoch = epoch + 1  # the epoch is done: a checkpoint now resumes at the next one
                    if not math.isfinite(train_summary.get("loss", 0.0)):
                        self._nonfinite(epoch, train_summary["loss"], on_nonfinite_loss)
                    try:
                        callbacks.on_epoch_end(epoch, train_summary, val_summary)
                    except StopTraining:
                        self.stop_training = True  # stop after the epoch line, together with the other ranks
                    finally:  # after the callbacks, which may add values (e.g. the learning rate)
                        summary = {**train_summary, **{_val_name(k): v for k, v in (val_summary or {}).items()}}
                        self.log_summary(f"Epoch {epoch + 1}/{total_epochs}", summary)
                    if distributed.any_process(self.stop_training):  # one rank stopping stops them all
                        break
            except StopTraining:
                logger.info("Training stopped by a callback.")
            except KeyboardInterrupt:
                logger.warning("Training interrupted (Ctrl-C); returning the model as it is.")
            finally:
                callbacks.on_train_end(self.raw_model)
                self._callbacks = CallbackList()
                self._in_fit, self._packed_structure = False, None
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
        set_epoch = getattr(dataset, "set_epoch", None) or getattr(getattr(dataset, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.current_epoch)
        known = [count for count in (limit, batches_in(dataset)) if count is not None]
        self._steps_this_epoch = min(known) if known else None  # None: the epoch's length is unknown
        progress = self.progress(dataset, f"Epoch {self.current_epoch + 1}/{self._total_epochs}", show_verbose)
        batch_start, batch_end = callbacks.uses("on_batch_start"), callbacks.uses("on_batch_end")
        if skip == 0:
            self._epoch_rng = get_rng_state()  # the data order is drawn from these when iteration starts
        elif self._epoch_rng is not None:
            set_rng_state(self._epoch_rng)  # draw the same order again, then skip what was done
        self._epoch_step = skip
        then_rng, self._resume_rng = (self._resume_rng if skip else None), None
        for x, y in self.batches(dataset, skip, then_rng=then_rng):
            if limit is not None and self._epoch_step >= limit:
                break
            if batch_start:
                callbacks.on_batch_start(self._epoch_step)
            step_summary = self.train_step(x, y)
            self.record(step_summary, x, y, training=True)
            self._epoch_step += 1
            if batch_end:
                callbacks.on_batch_end(self._epoch_step - 1, step_summary)
            if progress.enabled:
                progress.step(lambda: self.epoch_values(training=True))
            if self.stop_training:
                break
        if (
            self.accumulate_grad_batches > 1
            and self._epoch_step % self.accumulate_grad_batches
            and self._steps_this_epoch is None
        ):
            self.step_optimizer()  # the epoch's last, shorter window (its length was unknown)
        if self._epoch_step == 0:
            progress.close()
            raise ValueError(
                f"`training_dataset` yielded no batches in epoch {self.current_epoch + 1}; give a non-empty data set "
                f"(and check `drop_last` with a batch size larger than the data). Received: training_dataset={dataset!r}"
            )
        summary = self.read_epoch(training=True)
        progress.close(summary)
        return summary

    def _check_fit(
        self,
        dataset: DataSource,
        val_dataset: DataSource | None,
        epochs: int | None,
        iterations: int | None,
        initial_epoch: int | None,
        on_nonfinite: str,
    ) -> int:
        """Check `fit`'s arguments; return the total number of epochs."""
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
            raise ValueError(
                f"`on_nonfinite_loss` must be 'raise' or 'stop'. Received: on_nonfinite_loss={on_nonfinite!r}"
            )
        if (epochs is None) == (iterations is None):
            raise ValueError(
                f"Give exactly one of `epochs` and `iterations`. Received: epochs={epochs!r}, iterations={iterations!r}"
            )
        steps = batches_in(dataset)
        count, name = (epochs, "epochs") if epochs is not None else (iterations, "iterations")
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise ValueError(f"`{name}` must be a positive int. Received: {name}={count!r}")
        if steps == 0:
            raise ValueError(f"`training_dataset` {_why_no_batches(dataset)}. Received: training_dataset={dataset!r}")
        if val_dataset is not None and batches_in(val_dataset) == 0:
            raise ValueError(
                f"`val_dataset` {_why_no_batches(val_dataset)} (or pass None). Received: val_dataset={val_dataset!r}"
            )
        self._check_optimizer_params()
        if iterations is not None:
            if steps is None:
                raise ValueError(
                    "`iterations` needs a data set whose number of batches is known (`len`); give `epochs` instead."
                )
            total = math.ceil(iterations / steps)
        else:
            total = count
        if initial_epoch is not None and (
            isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch < total
        ):
            raise ValueError(
                f"`initial_epoch` must be an int in [0, {total}). Received: initial_epoch={initial_epoch!r}"
            )
        return total

    def _check_optimizer_params(self) -> None:
        """An optimizer over none of the model's (or losses') parameters would train nothing."""
        assert self.optimizer is not None
        owned = {id(p) for p in self.raw_model.parameters()}
        for module in self._stream_modules():
            owned.update(id(p) for p in module.parameters())
        optimized = [p for group in self.optimizer.param_groups for p in group["params"]]
        if optimized and not any(id(p) in owned for p in optimized):
            raise ValueError(
                "The `optimizer` holds none of the model's parameters, so training would change nothing; build it from "
                f"this model: `torch.optim.SGD(model.parameters(), ...)`. Received: optimizer over {len(optimized)} other tensors"
            )

    def running_loss(self) -> float | None:
        """The running training loss of the epoch in progress (reads it: a device sync), or None."""
        if self.compiled_losses is None or not self.compiled_losses.calls:
            return None
        return float(self.compiled_losses.values()["loss"])

    # -- the run's state in checkpoints (the hooks of `checkpointing.Checkpointing`) ---------

    def _training_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "epoch": self._current_epoch,
            "step": self._epoch_step,
            "global_step": self._global_step,
            "epoch_rng": self._epoch_rng,
        }
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def _restore_training_state(self, payload: Mapping[str, Any]) -> None:
        self._current_epoch = int(payload.get("epoch", 0))
        self._epoch_step = int(payload.get("step", 0))
        self._global_step = int(payload.get("global_step", 0))
        self._epoch_rng = payload.get("epoch_rng")
        self._resume_rng = payload.get("rng")
        if payload.get("grad_scaler") is not None:
            if self.scaler is not None:
                self.scaler.load_state_dict(payload["grad_scaler"])
            else:
                self._scaler_state = payload["grad_scaler"]  # the scaler is made when `fit` knows the device

    def _check_savable(self, path: str | os.PathLike[str]) -> bool:
        """A non-finite running loss is never saved over a good checkpoint (reading it syncs, once per save)."""
        loss = self.running_loss()
        if loss is None or math.isfinite(loss):
            return True
        epoch = (
            self._current_epoch if self._epoch_step else max(self._current_epoch - 1, 0)
        )  # at an epoch's end it moved on
        consequence = (
            f" at step {self._epoch_step or 'end'}: not saving `{os.fspath(path)}`, the previous checkpoint is kept"
        )
        self._nonfinite(epoch, loss, self._on_nonfinite, consequence)
        return False

    def _saved_checkpoint(self, path: str) -> None:
        if path not in self.saved_checkpoints:
            self.saved_checkpoints.append(path)

    def _model_structure(self, model: torch.nn.Module) -> torch.Tensor | None:
        """Packed once per `fit` (pickling the structure costs more than saving the weights)."""
        if self._in_fit and self._packed_structure is not None and self._packed_structure[0] is model:
            return self._packed_structure[1]
        structure = super()._model_structure(model)
        if self._in_fit:
            self._packed_structure = (model, structure)
        return structure

    def _start_grad_scaler(self) -> None:
        """Float16 training scales its gradients; the scaler is kept across `fit` calls and checkpoints."""
        if needs_grad_scaler(self.precision) and self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device.type)
            if self._scaler_state is not None:
                self.scaler.load_state_dict(self._scaler_state)

    @staticmethod
    def _steps_in_epoch(epoch: int, iterations: int | None, steps_per_epoch: int | None) -> int | None:
        """With `iterations`, the last epoch stops early; otherwise every batch is used."""
        if iterations is None or steps_per_epoch is None:
            return None
        return min(steps_per_epoch, iterations - epoch * steps_per_epoch)

    def _nonfinite(self, epoch: int, loss: float, policy: str, consequence: str = "") -> None:
        """Raise `NonFiniteLossError`, or with the "stop" policy log the error and stop training."""
        message = (
            f"The training loss of epoch {epoch + 1} is {loss}{consequence}; lower the learning rate, clip gradients or "
            "check the data for NaN/inf values, or pass `on_nonfinite_loss='stop'` to stop cleanly instead."
        )
        if policy == "stop":
            logger.error(message)
            self.stop_training = True
        else:
            raise NonFiniteLossError(message)


def _why_no_batches(dataset: DataSource) -> str:
    """Why a data set gives no batches, naming `drop_last` and `batch_size` when they are the cause."""
    batch_size, drop_last = getattr(dataset, "batch_size", None), getattr(dataset, "drop_last", False)
    if drop_last and isinstance(batch_size, int):
        return f"yields 0 batches: with `drop_last=True` it needs at least `batch_size`={batch_size} items; lower `batch_size` or set `drop_last=False`"
    return "is empty (0 batches); give a non-empty data set"


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
