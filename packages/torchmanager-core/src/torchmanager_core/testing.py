"""The testing managers: `BasicTestingManager` (the `test` and `predict` loops) and `TestingManager`.

Who owns what: this module owns what every manager has (model, optimizer, losses, metrics, device
placement, one pass over a data set); `training` adds the `fit` loop; `checkpointing` the files.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import torch

from . import devices as placement
from . import distributed
from .callbacks import Callback, CallbackList
from .checkpointing import Checkpointing
from .compiled import CompiledLoss, CompiledMetrics, check_loss_fn, check_metrics
from .errors import ModelError, describe
from .precision import autocast_dtype, check_precision
from .progress import EpochProgress, add_console, format_summary, logger
from .random import set_rng_state
from .tracking import MeanTracker, count_samples, to_floats

__all__ = ["BaseTestingManager", "BasicTestingManager", "TestingManager"]

DataSource: TypeAlias = Iterable[Any]
"""Anything iterable yielding `(x, y)` batches: a torchmanager `Dataset`, a `DataLoader`, a list."""
_warned_non_scalar: set[str] = set()
Devices: TypeAlias = placement.DeviceLike | Sequence[placement.DeviceLike] | None


def batches_in(dataset: DataSource) -> int | None:
    """The number of batches an epoch over `dataset` yields, when it is known without iterating."""
    batched_len = getattr(dataset, "batched_len", None)
    if isinstance(batched_len, int):
        return batched_len
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


class BasicTestingManager(Checkpointing, abc.ABC):
    """A model with its losses and metrics, and the loops that test and predict with it.

    Subclass it and implement `test_step` to define one testing iteration (see `TestingManager`
    for the default one).

    Args:
        model: The model to manage.
        optimizer: Optional optimizer (needed only by `fit`).
        loss_fn: A loss (`fn(y, label) -> scalar tensor`, ours or `torch.nn`), a dict of named
            losses summed (ours apply their `weight` and `target`), or None.
        metrics: Optional dict of named metrics (ours, torchmetrics', or `fn(y, label)` functions).
        precision: "32" (float32), "bf16" (autocast to bfloat16) or "16-mixed" (autocast to
            float16 with gradient scaling) for the forward passes of `fit`, `test` and `predict`.
        compile: Run the model through `torch.compile` (True, or a dict of its keyword arguments).
    """

    __test__ = False  # not a pytest test class, despite its name

    model: torch.nn.Module
    """The model being run; wrapped (DataParallel/DDP) while a run uses several devices."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        loss_fn: Callable[..., Any] | Mapping[str, Callable[..., Any]] | None = None,
        metrics: Mapping[str, Callable[..., Any]] | None = None,
        *,
        precision: str = "32",
        compile: bool | Mapping[str, Any] = False,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module. Received: model={type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"`optimizer` must be a torch.optim.Optimizer or None. Received: optimizer={optimizer!r}")
        self.model = model
        self.optimizer = optimizer
        self._loss_fn = check_loss_fn(loss_fn)
        self._metric_fns = check_metrics(metrics)
        self.compiled_losses = CompiledLoss(self._loss_fn) if self._loss_fn is not None else None
        self.compiled_metrics = CompiledMetrics(self._metric_fns)
        self._extras = MeanTracker()  # values a step reports beyond the losses and metrics
        self._callbacks = CallbackList()  # those of the run in progress: they add their state to checkpoints
        self._owned: set[str] | None = None
        self._device = placement.CPU
        self.precision = check_precision(precision)
        self._autocast = autocast_dtype(self.precision)
        if not isinstance(compile, (bool, Mapping)):
            raise TypeError(
                f"`compile` must be a bool or a dict of torch.compile keyword arguments. Received: compile={compile!r}"
            )
        self._compile = compile

    # -- what the manager holds ------------------------------------------------------------

    @property
    def raw_model(self) -> torch.nn.Module:
        """The model without its DataParallel/DDP wrapper: what `fit` returns and checkpoints hold."""
        model = self.model
        while True:
            if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
                model = model.module
            elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile's wrapper
                model = model._orig_mod  # type: ignore[assignment]
            else:
                return model

    @property
    def loss_fn(self) -> Callable[..., Any] | dict[str, Callable[..., Any]] | None:
        """The loss or dict of losses given to the constructor."""
        return self._loss_fn

    @property
    def metric_fns(self) -> dict[str, Callable[..., Any]]:
        """The metrics given to the constructor, by name."""
        return self._metric_fns

    @property
    def device(self) -> torch.device:
        """The device the current run uses (the CPU between runs)."""
        return self._device

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
        """Run the model on `input`; with a label, also the loss. Returns `(y, loss or None)`."""
        if self._autocast is None:
            return self._forward(input, target)
        with torch.autocast(device_type=self._device.type, dtype=self._autocast):
            return self._forward(input, target)

    def _forward(self, input: Any, target: Any) -> tuple[Any, torch.Tensor | None]:
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
        """Update the metrics with a batch's output `input` and label `target`; their batch values."""
        return self.compiled_metrics(input, target, training=training)

    @abc.abstractmethod
    def test_step(self, x_test: Any, y_test: Any) -> dict[str, Any]:
        """One testing iteration; returns the batch's summary (floats or 0-dim tensors)."""

    def to(self, device: torch.device) -> None:
        """Move the model, losses, metrics and optimizer state to `device`."""
        self.model.to(device)
        for module in self._stream_modules():
            module.to(device)
        placement.move_optimizer_state(self.optimizer, device)
        self._device = device

    def reset_metrics(self) -> None:
        """Forget the losses', metrics' and extra values' batches (at each epoch start)."""
        if self.compiled_losses is not None:
            self.compiled_losses.reset()
        self.compiled_metrics.reset()
        self._extras.reset()
        self._owned = None

    # -- test and predict ------------------------------------------------------------------

    def test(
        self,
        dataset: DataSource,
        /,
        *,
        device: Devices = None,
        devices: Devices = None,
        use_multi_gpus: bool = False,
        show_verbose: bool = False,
        callbacks_list: Sequence[Callback] | None = None,
        empty_cache: bool = True,
    ) -> dict[str, float]:
        """Evaluate the model on `dataset`: "loss" (with a `loss_fn`) and every metric, as floats.

        Args:
            dataset: Batches of `(x, y)`.
            device: Where to run (a device, a name, a CUDA index, or a list for DataParallel);
                by default the best available. `devices` is the same (the README's name).
            use_multi_gpus: Use DataParallel over several given or visible GPUs.
            show_verbose: Show a progress bar.
            callbacks_list: Callbacks whose `on_test_*` hooks are called.
            empty_cache: Release cached CUDA memory afterwards.
        """
        callbacks = CallbackList(callbacks_list)
        with self.placed(device, devices, use_multi_gpus, empty_cache=empty_cache):
            callbacks.on_test_start()
            summary = self.run_test(
                distributed.shard(dataset), callbacks, show_verbose=show_verbose, description="Test"
            )
            callbacks.on_test_end(summary)
        return summary

    def run_test(
        self, dataset: DataSource, callbacks: CallbackList, *, show_verbose: bool, description: str
    ) -> dict[str, float]:
        """One pass of `test_step` over `dataset` on the current device (validation uses it too)."""
        self.model.eval()
        self.reset_metrics()
        progress = self.progress(dataset, description, show_verbose)
        steps = 0
        with torch.no_grad():
            for steps, (x, y) in enumerate(self.batches(dataset), 1):
                if callbacks.uses("on_test_batch_start"):
                    callbacks.on_test_batch_start(steps - 1)
                summary = self.test_step(x, y)
                self.record(summary, x, y, training=False)
                if callbacks.uses("on_test_batch_end"):
                    callbacks.on_test_batch_end(steps - 1, summary)
                if progress.enabled:
                    progress.step(lambda: self.epoch_values(training=False))
        if steps == 0:
            progress.close()
            raise ValueError(
                f"The data set to test on yielded no batches; give a non-empty data set. Received: dataset={dataset!r}"
            )
        result = self.read_epoch(training=False)
        progress.close(result)
        return result

    def predict(
        self,
        dataset: DataSource,
        /,
        *,
        device: Devices = None,
        devices: Devices = None,
        use_multi_gpus: bool = False,
        show_verbose: bool = False,
        empty_cache: bool = True,
    ) -> list[Any]:
        """The model's outputs for each batch of `dataset` (inputs, or `(x, y)` pairs), on the CPU."""
        outputs: list[Any] = []
        with self.placed(device, devices, use_multi_gpus, empty_cache=empty_cache), torch.no_grad():
            self.model.eval()
            progress = self.progress(dataset, "Predict", show_verbose)
            for batch in dataset:
                x = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch
                y, _ = self.forward(placement.move_to_device(x, self._device))
                outputs.append(devices_move(y, placement.CPU))
                progress.step(dict)  # no values to show: just advance
            progress.close()
        if not outputs:
            raise ValueError(
                f"The data set to predict on yielded no batches; give a non-empty data set. Received: dataset={dataset!r}"
            )
        return outputs

    # -- the machinery the loops share -----------------------------------------------------

    @contextlib.contextmanager
    def placed(
        self, device: Devices, devices_: Devices, use_multi_gpus: bool, *, empty_cache: bool = True
    ) -> Iterator[None]:
        """Run the body with everything on the chosen device(s); move back to the CPU afterwards.

        Under torchrun each process uses its local device and the model is wrapped in
        DistributedDataParallel; `use_multi_gpus` in a single process wraps it in DataParallel.
        """
        raw = self.raw_model
        if any(t.is_meta for t in (*raw.parameters(), *raw.buffers())):
            raise ValueError(
                "The `model` has weights on the 'meta' device (created without data); load its weights first, e.g. "
                "`model.load_state_dict(state_dict, assign=True)` (`to_empty()` would leave them uninitialised). "
                f"Received: model={type(raw).__name__} on meta"
            )
        if distributed.init_from_environment():
            # the process's own device, unless the script names one (e.g. the CPU on a GPU machine)
            main = (
                distributed.local_device()
                if device is None and devices_ is None
                else placement.select(device, devices_)[0]
            )
            self.to(main)
            if distributed.is_distributed():
                ids = [main.index] if main.type == "cuda" else None
                self.model = torch.nn.parallel.DistributedDataParallel(raw, device_ids=ids)
        else:
            main, targets = placement.select(device, devices_)
            self.to(main)
            if placement.use_data_parallel(targets, use_multi_gpus):
                self.model = placement.data_parallel(raw, targets)
        if self._compile is not False:
            self.model = torch.compile(self.model, **({} if self._compile is True else dict(self._compile)))  # type: ignore[assignment]
        try:
            yield
        finally:
            self.model = raw
            self.to(placement.CPU)
            if empty_cache:
                placement.empty_cache()

    def batches(
        self, dataset: DataSource, skip: int = 0, then_rng: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[Any, Any]]:
        """`(x, y)` pairs from `dataset` on the run's device (moved non-blocking).

        To resume, the first `skip` batches are drawn and dropped, then the random generators are
        set to `then_rng` (their state when the run being resumed had done those batches).
        """
        unpack = getattr(dataset, "unpack_data", None) or self.unpack_data
        device = self._device
        iterator = iter(dataset)
        for _ in range(skip):
            next(iterator, None)
        if then_rng is not None:
            set_rng_state(then_rng)
        for batch in iterator:
            x, y = unpack(batch)
            yield placement.move_to_device(x, device), placement.move_to_device(y, device)

    def record(self, summary: Mapping[str, Any], x: Any, y: Any, *, training: bool) -> None:
        """Add a step's summary to the epoch: values the losses and metrics do not keep are averaged here,
        weighted by the batch size of `(x, y)`."""
        if not isinstance(summary, Mapping):
            raise TypeError(
                f"`{'train' if training else 'test'}_step` must return a dict of summary values (floats or 0-dim tensors). "
                f"Received: {type(summary).__name__}"
            )
        if self._owned is None:
            owned: set[str] = set()
            if self.compiled_losses is not None and self.compiled_losses.calls:
                owned.update(self.compiled_losses.owned)
            if self.compiled_metrics.calls:
                owned.update(self.compiled_metrics.owned(training))
            self._owned = owned
        n = 0
        for name, value in summary.items():
            if name not in self._owned:
                n = n or count_samples(x, y)
                self._extras.update(name, value, n)

    def read_epoch(self, *, training: bool) -> dict[str, float]:
        """The epoch's values as floats, combined over all processes when distributed (one sync)."""
        if distributed.is_distributed():
            for module in self._stream_modules():
                distributed.reduce_states(module)
            for tracker in self._trackers():
                tracker.all_reduce()
        values = self.epoch_values(training=training)
        scalars = {name: value for name, value in values.items() if value.numel() == 1}
        for name in values.keys() - scalars.keys():
            if name not in _warned_non_scalar:
                _warned_non_scalar.add(name)
                logger.warning(
                    f"`{name}` is not a scalar (shape {tuple(values[name].shape)}), so it is left out of the summary; "
                    f"read it from `manager.metric_fns[{name!r}].result`."
                )
        return to_floats(scalars)

    def epoch_values(self, *, training: bool) -> dict[str, torch.Tensor]:
        """The epoch's values so far, as tensors (reading them as floats syncs with the device)."""
        values: dict[str, torch.Tensor] = {}
        if self.compiled_losses is not None and self.compiled_losses.calls:
            values.update(self.compiled_losses.values())
        values.update(self.compiled_metrics.values(training))
        values.update(self._extras.means())
        return values

    def progress(self, dataset: DataSource, description: str, show_verbose: bool) -> EpochProgress:
        """A progress bar over one pass of `dataset` (drawn on the main process only)."""
        return EpochProgress(batches_in(dataset), description, show_verbose and distributed.is_main_process())

    def log_summary(self, prefix: str, summary: Mapping[str, float]) -> None:
        """Log one summary line to the "torchmanager" logger (and the console) on the main process."""
        if distributed.is_main_process():
            add_console()
            logger.info(f"{prefix}: {format_summary(summary)}")

    def _trackers(self) -> Iterator[MeanTracker]:
        if self.compiled_losses is not None:
            yield self.compiled_losses.tracker
        yield self.compiled_metrics.tracker
        yield self._extras

    def _stream_modules(self) -> Iterator[torch.nn.Module]:
        if self.compiled_losses is not None:
            yield from self.compiled_losses.modules()
        yield from self.compiled_metrics.modules()


def devices_move(data: Any, device: torch.device) -> Any:
    """Move outputs (tensors nested in dicts, lists, tuples) to `device`, detached."""
    return placement.move_to_device(data.detach() if isinstance(data, torch.Tensor) else data, device)


BaseTestingManager = BasicTestingManager
"""Upstream torchmanager 1.5's name."""


class TestingManager(BasicTestingManager):
    """A manager with the default testing step: forward, loss, metrics."""

    def test_step(self, x_test: Any, y_test: Any) -> dict[str, Any]:
        """Forward the batch, compute the loss (when there is a `loss_fn`) and update the metrics."""
        y, loss = self.forward(x_test, y_test)
        summary: dict[str, Any] = {} if loss is None else {"loss": loss.detach()}
        summary.update(self.eval(y.detach() if isinstance(y, torch.Tensor) else y, y_test, training=False))
        return summary
