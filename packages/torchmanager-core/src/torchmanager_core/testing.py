"""The testing managers: `BasicTestingManager` (the `test` and `predict` loops) and `TestingManager`.

Who owns what: this module owns what every manager is (model, optimizer, losses, metrics, its
`Placement`), the evaluation pass shared by `test` and `fit`'s validation, `predict`, and saving and
loading checkpoints (the payload itself is built by `checkpointing`). `training` adds `fit`.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import torch

from . import checkpoint, checkpointing, distributed, evaluation_shards
from . import devices as placement_devices
from .callbacks import Callback, CallbackList
from .compiled import CompiledLoss, CompiledMetrics, check_loss_fn, check_metrics, check_summary_names
from .data_pass import DataSource, batches_in, data_pass
from .epoch_values import EpochValues, running
from .errors import ModelError, describe
from .modes import evaluating
from .placement import Devices, Placement
from .progress import EpochProgress, ShowVerbose, logger, wants_progress
from .random import capture_rng_state, restore_rng_state
from .tracking import to_floats
from .version import API_VERSION, Version

__all__ = ["BaseTestingManager", "BasicTestingManager", "DataSource", "Devices", "TestingManager"]

Module = TypeVar("Module", bound=torch.nn.Module)
M = TypeVar("M", bound="BasicTestingManager[Any]")
PathLike = str | os.PathLike[str]


def _check_model_and_optimizer(model: object, optimizer: object) -> None:
    """Raise `TypeError` unless `model` is a module and `optimizer` an optimizer or None (a class gets a hint)."""
    if not isinstance(model, torch.nn.Module):
        if isinstance(model, type):
            raise TypeError(
                f"`model` must be a torch.nn.Module, not its class: build one, {model.__name__}(...). "
                f"Received: model={model!r}"
            )
        raise TypeError(f"`model` must be a torch.nn.Module. Received: model={type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        made = ""
        if isinstance(optimizer, type):
            made = f", built over the model's parameters: {optimizer.__name__}(model.parameters(), lr=...)"
        raise TypeError(f"`optimizer` must be a torch.optim.Optimizer{made} or None. Received: optimizer={optimizer!r}")


class BasicTestingManager(Generic[Module], abc.ABC):
    """A model with its losses and metrics, and the loops that test and predict with it.

    Subclass it and implement `test_step` to define one testing iteration (see `TestingManager`
    for the default one). `Manager[MyModel]` types `model` and `raw_model` as `MyModel`.

    Args:
        model: The model to manage.
        optimizer: Optional optimizer (needed only by `fit`).
        loss_fn: A loss (`fn(y, label) -> scalar tensor`, ours or `torch.nn`), a dict of named
            losses summed (ours apply their `weight` and `target`), or None.
        metrics: Optional dict of named metrics (ours, torchmetrics', or `fn(y, label)` functions).
        precision: "32" (float32), "bf16" (autocast to bfloat16) or "16-mixed" (autocast to
            float16 with gradient scaling) for the forward passes of `fit`, `test` and `predict`.
        compile: Run the model through `torch.compile` (True, or a dict of its keyword arguments).
    Raises:
        TypeError: `model` is not a module, `optimizer` not an optimizer, or a loss or metric is malformed.
        ValueError: An unknown `precision`, an empty loss dict, or a metric named like a loss.
    """

    __test__ = False  # not a pytest test class, despite its name

    model: torch.nn.Module
    """The model being run; wrapped (DataParallel/DDP/torch.compile) while a run needs it."""

    optimizer: torch.optim.Optimizer | None
    """The optimizer `fit` steps."""

    def __init__(
        self,
        model: Module,
        optimizer: torch.optim.Optimizer | None = None,
        loss_fn: Callable[..., Any] | Mapping[str, Callable[..., Any]] | None = None,
        metrics: Mapping[str, Callable[..., Any]] | None = None,
        *,
        precision: str = "32",
        compile: bool | Mapping[str, Any] = False,
    ) -> None:
        _check_model_and_optimizer(model, optimizer)
        self.model = model
        self.optimizer = optimizer
        self._loss_fn = check_loss_fn(loss_fn)
        self._metric_fns = check_metrics(metrics)
        check_summary_names(self._loss_fn, self._metric_fns)
        self.compiled_losses = CompiledLoss(self._loss_fn) if self._loss_fn is not None else None
        self.compiled_metrics = CompiledMetrics(self._metric_fns)
        self._placement = Placement(precision, compile)
        self._evaluation = EpochValues(self, training=False)
        self._passes: list[EpochValues] = []  # the passes running now, innermost last
        self._last_values = self._evaluation  # the pass that ran last (upstream's `summary` reads it)

    # -- what the manager holds ------------------------------------------------------------

    @property
    def raw_model(self) -> Module:
        """The model without its DataParallel/DDP/torch.compile wrapper: what `fit` returns and checkpoints hold."""
        model = self.model
        while True:
            if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
                model = model.module
            elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile's wrapper
                model = model._orig_mod  # type: ignore[assignment]
            else:
                return model  # type: ignore[return-value]

    @property
    def loss_fn(self) -> Callable[..., Any] | dict[str, Callable[..., Any]] | None:
        """The loss or dict of losses; set it to change them (checked as in the constructor)."""
        return self._loss_fn

    @loss_fn.setter
    def loss_fn(self, loss_fn: Callable[..., Any] | Mapping[str, Callable[..., Any]] | None) -> None:
        checked = check_loss_fn(loss_fn)
        check_summary_names(checked, self._metric_fns)
        self._loss_fn = checked
        self.compiled_losses = CompiledLoss(self._loss_fn) if self._loss_fn is not None else None

    @property
    def metric_fns(self) -> dict[str, Callable[..., Any]]:
        """The metrics by name; set it, or change the dict, to change them (checked when a pass starts)."""
        return self._metric_fns

    @metric_fns.setter
    def metric_fns(self, metrics: Mapping[str, Callable[..., Any]] | None) -> None:
        checked = check_metrics(metrics)
        check_summary_names(self._loss_fn, checked)
        self._metric_fns = checked
        self.compiled_metrics = CompiledMetrics(self._metric_fns)

    @property
    def device(self) -> torch.device:
        """The device the current run uses (the CPU between runs)."""
        return self._placement.device

    @property
    def precision(self) -> str:
        """The precision of forward passes: "32", "bf16" or "16-mixed" (see the constructor)."""
        return self._placement.precision

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.raw_model).__name__}, loss_fn={self._loss_fn!r}, metrics={list(self._metric_fns)})"

    # -- extension points ------------------------------------------------------------------

    def unpack_data(self, data: Any) -> tuple[Any, Any]:
        """Split one batch into `(input, label)`; override it for other batch layouts."""
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return data[0], data[1]
        raise TypeError(
            "A batch must be a pair `(x, y)` of input and label; override `unpack_data` for other layouts. "
            f"Received: batch of {describe(data) if not isinstance(data, (tuple, list)) else f'{len(data)} items'}"
        )

    def forward(self, input: Any, target: Any = None) -> tuple[Any, torch.Tensor | None]:
        """Run the model on `input` (autocast to the manager's precision); with a label, also the loss.

        Returns:
            `(y, loss)`: the model output and the total loss (a scalar with its graph), or None
            without a label or `loss_fn`.
        Raises:
            ModelError: The model failed on `input` (the message names its shape).
            LossError: A loss failed on the output and label.
        """
        if self._placement.autocast_dtype is None:  # float32: no context to enter on every batch
            return self._model_and_loss(input, target)
        with self._placement.autocast():
            return self._model_and_loss(input, target)

    def _model_and_loss(self, input: Any, target: Any) -> tuple[Any, torch.Tensor | None]:
        """The body of `forward`, under its precision."""
        try:
            y = self.model(input)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            raise ModelError(
                f"The model failed on an input of {describe(input)}: {error} Check that the data's input fits the "
                f"model (its shape, dtype and device). Received: input of {describe(input)}"
            ) from error
        if target is None or self.compiled_losses is None:
            return y, None
        return y, self.compiled_losses(y, target)

    def eval(self, input: Any, target: Any, training: bool = False) -> dict[str, torch.Tensor]:
        """Update the metrics with a batch's output `input` and label `target`; returns their batch values."""
        return self.compiled_metrics(input, target, training=training)

    @abc.abstractmethod
    def test_step(self, x_test: Any, y_test: Any) -> dict[str, Any]:
        """One testing iteration; returns the batch's summary (floats or 0-dim tensors).

        Values under a loss name are reported as their sample-weighted mean over the pass; metric
        values come from the metrics' own state; any other value is averaged, weighted by batch size.
        """

    def to(self, device: torch.device) -> None:
        """Move the model, losses, metrics and optimizer state to `device`."""
        self.model.to(device)
        for module in self._stream_modules():
            module.to(device)
        placement_devices.move_optimizer_state(self.optimizer, device)
        self._placement.device = device

    def reset_metrics(self) -> None:
        """Forget the losses' and metrics' batches (each pass does it when it starts)."""
        self._evaluation.reset()

    # -- test and predict ------------------------------------------------------------------

    def test(
        self,
        dataset: DataSource,
        /,
        *,
        device: Devices = None,
        devices: Devices = None,
        use_multi_gpus: bool = False,
        show_verbose: ShowVerbose = "auto",
        callbacks_list: Sequence[Callback] | None = None,
        empty_cache: bool = True,
    ) -> dict[str, float]:
        """Evaluate the model on `dataset`: "loss" (with a `loss_fn`) and every metric, as floats.

        Called during `fit` (from a callback), it runs where `fit` runs and leaves the training run
        exactly as it was: its accumulators, the model's placement and every module's mode.

        Args:
            dataset: Batches of `(x, y)`.
            device: Where to run (a device, a name, a CUDA index, or a list for DataParallel);
                by default the best available. `devices` is the same (the README's name).
            use_multi_gpus: Use DataParallel over several given or visible GPUs.
            show_verbose: Show a progress bar: True, False, or "auto" (in an interactive terminal only).
            callbacks_list: Callbacks whose `on_test_*` hooks are called.
            empty_cache: Release cached CUDA memory afterwards.
        Returns:
            The summary of the whole data set: under torchrun every process evaluates its share of
            the batches (each sample once) and reports the values of them all.
        Raises:
            ValueError: `dataset` yielded no batches (in any process).
        """
        callbacks = CallbackList(callbacks_list)
        callbacks.set_manager(self)
        with self._placement.place(self, device, devices, use_multi_gpus, empty_cache=empty_cache):
            callbacks.on_test_start()
            summary = self._evaluate(dataset, callbacks, show_verbose, "Test")
            callbacks.on_test_end(summary)
        return summary

    def _evaluate(
        self, dataset: DataSource, callbacks: CallbackList, show_verbose: ShowVerbose, description: str
    ) -> dict[str, float]:
        """One pass of `test_step` over `dataset` where the run is placed (validation uses it too).

        Under torchrun each process takes its whole batches of `dataset` (`evaluation_shards.split`:
        each sample once, no padding, a share may be empty) and every process reads the values of all.
        """
        self._sync_streams()
        share = evaluation_shards.split(dataset)
        values = self._evaluation
        values.believe_steps = type(self).test_step is not TestingManager.test_step
        progress = EpochProgress(
            batches_in(share), description, wants_progress(show_verbose) and distributed.is_main_process()
        )
        batch_start, batch_end = callbacks.uses("on_test_batch_start"), callbacks.uses("on_test_batch_end")
        steps = 0
        self._last_values = values
        with running(self._passes, values), self._evaluation_model(), torch.no_grad():
            for x, y, _ in data_pass(share, self._unpacker(share), self.device):
                if batch_start:
                    callbacks.on_test_batch_start(steps)
                summary = self.test_step(x, y)
                values.record(summary, x, y)
                if batch_end:
                    callbacks.on_test_batch_end(steps, summary)
                steps += 1
                if progress.enabled:
                    progress.step(values.tensors)
            if not evaluation_shards.join(values, steps > 0, self.device):
                progress.close()
                what, name = (
                    ("to validate on", "val_dataset") if description == "Validation" else ("to test on", "dataset")
                )
                raise ValueError(
                    f"The data set {what} yielded no batches; give a non-empty data set. Received: {name}={dataset!r}"
                )
            result = values.read()
        progress.close(result)
        if not result and self.compiled_losses is None and not self._metric_fns:
            logger.warning(
                f"{description} has nothing to report: the manager has no `loss_fn` and no `metrics`, and `test_step` "
                "returned no values. Give them to the manager (a manager restored with `from_checkpoint(path, model=...)` "
                "gets them with `loss_fn=` and `metrics=`)."
            )
        return result

    def predict(
        self,
        dataset: DataSource,
        /,
        *,
        device: Devices = None,
        devices: Devices = None,
        use_multi_gpus: bool = False,
        show_verbose: ShowVerbose = "auto",
        empty_cache: bool = True,
    ) -> list[Any]:
        """The model's outputs for each batch of `dataset` (inputs, or `(x, y)` pairs), on the CPU.

        Under torchrun each process runs its whole batches of `dataset` (each sample once) and
        every process returns the outputs of all the batches, in the data set's order.

        Raises:
            ValueError: `dataset` yielded no batches (in any process).
        """
        outputs: list[Any] = []
        with self._placement.place(self, device, devices, use_multi_gpus, empty_cache=empty_cache):
            share = evaluation_shards.split(dataset)
            progress = EpochProgress(
                batches_in(share), "Predict", wants_progress(show_verbose) and distributed.is_main_process()
            )
            with self._evaluation_model(), torch.no_grad():
                for x, _, _ in data_pass(share, _input_only, self.device):
                    y, _ = self.forward(x)
                    outputs.append(placement_devices.move_to_device(_detached(y), placement_devices.CPU))
                    progress.step(dict)  # no values to show: just advance
            progress.close()
            outputs = evaluation_shards.gather(outputs, share)
        if not outputs:
            raise ValueError(
                f"The data set to predict on yielded no batches; give a non-empty data set. Received: dataset={dataset!r}"
            )
        return outputs

    # -- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self, path: PathLike) -> None:
        """Write a checkpoint of the manager atomically (a crash leaves any previous file intact).

        Only the main process writes; every process learns whether it could (a failed write raises its
        `CheckpointError` on each, naming the path and the reason). During `fit`,
        a call from a batch-end or epoch-end hook is a request: the loop writes the file once every
        callback has had that hook, so the checkpoint holds every callback's state of the same moment.
        """
        payload = self._payload()
        error = distributed.on_main_process(lambda: checkpoint.save(payload, path))
        if error is not None:
            raise error  # on every process alike: none is left waiting for the others

    def load_checkpoint(self, path: PathLike, *, map_location: Any = None, trusted: bool = False) -> dict[str, Any]:
        """Restore the model, optimizer, losses, metrics and the run's position from `path`.

        Everything is checked before anything is loaded: a refused checkpoint leaves the manager as it was.

        Returns:
            The checkpoint's payload.
        Raises:
            FileNotFoundError: No file at `path`.
            CheckpointError: The file is not a checkpoint of ours, is corrupt, or holds another model.
        """
        payload = checkpointing.read(path, map_location=map_location, trusted=trusted)
        self._restore(payload, os.fspath(path))
        return payload

    @classmethod
    def from_checkpoint(
        cls: type[M],
        path: PathLike,
        *,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        loss_fn: Any = None,
        metrics: Mapping[str, Callable[..., Any]] | None = None,
        map_location: Any = None,
        trusted: bool = False,
        **kwargs: Any,
    ) -> M:
        """A manager restored from a checkpoint, with the options it was saved with; no code from the file runs unless `trusted`.

        Args:
            path: The checkpoint file.
            model: The model to load the weights into. Without it, the model object is rebuilt
                from the file, which runs code from it: only with `trusted=True`.
            optimizer: The optimizer to restore; by default a `torch.optim` optimizer of the saved
                class is rebuilt over the model's parameters.
            loss_fn: The losses of the manager (their saved states are restored).
            metrics: The metrics of the manager (their saved states are restored).
            map_location: Where to load the tensors (default the CPU).
            trusted: Allow code from the file to run (to rebuild the model object).
            **kwargs: More arguments of the manager class's constructor (a subclass's own); they
                override the saved options (precision, compile, accumulation, clipping).
        Raises:
            CheckpointError: No `model=` without trust or without a saved structure, or the file
                does not fit the given model, optimizer, losses or metrics.
        """
        payload = checkpointing.read(path, map_location=map_location, trusted=trusted)
        model = model if model is not None else checkpointing.rebuild_model(payload, path, trusted, map_location)
        if optimizer is None:
            optimizer = checkpointing.rebuild_optimizer(payload, model)
        manager = checkpointing.construct(cls, payload, model, optimizer, loss_fn, metrics, kwargs)
        manager._restore(payload, os.fspath(path))
        return manager

    def _payload(self) -> dict[str, Any]:
        """The checkpoint's content (see `checkpointing.payload`)."""
        return checkpointing.payload(
            self.raw_model, self.optimizer, self._saved_values(), self._options(), self._model_structure
        )

    def _restore(self, payload: Mapping[str, Any], source: str) -> None:
        """Put a checkpoint's payload back, after checking all of it."""
        checkpointing.restore(payload, self.raw_model, self.optimizer, self._saved_values(), source)

    def _saved_values(self) -> EpochValues:
        """The running values a checkpoint keeps: the evaluation's here, the training epoch's in a training manager."""
        return self._evaluation

    def _model_structure(self, model: torch.nn.Module) -> torch.Tensor | None:
        """The model's pickled structure for a checkpoint, or None when it cannot be pickled."""
        return checkpointing.pack_structure(model)

    def _options(self) -> dict[str, Any]:
        """The constructor options a checkpoint keeps, so `from_checkpoint` makes the same manager."""
        return {"precision": self.precision, "compile": checkpointing.plain_compile_option(self._placement.compile)}

    def _apply_options(self, options: Mapping[str, Any]) -> None:
        """Set saved options a subclass's constructor did not take (see `checkpointing.construct`)."""
        self._placement = Placement(
            options.get("precision", self.precision), options.get("compile", self._placement.compile)
        )

    # -- upstream torchmanager 1.5's members, for code written for it -------------------------

    version: Version = API_VERSION
    """The API version of the manager (upstream's attribute; `convert` had version migrations to do)."""

    @property
    def compiled(self) -> bool:
        """Whether the manager can train: it has a `loss_fn` and an `optimizer` (upstream's check)."""
        return self._loss_fn is not None and self.optimizer is not None

    @property
    def compiled_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer (upstream's name).

        Raises:
            ValueError: The manager has no optimizer.
        """
        if self.optimizer is None:
            raise ValueError(
                f"The manager has no optimizer: pass one to {type(self).__name__}(model, optimizer, ...). Received: optimizer=None"
            )
        return self.optimizer

    @property
    def raw_loss_fn(self) -> Callable[..., Any] | dict[str, Callable[..., Any]] | None:
        """The loss without a DataParallel wrapper: here, `loss_fn` (losses are never wrapped)."""
        return self._loss_fn

    @property
    def loss_dict(self) -> dict[str, Callable[..., Any]]:
        """The losses by summary name: {"loss": loss_fn} for one loss, {"<name>_loss": ...} for a dict."""
        if self._loss_fn is None:
            return {}
        if isinstance(self._loss_fn, dict):
            return {f"{name}_loss": fn for name, fn in self._loss_fn.items()}
        return {"loss": self._loss_fn}

    @property
    def summary(self) -> dict[str, float]:
        """The values of the last (or running) pass so far, as floats, this process's share (reading them syncs)."""
        values = self._passes[-1] if self._passes else self._last_values
        return to_floats({name: value for name, value in values.tensors().items() if value.numel() == 1})

    def data_parallel(
        self,
        target_devices: Sequence[torch.device],
        *,
        parallel_type: type[torch.nn.DataParallel[Any]] = torch.nn.DataParallel,
    ) -> bool:
        """Wrap the model in `parallel_type` over the CUDA `target_devices` (upstream's method).

        `fit(..., use_multi_gpus=True)` does it itself; torchrun with DDP is the faster way.

        Returns:
            Whether the model is now parallel (two CUDA devices or more).
        """
        cuda = [device for device in target_devices if device.type == "cuda"]
        if len(cuda) < 2:
            return False
        self.model, parallel = placement_devices.data_parallel(self.raw_model, cuda, parallel_type=parallel_type)
        return parallel

    def reset(self, cpu: torch.device = placement_devices.CPU) -> None:
        """Unwrap the model and move the model, losses, metrics and optimizer state to `cpu`; empty the CUDA cache."""
        self.model = self.raw_model
        self.to(cpu)
        placement_devices.empty_cache()

    def convert(self) -> None:
        """Upstream's migration of a manager loaded from an older version: nothing to migrate here."""

    def state_dict(self) -> dict[str, Any]:
        """The model, optimizer, loss and metric state dicts, as upstream's `state_dict` gave them."""
        modules = {name: fn for name, fn in self._metric_fns.items() if isinstance(fn, torch.nn.Module)}
        loss = self._loss_fn
        return {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "loss_fn": loss.state_dict() if isinstance(loss, torch.nn.Module) else None,
            "metrics": {name: fn.state_dict() for name, fn in modules.items()},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load what `state_dict` gave (upstream's layout)."""
        self.raw_model.load_state_dict(state_dict["model"])
        if self.optimizer is not None and state_dict.get("optimizer") is not None:
            self.optimizer.load_state_dict(state_dict["optimizer"])
        if isinstance(self._loss_fn, torch.nn.Module) and state_dict.get("loss_fn") is not None:
            self._loss_fn.load_state_dict(state_dict["loss_fn"])
        for name, state in (state_dict.get("metrics") or {}).items():
            fn = self._metric_fns.get(name)
            if isinstance(fn, torch.nn.Module):
                fn.load_state_dict(state)

    def to_checkpoint(self) -> Any:
        """Upstream's `Checkpoint` object pickled the whole manager; it is not made here.

        Raises:
            NotImplementedError: Always, with the replacement.
        """
        raise NotImplementedError(
            "`to_checkpoint` made upstream's `Checkpoint` object, which pickled the whole manager; save a checkpoint "
            "with `manager.save_checkpoint(path)` and restore it with `Manager.from_checkpoint(path, model=...)` "
            "(state dicts only: loading runs no code). Received: to_checkpoint()"
        )

    def __enter__(self: M) -> M:
        """Upstream's training mode: the model, losses and metrics in train mode, their values reset."""
        for module in (self.model, *self._stream_modules()):
            module.train()
        self.reset_metrics()
        return self

    def __exit__(self, *exc: object) -> None:
        """Upstream's end of training: the model, losses and metrics in eval mode."""
        for module in (self.model, *self._stream_modules()):
            module.eval()

    # -- the machinery the loops share -----------------------------------------------------

    def _unpacker(self, dataset: DataSource) -> Callable[[Any], tuple[Any, Any]]:
        """How the batches of `dataset` split into `(x, y)`: its own `unpack_data`, else the manager's."""
        unpack: Callable[[Any], tuple[Any, Any]] = getattr(dataset, "unpack_data", None) or self.unpack_data
        return unpack

    @contextlib.contextmanager
    def _evaluation_model(self) -> Iterator[None]:
        """Evaluate with the model, losses and metrics in eval mode (each module's mode comes back after).

        Inside a `fit`, the random state (torch's, CUDA's, numpy's, Python's) comes back after too.

        Under DDP the raw model evaluates, after one broadcast of rank 0's buffers: DDP's forward may
        start collectives that a process with fewer evaluation batches would never join.
        """
        wrapped = self.model if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) else None
        # inside a `fit`, evaluating draws nothing from the run's random streams (a DataLoader's iterator
        # draws a seed): with or without validation, or a `test()` from a callback, training goes on alike
        random_state = capture_rng_state() if self._fitting_now() else None
        with evaluating([self.raw_model, *self._stream_modules()]):
            if wrapped is not None:
                distributed.broadcast_buffers(self.raw_model)
                self.model = self.raw_model
            try:
                yield
            finally:
                if wrapped is not None:
                    self.model = wrapped
                if random_state is not None:
                    restore_rng_state(random_state)

    def _fitting_now(self) -> bool:
        """Whether a `fit` of this manager is running (a testing manager never fits)."""
        return False

    def _sync_streams(self) -> None:
        """Follow changes made to the `metric_fns` or `loss_fn` dicts in place (once per pass, never per step)."""
        if not _same_items(self._metric_fns, self.compiled_metrics.fns):
            self.metric_fns = dict(self._metric_fns)
        if isinstance(self._loss_fn, dict) and self.compiled_losses is not None:
            if not _same_items(self._loss_fn, self.compiled_losses.fns):
                self.loss_fn = dict(self._loss_fn)

    def _stream_modules(self) -> Iterator[torch.nn.Module]:
        if self.compiled_losses is not None:
            yield from self.compiled_losses.modules()
        yield from self.compiled_metrics.modules()


def _same_items(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.keys() == b.keys() and all(a[key] is b[key] for key in a)


def _input_only(batch: Any) -> tuple[Any, None]:
    """A prediction batch: the input of an `(x, y)` pair, or the batch itself."""
    return (batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch), None


def _detached(data: Any) -> Any:
    return data.detach() if isinstance(data, torch.Tensor) else data


BaseTestingManager = BasicTestingManager
"""Upstream torchmanager 1.5's name."""


class TestingManager(BasicTestingManager[Module]):
    """A manager with the default testing step: forward, loss, metrics."""

    def test_step(self, x_test: Any, y_test: Any) -> dict[str, Any]:
        """Forward the batch, compute the loss (when there is a `loss_fn`) and update the metrics."""
        y, loss = self.forward(x_test, y_test)
        summary: dict[str, Any] = {} if loss is None else {"loss": loss.detach()}
        summary.update(self.eval(_detached(y), y_test, training=False))
        return summary
