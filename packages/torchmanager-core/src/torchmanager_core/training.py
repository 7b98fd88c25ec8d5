"""The training managers: `BasicTrainingManager` (the `fit` loop) and `TrainingManager` (its default step).

Who owns what: `fit` reads top to bottom: check the arguments, resume if asked, place the model,
then for each epoch train (`_train`), validate, end the epoch (log, history, callbacks, requested
checkpoints, the stop agreed by every process). Where the run is lives in one `RunState`; the
step (`train_step`, `backward`, `optimize`) is the extension point, and nothing in it waits for
the device.
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch

from . import checkpoint, distributed, evaluation_shards, preemption
from .callbacks import Callback, CallbackList
from .data_pass import DataSource, batches_in, data_pass, set_epoch
from .epoch_values import EpochValues, running
from .errors import NonFiniteLossError, Preempted, StopTraining
from .progress import (
    EpochProgress,
    RunEta,
    ShowVerbose,
    VerboseType,
    add_console,
    log_model,
    log_summary,
    logger,
    wants_progress,
)
from .run_state import CheckpointErrorPolicy, NonFinitePolicy, RandomSnapshot, RunState
from .testing import BasicTestingManager, Devices, TestingManager
from .tracking import merge_summaries

__all__ = ["BaseTrainingManager", "BasicTrainingManager", "Manager", "TrainingManager"]

Module = TypeVar("Module", bound=torch.nn.Module)
PathLike = str | os.PathLike[str]


_MANAGER_OPTIONS = ("accumulate_grad_batches", "clip_grad_norm", "clip_grad_value", "precision", "compile")
"""Options a manager takes when it is made, which Lightning and Keras users may give to `fit`."""


class BasicTrainingManager(BasicTestingManager[Module], abc.ABC):
    """A manager that trains: the `fit` loop around an abstract `train_step`.

    Subclass it and implement `train_step` (and `test_step`) to define one iteration; `backward`
    and `optimize` are the default gradient and update steps a `train_step` may call, and `_train`
    (one epoch) may be overridden as upstream torchmanager allowed.

    Args (keyword-only, besides those of `BasicTestingManager`):
        accumulate_grad_batches: Sum the gradients of this many batches before each optimizer
            step (each batch's loss is divided by the window's size; an epoch's last, shorter
            window steps too, with its gradients scaled to its real size).
        clip_grad_norm: Clip the gradients' total L2 norm to this value before each step.
        clip_grad_value: Clip each gradient element to [-value, value] before each step.
    Raises:
        ValueError: A step option is not a positive number.
    """

    def __init__(
        self,
        *args: Any,
        accumulate_grad_batches: int = 1,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.accumulate_grad_batches = accumulate_grad_batches
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self._run = RunState()
        self._training = EpochValues(self, training=True)
        self._structure: tuple[torch.nn.Module, torch.Tensor | None] | None = None  # packed once per fit

    # -- options and the run's state ------------------------------------------------------------

    @property
    def accumulate_grad_batches(self) -> int:
        """Batches whose gradients are summed before each optimizer step."""
        return self._accumulate

    @accumulate_grad_batches.setter
    def accumulate_grad_batches(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`accumulate_grad_batches` must be a positive int. Received: accumulate_grad_batches={value!r}"
            )
        self._accumulate = value

    @property
    def clip_grad_norm(self) -> float | None:
        """The L2 norm the gradients are clipped to before each step, or None."""
        return self._clip_norm

    @clip_grad_norm.setter
    def clip_grad_norm(self, value: float | None) -> None:
        self._clip_norm = _positive_or_none(value, "clip_grad_norm")

    @property
    def clip_grad_value(self) -> float | None:
        """The bound each gradient element is clipped to before each step, or None."""
        return self._clip_value

    @clip_grad_value.setter
    def clip_grad_value(self, value: float | None) -> None:
        self._clip_value = _positive_or_none(value, "clip_grad_value")

    @property
    def current_epoch(self) -> int:
        """The index of the epoch in progress during `fit`; the number of epochs done afterwards."""
        return self._run.epoch

    @current_epoch.setter
    def current_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"`current_epoch` must be a non-negative int. Received: current_epoch={epoch!r}")
        self._run.start_at(epoch)

    @property
    def global_step(self) -> int:
        """Optimizer updates done in the whole run (one per accumulation window), across `fit` calls and resumes."""
        return self._run.global_step

    @property
    def batch_index(self) -> int:
        """The index, within its epoch, of the batch being trained (batches done, between batches)."""
        return self._run.step

    @property
    def stop_training(self) -> bool:
        """Set it (from a callback or a step) to end `fit` at the next batch boundary, on every process."""
        return self._run.stop

    @stop_training.setter
    def stop_training(self, stop: bool) -> None:
        self._run.stop = bool(stop)

    @property
    def history(self) -> list[dict[str, float]]:
        """The summary of each epoch of the run, `history[i]` for epoch i + 1 (Keras's `History`).

        Validation values are prefixed "val_". A `fit` that continues the run (a later call, a resume
        from a checkpoint of this version) keeps the earlier epochs; one that starts again at epoch
        0 (`initial_epoch=0`) starts a new history.
        """
        return self._run.history

    @property
    def saved_checkpoints(self) -> list[str]:
        """The checkpoint files the last `fit` wrote, each once, in the order first written."""
        return self._run.saved_checkpoints

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """The float16 gradient scaler (`precision="16-mixed"`), made by the first `fit`."""
        return self._placement.scaler

    # -- the step --------------------------------------------------------------------------------

    @abc.abstractmethod
    def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        """One training iteration; returns the batch's summary (floats or 0-dim tensors).

        What it returns is what the epoch reports: values under a loss name (`loss`, `<name>_loss`)
        become their sample-weighted epoch mean, whatever the loss objects saw (a step calling
        `forward` twice reports what it returned); metric values come from the metrics' own state
        (exact over the epoch); any other value is averaged, weighted by batch size.
        """

    def backward(self, loss: torch.Tensor, /) -> None:
        """Compute the gradients of `loss` (divided by the accumulation window's size, scaled for float16)."""
        accumulate, run = self._accumulate, self._run
        if accumulate > 1:
            loss = loss / run.window_size(accumulate)
        scaler = self._placement.scaler
        if scaler is not None:
            loss = scaler.scale(loss)
        model = self.model
        if (
            accumulate > 1
            and not run.window_end(accumulate)
            and isinstance(model, torch.nn.parallel.DistributedDataParallel)
        ):
            with model.no_sync():  # DDP: gradients are averaged across processes once per window
                loss.backward()  # type: ignore[no-untyped-call]
        else:
            loss.backward()  # type: ignore[no-untyped-call]

    def optimize(self) -> None:
        """Update the parameters from their gradients and clear them, at the end of each accumulation window."""
        if self._accumulate == 1 or self._run.window_end(self._accumulate):
            self._step_optimizer()

    def _step_optimizer(self) -> None:
        """Scale a short last window's gradients to its size, clip, step the optimizer (through the scaler), clear."""
        optimizer, run, scaler = self.optimizer, self._run, self._placement.scaler
        assert optimizer is not None  # checked by `fit`
        if self._accumulate > 1:
            expected, done = run.window_size(self._accumulate), run.step % self._accumulate + 1
            if done != expected:  # the epoch ended before the window its length promised
                _scale_gradients(optimizer, expected / done)
        if scaler is not None and (self._clip_norm or self._clip_value):
            scaler.unscale_(optimizer)
        if self._clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self._clip_norm)
        if self._clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.raw_model.parameters(), self._clip_value)
        if scaler is not None:
            before = run.global_step
            scaler.step(optimizer)
            scaler.update()
            if run.active and run.global_step == before:
                run.global_step += 1  # the scaler skipped a step with inf/NaN gradients: the window still counts
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # -- fit -------------------------------------------------------------------------------------

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
        show_verbose: ShowVerbose = "auto",
        resume_from: PathLike | None = None,
        on_nonfinite_loss: NonFinitePolicy = "raise",
        on_checkpoint_error: CheckpointErrorPolicy = "raise",
        **kwargs: Any,
    ) -> Any:
        """Train the model and return it (unwrapped), with the last epoch's summary if asked.

        Args:
            training_dataset: Batches of `(x, y)`: a torchmanager `Dataset`, a `DataLoader`, a list, any iterable.
            epochs: How many epochs to train in all (counting those already done); or give `iterations`.
            val_dataset: Optional batches to validate on after each epoch (reported as `val_<name>`).
            callbacks_list: Callbacks, called at the hooks they override (each gets `manager` first).
            iterations: How many batches to train in all (this process's share under torchrun), instead of `epochs`.
            initial_epoch: The epoch index to start from (default: `current_epoch`).
            return_summary: Return `(model, summary)` instead of the model.
            device: Where to train (a device, a name, a CUDA index, or a list for DataParallel);
                by default the best available. `devices` is the same (the README's name).
            use_multi_gpus: Use DataParallel over several given or visible GPUs.
            show_verbose: Show a progress bar per epoch, one line an epoch with its validation values and the
                run's time left: True, False, or "auto" (the default: in an interactive terminal only;
                otherwise, and in log files, one summary line an epoch).
            resume_from: A checkpoint of this run to continue from, at the batch where it was
                written (a callback such as `Experiment(resume=True)` may give it instead).
            on_nonfinite_loss: "raise" a `NonFiniteLossError` when an epoch's loss is NaN or
                infinite, or "stop" training cleanly.
            on_checkpoint_error: When a checkpoint cannot be written (disk full, quota, permissions):
                "raise" its `CheckpointError` (naming the path and the reason), which stops training
                on every process, or "continue": log the error and train on. Either way the
                previous file at that path is kept, complete.
            **kwargs: Passed on to `_train` (for subclasses that take more, as upstream allowed).
        Returns:
            The trained raw model, or `(model, summary)` with `return_summary=True`; `summary` is the
            last epoch's, validation values prefixed "val_".
        Raises:
            ValueError, TypeError: Bad arguments (checked before anything trains).
            NonFiniteLossError: An epoch's loss is NaN or infinite with `on_nonfinite_loss="raise"`.
            CheckpointError: A checkpoint could not be written, with `on_checkpoint_error="raise"`.
            Preempted: SIGTERM or SIGUSR1 came during `fit` (main thread): training stopped after the
                optimizer update in progress, every process at the same step, the run was saved to
                its `LastCheckpoint` path (an `Experiment`'s `last.model`) if it has one, and the
                process exits with code 128 + the signal's number (143, 138) unless this is caught.

        A stop between two batches (the `stop_training` flag, `StopTraining` from a batch hook) ends the
        run after that batch, on every process: that epoch is neither validated nor ended, so a
        checkpoint or a later `fit` goes on from that batch.
        """
        total = self._check_fit(
            training_dataset, val_dataset, epochs, iterations, initial_epoch, on_nonfinite_loss, on_checkpoint_error
        )
        self._check_train_kwargs(kwargs)
        run, callbacks = self._run, self._callbacks(callbacks_list)
        self._resume(resume_from if resume_from is not None else callbacks.resume_checkpoint(), initial_epoch)
        run.start(total, on_nonfinite_loss, on_checkpoint_error)
        if run.epoch >= run.total_epochs and iterations is None:
            logger.warning(
                f"Nothing to train: the run is already at epoch {run.epoch} and `epochs={run.total_epochs}` counts "
                f"the epochs done too; pass epochs={run.epoch + 1} or more to train on."
            )
        resumed = run.take_resumed_callbacks()
        if resumed is not None:
            callbacks.on_load_checkpoint(resumed)  # every callback of the list, whichever checkpoint resumed the run
        with self._placement.place(self, device, devices, use_multi_gpus), self._fitting(callbacks):
            training_dataset = run.data = distributed.shard(training_dataset)
            val_dataset = evaluation_shards.split(val_dataset) if val_dataset is not None else None
            if iterations is not None:  # counted in this process's batches (its share under torchrun)
                run.total_epochs = math.ceil(iterations / (batches_in(training_dataset) or 1))
            self._placement.start_grad_scaler()
            if run.step == 0 and run.resume_rng is not None:  # saved at an epoch's end: the same random draws follow
                run.resume_rng.restore(training_dataset)
                run.resume_rng = None
            self._warn_if_all_eval()
            log_model(self.raw_model, self.device, self.precision)
            per_epoch = batches_in(training_dataset)
            run.eta = RunEta(
                per_epoch * run.total_epochs if per_epoch is not None and iterations is None else iterations,
                (run.epoch * per_epoch if per_epoch is not None else 0) + run.step,
            )
            try:
                callbacks.on_train_start(run.epoch)
                while run.epoch < run.total_epochs and not run.stop:
                    self._sync_streams()
                    self._last_values = self._training
                    with running(self._passes, self._training, fresh=run.step == 0):
                        callbacks.on_epoch_start(run.epoch)
                        limit = _limit(run.epoch, iterations, batches_in(training_dataset))
                        summary = self._train(
                            training_dataset,
                            iterations=limit,
                            device=self.device,
                            use_multi_gpus=use_multi_gpus,
                            callbacks_list=callbacks,
                            show_verbose=show_verbose,
                            **kwargs,
                        )
                        if run.stopped_mid_epoch:  # the epoch goes on at the next fit
                            shown = run.close_progress(summary)
                            log_summary(
                                f"Stopped after batch {run.step} of epoch {run.epoch + 1}", summary, console=not shown
                            )
                            break
                        val_summary = self._validate(val_dataset, callbacks)
                        self._end_epoch(summary, val_summary, callbacks)
            except StopTraining:
                logger.info("Training stopped by a callback.")
            except KeyboardInterrupt:
                logger.warning("Training interrupted (Ctrl-C); returning the model as it is.")
            finally:
                run.close_progress()
                distributed.broadcast_buffers(self.raw_model)  # every process returns rank 0's BatchNorm statistics
                run.active = False
                callbacks.on_train_end(self.raw_model)
        model = self.raw_model
        return (model, run.history[-1] if run.history else {}) if return_summary else model

    def _train(
        self,
        dataset: DataSource,
        /,
        iterations: int | None = None,
        *args: Any,
        device: torch.device | None = None,
        use_multi_gpus: bool = False,
        callbacks_list: Iterable[Callback] | None = None,
        show_verbose: ShowVerbose = False,
        verbose_type: VerboseType = VerboseType.ALL,
        **kwargs: Any,
    ) -> dict[str, float]:
        """Train one epoch over `dataset` (at most `iterations` batches) and return its summary floats.

        `fit` calls it once per epoch, where the run is placed (`device` and `use_multi_gpus` are
        upstream's arguments, kept for subclasses; they are already in effect). A resumed epoch
        replays its data order and skips the batches its checkpoint had done. Its progress bar
        (`show_verbose`, showing `verbose_type`'s values) stays open: `fit` closes it with the
        epoch's whole summary, validation included.

        Raises:
            ValueError: The epoch yielded no batch at all.
        """
        run, values = self._run, self._training
        callbacks = callbacks_list if isinstance(callbacks_list, CallbackList) else CallbackList(callbacks_list)
        values.believe_steps = type(self).train_step is not TrainingManager.train_step
        set_epoch(dataset, run.epoch)
        known = [count for count in (iterations, batches_in(dataset)) if count is not None]
        run.steps_in_epoch = min(known) if known else None
        skip, after_skip = self._replay_data_order(dataset)
        progress = run.progress = EpochProgress(
            run.steps_in_epoch,
            f"Epoch {run.epoch + 1}/{run.total_epochs}",
            wants_progress(show_verbose) and distributed.is_main_process(),
            eta=run.eta,
            verbose_type=verbose_type,
        )
        batch_start, batch_end = callbacks.uses("on_batch_start"), callbacks.uses("on_batch_end")
        for x, y, last in data_pass(dataset, self._unpacker(dataset), self.device, skip=skip, after_skip=after_skip):
            run.last_batch = last or (iterations is not None and run.step + 1 >= iterations)
            if batch_start:
                self._dispatch(callbacks.on_batch_start, run.step)
            summary = self.train_step(x, y)
            if summary or not isinstance(summary, dict):  # the default step returns {} when nothing reads it
                values.record(summary, x, y)
            run.step += 1
            if batch_end:
                self._dispatch(callbacks.on_batch_end, run.step - 1, summary)
                self._write_requested_checkpoints()
            if progress.enabled:
                progress.step(values.tensors)
            if run.agree_each_step or run.signal is not None:
                preempted_by = self._agree_to_stop(at_update=run.window_done(self._accumulate))
                if preempted_by:
                    run.close_progress()
                    self._preempt(preempted_by)  # before the values are read: reading reduces them across processes
            if run.stop or run.last_batch:
                break
        if run.step == 0:
            run.close_progress()
            raise ValueError(
                f"`training_dataset` yielded no batches in epoch {run.epoch + 1}; give a non-empty data set (and "
                f"check `drop_last` with a batch size larger than the data). Received: training_dataset={dataset!r}"
            )
        return values.read()

    def _replay_data_order(self, dataset: DataSource) -> tuple[int, Any]:
        """Where the epoch's batches start: (0, None) fresh, else the batches to skip and what to do after."""
        run = self._run
        if run.step == 0:
            run.epoch_rng = RandomSnapshot.take(dataset)  # the data order is drawn from these when iteration starts
            return 0, None
        if run.epoch_rng is not None:
            run.epoch_rng.restore(dataset)  # draw the same order again, then skip what was done
        resumed, run.resume_rng = run.resume_rng, None
        return run.step, (lambda: resumed.restore(dataset)) if resumed is not None else None

    def _validate(self, dataset: DataSource | None, callbacks: CallbackList) -> dict[str, float] | None:
        """Validate on `dataset` (None: no validation) with its own accumulators; the training epoch's stay as they are."""
        if dataset is None:
            return None
        epoch = self._run.epoch
        callbacks.on_validation_start(epoch)
        summary = self._evaluate(dataset, CallbackList(), False, "Validation")  # the epoch's bar shows its values
        callbacks.on_validation_end(epoch, summary)
        return summary

    def _end_epoch(
        self, summary: dict[str, float], val_summary: dict[str, float] | None, callbacks: CallbackList
    ) -> None:
        """Report the epoch, call `on_epoch_end`, write the checkpoints it asked for, and agree on stopping."""
        run = self._run
        epoch = run.epoch
        summary.update(self._learning_rates())
        run.end_epoch()  # the epoch is done: a checkpoint written now resumes at the next one
        if not math.isfinite(summary.get("loss", 0.0)):
            self._nonfinite(epoch, summary["loss"])
        merged = merge_summaries(summary, val_summary)
        run.history.append(merged)
        shown = run.close_progress(merged)  # the epoch's one line, validation values appended
        log_summary(f"Epoch {epoch + 1}/{run.total_epochs}", merged, console=not shown)
        self._dispatch(callbacks.on_epoch_end, epoch, summary, val_summary)
        self._write_requested_checkpoints()
        preempted_by = self._agree_to_stop(at_update=True)  # one process stopping stops them all, at this epoch's end
        if preempted_by:
            self._preempt(preempted_by)

    def _dispatch(self, hook: Any, *args: Any) -> None:
        """Call a hook of the callback list: saves asked for during it are requests, and `StopTraining` sets the stop flag."""
        run = self._run
        run.dispatching = True
        try:
            hook(*args)
        except StopTraining as stop:
            run.stop = True
            if stop.args:
                logger.info(str(stop.args[0]))
        finally:
            run.dispatching = False

    # -- checkpoints of the run ---------------------------------------------------------------------

    def save_checkpoint(self, path: PathLike) -> None:
        """Write a checkpoint of the manager and its run atomically (a crash leaves any previous file intact).

        Only the main process writes, and every process learns whether it could. During `fit`, a call
        from a batch-end or epoch-end hook is a request: the loop writes the file once every callback
        has had that hook, so the checkpoint holds every callback's state of the same moment; a write
        that fails then follows `fit`'s `on_checkpoint_error`.

        Raises:
            CheckpointError: The file could not be written (outside `fit`, or with `on_checkpoint_error="raise"`).
        """
        run = self._run
        if run.active and run.dispatching:
            if os.fspath(path) not in run.checkpoint_requests:
                run.checkpoint_requests.append(os.fspath(path))
            return
        self._write(os.fspath(path))

    def _write(self, path: str) -> bool:
        """Write the checkpoint at `path` now (the main process writes, every process learns the outcome); whether it was."""
        run = self._run
        if not self._savable(path):
            return False
        payload = self._payload()
        error = distributed.on_main_process(lambda: checkpoint.save(payload, path))
        if error is not None:
            if not (
                run.active and run.on_checkpoint_error == "continue" and isinstance(error, checkpoint.CheckpointError)
            ):
                raise error
            if distributed.is_main_process():
                add_console()
                logger.error(f"Checkpoint not saved, training goes on (on_checkpoint_error='continue'): {error}")
            return False
        if run.active and path not in run.saved_checkpoints:
            run.saved_checkpoints.append(path)
        return True

    def _write_requested_checkpoints(self) -> None:
        requests, self._run.checkpoint_requests = self._run.checkpoint_requests, []
        for path in requests:
            self.save_checkpoint(path)

    def _savable(self, path: str) -> bool:
        """A non-finite training loss is never saved over a good checkpoint (reading it syncs, once per save)."""
        run = self._run
        if not self._passes or self._passes[0] is not self._training:
            return True
        loss = self._training.tensors().get("loss")
        value = float(loss) if loss is not None else 0.0
        if not distributed.any_process(not math.isfinite(value)):  # every process decides alike
            return True
        epoch = run.epoch if run.step else max(run.epoch - 1, 0)  # at an epoch's end it moved on
        where = f"at step {run.step}" if run.step else "at its end"
        self._nonfinite(epoch, value, f" {where}: not saving `{path}`, the previous checkpoint is kept")
        return False

    def _payload(self) -> dict[str, Any]:
        run = self._run
        data = super()._payload()
        data.update(run.state_dict())
        data["grad_scaler"] = self._placement.grad_scaler_state()
        data["callbacks"] = {}
        if run.callbacks is not None:
            run.callbacks.on_save_checkpoint(data)
        return data

    def _restore(self, payload: Mapping[str, Any], source: str) -> None:
        super()._restore(payload, source)
        self._run.load_state_dict(payload)
        self._placement.load_grad_scaler_state(payload.get("grad_scaler"))

    def _saved_values(self) -> EpochValues:
        return self._training

    def _model_structure(self, model: torch.nn.Module) -> torch.Tensor | None:
        """Packed once per `fit` (pickling the structure costs more than saving the weights)."""
        if self._structure is None or self._structure[0] is not model:
            self._structure = (model, super()._model_structure(model))
        return self._structure[1]

    def _apply_options(self, options: Mapping[str, Any]) -> None:
        super()._apply_options(options)
        for name in ("accumulate_grad_batches", "clip_grad_norm", "clip_grad_value"):
            if name in options:
                setattr(self, name, options[name])

    def _options(self) -> dict[str, Any]:
        return {
            **super()._options(),
            "accumulate_grad_batches": self._accumulate,
            "clip_grad_norm": self._clip_norm,
            "clip_grad_value": self._clip_value,
        }

    # -- the machinery of fit -----------------------------------------------------------------------

    def _callbacks(self, callbacks_list: Sequence[Callback] | None) -> CallbackList:
        """The run's callback list, each callback given this manager (its hooks were checked when listed)."""
        callbacks = CallbackList(callbacks_list)
        callbacks.set_manager(self)
        return callbacks

    def _resume(self, path: PathLike | None, initial_epoch: int | None) -> None:
        """Continue from the checkpoint at `path`, or start at `initial_epoch`; else go on from where the run is."""
        if path is not None:
            self.load_checkpoint(path)
        elif initial_epoch is not None:
            self._run.start_at(initial_epoch)

    @contextlib.contextmanager
    def _fitting(self, callbacks: CallbackList) -> Iterator[None]:
        """The run in progress: its callbacks, preemption signals deferred, the optimizer updates counted, the
        structure packed once."""
        run, optimizer = self._run, self.optimizer
        assert optimizer is not None  # checked by `fit`
        with preemption.deferred_signals(run) as deferred:
            run.callbacks = callbacks
            # a signal reaches the processes at different moments: they agree after each batch
            run.agree_each_step = distributed.is_distributed() and (deferred or self._may_stop_mid_epoch(callbacks))
            # whether anything reads a step's values: a custom step may, a callback that says so does
            run.step_values_read = (
                type(self).train_step is not TrainingManager.train_step or callbacks.reads_batch_summary
            )
            counting = optimizer.register_step_post_hook(lambda *_: self._count_update())
            self._structure = None
            try:
                yield
            finally:
                counting.remove()
                run.callbacks, run.data, run.active, self._structure = None, None, False, None

    def _agree_to_stop(self, at_update: bool) -> int:
        """Whether every process stops now: a callback's stop, or (at an optimizer-update boundary) a preemption
        signal one of them received; returns that signal's number (the largest any process received), or 0."""
        run = self._run
        signum = run.signal if at_update and run.signal is not None else 0
        stop, signum = distributed.max_over_processes([int(run.stop), signum])
        run.stop = bool(stop or signum)
        return signum

    def _preempt(self, signum: int) -> None:
        """Save the run where every process stopped for signal `signum`, log where in one line, raise `Preempted`."""
        run = self._run
        run.signal = None  # acted on: not raised again when `fit` ends
        paths = run.callbacks.preemption_checkpoints() if run.callbacks is not None else []
        preempted = Preempted(signum, [path for path in paths if self._write(path)])
        if distributed.is_main_process():
            where = (
                f"after batch {run.step} of epoch {run.epoch + 1}" if run.step else f"at the end of epoch {run.epoch}"
            )
            if preempted.checkpoints:
                outcome = f"the run was saved to {', '.join(preempted.checkpoints)}"
            elif paths:
                outcome = f"the run was not saved (writing {', '.join(paths)} failed)"
            else:
                outcome = "nothing was saved (no LastCheckpoint or Experiment in `callbacks_list`)"
            again = " Run the same command again to resume." if preempted.checkpoints else ""
            add_console()
            logger.warning(
                f"{preempted.signal.name} received: training stopped {where} (optimizer update {run.global_step}), "
                f"{outcome}; exiting with code {preempted.code}.{again}"
            )
        raise preempted

    def _count_update(self) -> None:
        self._run.global_step += 1

    def _may_stop_mid_epoch(self, callbacks: CallbackList) -> bool:
        """Whether a stop can be decided between two batches (then every process checks the flag each step)."""
        custom = (
            type(self).train_step is not TrainingManager.train_step
            or type(self)._train is not BasicTrainingManager._train
        )
        return custom or callbacks.uses("on_batch_start") or callbacks.uses("on_batch_end")

    def _warn_if_all_eval(self) -> None:
        """`fit` keeps each module's train/eval mode; a model wholly in eval mode is worth a word."""
        model = self.raw_model
        if any(True for _ in model.modules()) and not any(module.training for module in model.modules()):
            logger.warning(
                f"Every module of the model ({type(model).__name__}) is in eval mode, so `fit` trains it that way "
                "(dropout off, BatchNorm statistics frozen); call `model.train()` before `fit` to train it as usual. "
                "`fit` keeps the mode of each module as you set it."
            )

    def _learning_rates(self) -> dict[str, float]:
        """The learning rate of each parameter group: `lr`, or `lr_0`, `lr_1`, ... for several groups."""
        assert self.optimizer is not None
        rates = [float(group["lr"]) for group in self.optimizer.param_groups if "lr" in group]
        if len(rates) == 1:
            return {"lr": rates[0]}
        return {f"lr_{i}": rate for i, rate in enumerate(rates)}

    def _nonfinite(self, epoch: int, loss: float, consequence: str = "") -> None:
        """Raise `NonFiniteLossError`, or with the "stop" policy log the error and stop training."""
        message = (
            f"The training loss of epoch {epoch + 1} is {loss}{consequence}; lower the learning rate, clip gradients or "
            "check the data for NaN/inf values, or pass `on_nonfinite_loss='stop'` to stop cleanly instead."
        )
        if self._run.on_nonfinite == "stop":
            logger.error(message)
            self._run.stop = True
        else:
            raise NonFiniteLossError(message)

    def _check_fit(
        self,
        dataset: DataSource,
        val_dataset: DataSource | None,
        epochs: int | None,
        iterations: int | None,
        initial_epoch: int | None,
        on_nonfinite: str,
        on_checkpoint_error: str,
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
        if on_checkpoint_error not in ("raise", "continue"):
            raise ValueError(
                "`on_checkpoint_error` must be 'raise' or 'continue'. "
                f"Received: on_checkpoint_error={on_checkpoint_error!r}"
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
        for source, source_name in ((dataset, "training_dataset"), (val_dataset, "val_dataset")):
            if isinstance(source, Iterator) and epochs is not None and epochs > 1:
                raise ValueError(
                    f"`{source_name}` is an iterator (a generator, `iter(...)`), which can be read only once, and `fit` "
                    f"reads it in each of the {epochs} epochs: give a list, a "
                    f"torchmanager Dataset, a DataLoader or another iterable that starts again on each `iter()`. "
                    f"Received: {source_name}={source!r}"
                )
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

    def _fitting_now(self) -> bool:
        return self._run.active

    def _check_train_kwargs(self, kwargs: Mapping[str, Any]) -> None:
        """Refuse keywords `fit` passes to `_train` that no `_train` takes (a typo, a manager option).

        A subclass overriding `_train` may take more, as upstream allowed; this one takes `verbose_type`.
        """
        unknown = sorted(set(kwargs) - {"verbose_type"})
        if not unknown or type(self)._train is not BasicTrainingManager._train:
            return
        options = [name for name in unknown if name in _MANAGER_OPTIONS]
        hint = (
            f" {', '.join(f'`{name}`' for name in options)} is an option of the manager: "
            f"{type(self).__name__}(model, optimizer, ..., {options[0]}=...)."
            if options
            else " Check the spelling against `fit`'s arguments."
        )
        raise TypeError(
            f"`fit` got keyword arguments it does not take: {', '.join(unknown)}.{hint} "
            f"Received: {', '.join(f'{name}={kwargs[name]!r}' for name in unknown)}"
        )

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


def _positive_or_none(value: float | None, name: str) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        raise ValueError(f"`{name}` must be a positive number or None. Received: {name}={value!r}")
    return value


def _scale_gradients(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is not None:
                parameter.grad.mul_(factor)


def _limit(epoch: int, iterations: int | None, steps_per_epoch: int | None) -> int | None:
    """With `iterations`, the last epoch stops early; otherwise every batch is used."""
    if iterations is None or steps_per_epoch is None:
        return None
    return min(steps_per_epoch, iterations - epoch * steps_per_epoch)


def _why_no_batches(dataset: DataSource) -> str:
    """Why a data set gives no batches, naming `drop_last` and `batch_size` when they are the cause."""
    batch_size, drop_last = getattr(dataset, "batch_size", None), getattr(dataset, "drop_last", False)
    if drop_last and isinstance(batch_size, int):
        return f"yields 0 batches: with `drop_last=True` it needs at least `batch_size`={batch_size} items; lower `batch_size` or set `drop_last=False`"
    return "is empty (0 batches); give a non-empty data set"


BaseTrainingManager = BasicTrainingManager
"""Upstream torchmanager 1.5's name."""


class TrainingManager(BasicTrainingManager[Module], TestingManager[Module]):
    """The default manager: forward, loss, backward, optimizer step, metrics; and `test`.

    Example:
        manager = Manager(model, optimizer, loss_fn=CrossEntropy(), metrics={"accuracy": SparseCategoricalAccuracy()})
        model = manager.fit(training_dataset, epochs=10, val_dataset=val_dataset)
    """

    def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        """Forward, loss, gradients, update, metrics; returns the batch values as device tensors.

        When nothing reads them (decided once per `fit`: the default step, no callback reading a
        batch summary), the metrics count the batch without making its values and it returns `{}`:
        the epoch's values are the same.
        """
        y, loss = self.forward(x_train, y_train)
        assert loss is not None  # `fit` checked that there is a loss_fn
        if not loss.requires_grad:
            raise RuntimeError(
                "The loss does not depend on any trainable parameter (it has no gradient); check that the model's "
                "parameters require grad and that the loss is computed from the model output."
            )
        self.backward(loss)
        self.optimize()
        y = y.data if isinstance(y, torch.Tensor) else y  # read by the metrics only: `.data` costs half `.detach()`
        if not self._run.step_values_read and type(self).eval is BasicTestingManager.eval:
            self.compiled_metrics.update_state(y, y_train, training=True)  # nothing reads the batch values
            return {}
        summary: dict[str, Any] = {"loss": loss.detach()}
        summary.update(self.eval(y, y_train, training=True))
        return summary


Manager = TrainingManager
"""The manager most users want: `Manager(model, optimizer, loss_fn, metrics).fit(...)`."""
