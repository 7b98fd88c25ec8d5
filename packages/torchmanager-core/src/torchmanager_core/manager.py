"""`Manager`: what the user configured (model, optimizer, losses, metrics, options) and the extension points.

Who owns what: the manager holds its parts and options and defines the steps a subclass may
override (`train_step`, `test_step`, `forward`, `backward`, `optimize`, `unpack_data`, `_train`);
`fit`, `test` and `predict` hand over to the loop (`loop/`), which owns the run. Upstream
torchmanager 1.5's extra members are in `upstream_members`, its class names in `compat`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch

from .callbacks import Callback
from .checkpointing import CheckpointMembers
from .devices import move_optimizer_state
from .epoch_values import EpochValues
from .errors import ModelError, describe, failure_message
from .loop import checks, evaluate, update
from .loop.epoch import DataSource, train_epoch
from .loop.fit import fit as run_fit
from .loop.options import FitOptions
from .loop.plan import default
from .loop.run import CheckpointErrorPolicy, NonFinitePolicy, Run, RunPosition
from .model_summary import model_summary
from .optimizers import Optimizers
from .options import Option
from .parts import LossesAndMetrics
from .precision import check_precision, select_precision
from .progress import ShowVerbose, VerboseType, wants_progress
from .strategy import (
    Devices,
    OptimizerLike,
    Strategy,
    StrategyOption,
    check_strategy,
    optimizer_or_factory,
    placed,
    unwrap,
)
from .upstream_members import UpstreamMembers

__all__ = ["DataSource", "Devices", "Manager"]

Module = TypeVar("Module", bound=torch.nn.Module)
M = TypeVar("M", bound="Manager[Any]")
PathLike = str | os.PathLike[str]


class Manager(LossesAndMetrics, RunPosition, CheckpointMembers, UpstreamMembers, Generic[Module]):
    """A model with its optimizer, losses and metrics, and the loops that train, test and predict with it: override
    a step (`train_step`, `test_step`) to change one iteration; `Manager[MyModel]` types `model` and `raw_model`.

    Args:
        model: The `torch.nn.Module` to train, test and predict with (a `ModuleDict` for several, see `optimizer`).
        optimizer: Needed only by `fit`: an optimizer; a dict of them by name (a GAN's, with a
            `ModuleDict` model: `manager.optimizer["gen"]`; see `Optimizers`); or a function of the
            parameters building one (`lambda params: AdamW(params, lr=1e-3)`), called with the parameters
            as the run places them (FSDP2's shards; at once when the model is not to be sharded).
        loss_fn: A loss (`fn(y, label) -> scalar tensor`, ours or `torch.nn`), a dict of named losses
            summed (ours apply their `weight` and `target`), or None.
        metrics: A dict of named metrics (ours, torchmetrics', or `fn(y, label)` functions).
        precision: "32", "bf16-mixed", "16-mixed" (float16 autocast, gradients scaled) or "bf16-true".
        compile: Run the model through `torch.compile` (True, or a dict of its keyword arguments).
        accumulate_grad_batches: Sum the gradients of this many batches before each update (each loss / its window's size).
        clip_grad_norm, clip_grad_value: Clip the gradients' total L2 norm, or each element, before each update.
        strategy: "auto" (DDP under torchrun, else DataParallel with `use_multi_gpus`, else one
            device; FSDP2 for a model sharded with `fully_shard`), "single", "dp", "ddp", "fsdp" (FSDP2,
            under torchrun), or a strategy such as `strategy.DDP(find_unused_parameters=True)` or
            `strategy.fsdp.FSDP2Strategy(units=(Block,))`.
    Raises:
        TypeError: A model, optimizer, loss or metric of the wrong kind.
        ValueError: An unknown `precision` or `strategy`, an empty loss dict, clashing summary names,
            or a step option that is not a positive number.
    """

    __test__ = False  # not a pytest test class

    model: torch.nn.Module
    """The model being run; wrapped by the run's strategy (DataParallel, DDP, torch.compile) while a run needs it."""

    optimizer: torch.optim.Optimizer | None
    """The optimizer `fit` steps (None until a run builds it, when a factory waits for the model's shards)."""

    def __init__(
        self,
        model: Module,
        optimizer: OptimizerLike | Mapping[str, torch.optim.Optimizer] | None = None,
        loss_fn: Callable[..., Any] | Mapping[str, Callable[..., Any]] | None = None,
        metrics: Mapping[str, Callable[..., Any]] | None = None,
        *,
        precision: str = "32",
        compile: bool | Mapping[str, Any] = False,
        accumulate_grad_batches: int = 1,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        strategy: StrategyOption = "auto",
    ) -> None:
        optimizer = Optimizers(optimizer) if isinstance(optimizer, Mapping) else optimizer  # several, by name
        checks.check_model_and_optimizer(model, optimizer)
        self.model = model
        self._strategy_option = check_strategy(strategy)
        self.optimizer, self._optimizer_factory = optimizer_or_factory(model, optimizer, self._strategy_option)
        self._loss_fn, self._metric_fns = None, {}
        self.loss_fn, self.metric_fns = loss_fn, metrics  # checked (and compiled) as a later change would be
        self.precision = precision
        if not isinstance(compile, (bool, Mapping)):
            raise TypeError(
                f"`compile` must be a bool or a dict of torch.compile keyword arguments. Received: compile={compile!r}"
            )
        self._compile = compile
        self._strategy: Strategy | None = None  # the strategy of the run in progress
        self.accumulate_grad_batches = accumulate_grad_batches
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self._run = Run()
        self._training = EpochValues(self, training=True)
        self._evaluation = EpochValues(self, training=False)
        self._passes: list[EpochValues] = []  # the passes running now, innermost last
        self._last_values = self._evaluation  # the pass that ran last (upstream's `summary` reads it)
        self._plan: Any = None  # the `loop.plan.Plan` of the `fit` in progress
        self._dispatch: Any = None  # the `loop.dispatch.Dispatch` of the `fit` in progress

    # -- what the manager holds --------------------------------------------------------------

    @property
    def raw_model(self) -> Module:
        """The model without its DataParallel/DDP/torch.compile wrapper: what `fit` returns and checkpoints hold."""
        return unwrap(self.model)  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        """The device the current run uses (the CPU between runs); a subclass may assign its own value (upstream
        1.5 left the name free), which the loop does not read."""
        return self.__dict__.get("_user_device") or self._run_device

    @device.setter
    def device(self, device: Any) -> None:
        self.__dict__["_user_device"] = device

    @property
    def _run_device(self) -> torch.device:
        return self._strategy.device if self._strategy is not None else torch.device("cpu")

    @property
    def precision(self) -> str:
        """The precision option: "32", "bf16-mixed" ("bf16"), "16-mixed" ("16") or "bf16-true" (see the class)."""
        return self._precision_option

    @precision.setter
    def precision(self, precision: object) -> None:
        self._precision_option = check_precision(precision)
        self._precision = select_precision(self._precision_option)

    accumulate_grad_batches = Option(checks.positive_int, "Batches whose gradients are summed before each update.")
    clip_grad_norm = Option(
        checks.positive_or_none, "The L2 norm gradients are clipped to before each update, or None."
    )
    clip_grad_value = Option(checks.positive_or_none, "The bound each gradient element is clipped to, or None.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.raw_model).__name__}, loss_fn={self._loss_fn!r}, metrics={list(self._metric_fns)})"

    if not TYPE_CHECKING:  # to a type checker a missing member stays an error

        def __getattr__(self, name: str) -> Any:
            """Only for a member that is missing: Keras's `evaluate`, `compile`, ... say what does their work here."""
            if hasattr(type(self), name):  # a property whose getter raised AttributeError: its own error, not ours
                return object.__getattribute__(self, name)
            raise checks.missing_member(self, name)

    # -- extension points ----------------------------------------------------------------------

    @default
    def unpack_data(self, data: Any) -> tuple[Any, Any]:
        """Split one batch into `(input, label)`: a pair's items, a longer tuple's first two, a dict's first two values."""
        if isinstance(data, (tuple, list)) and len(data) >= 2:  # upstream took the first two of longer batches
            return data[0], data[1]
        if isinstance(data, Mapping) and len(data) >= 2:  # and a dict's first two values
            x, y, *_ = data.values()
            return x, y
        raise TypeError(
            "A batch must hold an input and a label: a pair `(x, y)` (more items are left out), or a dict whose "
            "first two values are they; override `unpack_data` for other layouts. "
            f"Received: batch of {describe(data) if not isinstance(data, (tuple, list)) else f'{len(data)} items'}"
        )

    def forward(self, input: Any, target: Any = None) -> tuple[Any, torch.Tensor | None]:
        """`(y, loss)`: the model's output on `input` in the manager's precision, and with a label the total
        loss (a scalar with its graph; None without a label or `loss_fn`). Raises `ModelError` or `LossError`:
        the model, or a loss, failed on the batch (the message names its shapes)."""
        if self._precision.autocast_dtype is None:  # no context to enter on every batch
            return self._model_and_loss(input, target)
        with self._precision.forward_context():
            return self._model_and_loss(input, target)

    def _model_and_loss(self, input: Any, target: Any) -> tuple[Any, torch.Tensor | None]:
        try:
            y = self.model(input)
        except ModelError:
            raise  # a strategy's own, saying what is wrong (DDP's gradient errors)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            fix = "Check that the data's input fits the model (its shape, dtype and device)."
            raise ModelError(
                failure_message("The model failed on an input", error, fix, f"input={describe(input)}")
            ) from error
        if target is None or self.compiled_losses is None:
            return y, None
        return y, self.compiled_losses(y, target)

    @default
    def eval(self, input: Any, target: Any, training: bool = False) -> dict[str, torch.Tensor]:
        """Update the metrics with a batch's output `input` and label `target`; returns their batch values."""
        return self.compiled_metrics(input, target, training=training)

    def backward(self, loss: torch.Tensor, /, inputs: Sequence[torch.Tensor] | None = None) -> None:
        """Compute the gradients of `loss` (in `fit`: divided by the accumulation window's size, scaled for float16)."""
        plan = self._plan
        if plan is not None and plan.plain_backward and inputs is None:  # decided once per fit
            loss.backward()  # type: ignore[no-untyped-call]
        else:
            update.backward(self, loss, inputs)

    def optimize(self) -> None:
        """Update the parameters from their gradients and clear them (in `fit`: at the end of each accumulation window)."""
        plan, optimizer = self._plan, self.optimizer
        if plan is not None and plan.plain_update and optimizer is not None:  # decided once per fit
            optimizer.step()
            optimizer.zero_grad()  # as upstream called it: a wrapper whose `zero_grad` takes no argument works
        else:
            update.optimize(self)

    @default
    def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        """One training iteration: forward, loss, gradients, update, metrics; returns the batch values (device tensors).

        What it returns is what the epoch reports: values under a loss name (`loss`, `<name>_loss`)
        become their sample-weighted epoch mean; metric values come from the metrics' own state;
        any other value is averaged, weighted by batch size.
        """
        y, loss = self.forward(x_train, y_train)
        loss = _trainable(loss)
        self.backward(loss)
        self.optimize()
        summary: dict[str, Any] = {"loss": loss.detach()}
        summary.update(self.eval(y.detach() if isinstance(y, torch.Tensor) else y, y_train, training=True))
        return summary

    def _counting_train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        """`train_step` when nothing reads its values (the plan decides): the metrics count the batch, no values are made."""
        y, loss = self.forward(x_train, y_train)
        if loss is None or not loss.requires_grad:
            _trainable(loss)  # raises
        self.backward(loss)  # type: ignore[arg-type]
        self.optimize()
        self.compiled_metrics.update_state(y, y_train, training=True)  # they know whether `y`'s graph matters
        return {}

    @default
    def test_step(self, x_test: Any, y_test: Any) -> dict[str, Any]:
        """One testing iteration: forward, loss (with a `loss_fn`), metrics; returns the batch values."""
        y, loss = self.forward(x_test, y_test)
        summary: dict[str, Any] = {} if loss is None else {"loss": loss.detach()}
        summary.update(self.eval(y.detach() if isinstance(y, torch.Tensor) else y, y_test, training=False))
        return summary

    @default
    def _train(
        self,
        dataset: DataSource,
        /,
        iterations: int | None = None,
        *args: Any,
        device: torch.device | None = None,
        use_multi_gpus: bool = False,
        callbacks_list: Any = None,
        show_verbose: bool = False,
        verbose_type: VerboseType = VerboseType.ALL,
        **kwargs: Any,
    ) -> dict[str, float]:
        """Train one epoch over `dataset` (the rest of it when resumed) and return its summary floats.

        `fit` calls it once per epoch where the run is placed (`iterations`, `device`,
        `use_multi_gpus` and `callbacks_list` are upstream's arguments, kept for subclasses; the run
        already has them). A subclass may override it and call it more than once an epoch.
        """
        return train_epoch(self, dataset, show_verbose, verbose_type)

    def model_summary(self, example_input: Any = None, *, depth: int | None = None) -> str:
        """The model's table, Keras's `model.summary()`: each module's output shape (with `example_input`, a
        batch the model takes), parameters and their counts, then the totals (see `model_summary.model_summary`)."""
        return model_summary(self.raw_model, example_input, depth=depth)

    def to(self, device: torch.device) -> None:
        """Move the model, losses, metrics and optimizer state to `device`."""
        self.model.to(device)
        for fn in self._stream_objects():
            if isinstance(fn, torch.nn.Module) or callable(getattr(fn, "to", None)):
                fn.to(device)  # a stateful metric that is not a module too, as upstream's loop moved it
        move_optimizer_state(self.optimizer, device)

    def reset_metrics(self) -> None:
        """Forget the losses' and metrics' batches (each pass does it when it starts)."""
        self._evaluation.reset()

    # -- the loops -----------------------------------------------------------------------------

    @checks.explains_binding_errors
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
        limit_train_batches: int | None = None,
        limit_val_batches: int | None = None,
        fast_dev_run: bool | int = False,
        allow_divergence: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Train the model and return it (unwrapped), or `(model, summary)` with `return_summary=True`.

        Args:
            training_dataset: Batches of `(x, y)` (or dicts whose first two values are they): a torchmanager
                `Dataset`, a `DataLoader`, a list, any iterable; `y` goes as it is to `loss_fn(model(x), y)`.
            epochs: The epochs to train in all (counting those done); or `iterations`: the batches in all
                (this process's share under torchrun; a budget reached inside an epoch stops there).
            val_dataset: Batches to validate on after each epoch (reported as `val_<name>`).
            callbacks_list: Callbacks, called at the hooks they override.
            initial_epoch: The epoch index to start from (default: `current_epoch`).
            device: Where to train (a device, a name, a CUDA index, or a list for DataParallel);
                the best available by default. `devices` is the same (the README's name).
            use_multi_gpus: Use DataParallel over several given or visible GPUs.
            show_verbose: A progress line per epoch: True, False, or "auto" (in an interactive terminal).
            resume_from: A checkpoint to continue from, at the batch where it was written.
            on_nonfinite_loss: "raise" `NonFiniteLossError` on a NaN/infinite epoch loss, or "stop" cleanly.
            on_checkpoint_error: "raise" a failed write's `CheckpointError` (on every process), or
                "continue" training with the error logged; the previous file is kept either way.
            limit_train_batches, limit_val_batches: Train (validate) at most this many batches an epoch
                (each process's share under torchrun); an epoch ends at its limit (Lightning's options).
            fast_dev_run: Try `n` batches (True: 1) of training and validation in one epoch, writing no
                checkpoint: a quick check that every part runs (the weights do move).
            allow_divergence: Resume a checkpoint written by another number of processes even where the
                run cannot continue as it was (per-process random draws: see `checkpoint.reshard`).
            **kwargs: Passed on to `_train` (a subclass's own, as upstream allowed).
        Returns:
            The trained raw model; `summary` is the last epoch's, validation values prefixed "val_".
        Raises:
            ValueError, TypeError: Bad arguments (checked before anything trains).
            ModelError, LossError, MetricError: The model, a loss or a metric failed on a batch (cause chained).
            NonFiniteLossError, CheckpointError: As the two policies say.
            Preempted: SIGTERM or SIGUSR1 (main thread): every process stopped after the same update,
                saved the run to its preemption checkpoints and exits with 143 or 138.
            KeyboardInterrupt: Ctrl-C, after the run was saved as for a preemption (twice: at once).

        `StopTraining` from a hook (or `stop_training = True`) ends training on every process: after
        the current batch (batch hooks: the epoch goes on at a later `fit`), before the epoch's first
        batch (`on_epoch_start`), or after the current epoch (validation and epoch-end hooks).
        """
        options = FitOptions(
            epochs=epochs,
            iterations=iterations,
            initial_epoch=initial_epoch,
            resume_from=os.fspath(resume_from) if resume_from is not None else None,
            places=(device, devices, use_multi_gpus),
            show_verbose=wants_progress(show_verbose),
            on_nonfinite_loss=on_nonfinite_loss,
            on_checkpoint_error=on_checkpoint_error,
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            fast_dev_run=checks.dev_run_batches(fast_dev_run),
            train_kwargs=kwargs,
            allow_divergence=allow_divergence,
        )
        summary = run_fit(self, training_dataset, val_dataset, callbacks_list, options)
        model = self.raw_model
        return (model, summary) if return_summary else model

    @checks.explains_binding_errors
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
        exactly as it was: its values, the model's placement, every module's mode, the random state.
        Under torchrun every process evaluates its share (each sample once) and reports the whole
        data set's values. `device`, `devices`, `use_multi_gpus` are as in `fit`; `callbacks_list`
        gets the `on_test_*` hooks; `empty_cache` releases cached CUDA memory afterwards.

        Raises:
            ValueError: `dataset` yielded no batches (in any process).
        """
        with self._placed(device, devices, use_multi_gpus, empty_cache):
            return evaluate.test(self, dataset, callbacks_list, wants_progress(show_verbose))

    @checks.explains_binding_errors
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
        """The model's outputs for each batch of `dataset` (inputs, or `(x, y)` pairs), on the CPU, in order.

        Under torchrun each process runs its share (each sample once) and every process returns all the outputs.

        Raises:
            ValueError: `dataset` yielded no batches (in any process).
        """
        with self._placed(device, devices, use_multi_gpus, empty_cache):
            return evaluate.predict(self, dataset, wants_progress(show_verbose))

    # -- the parts the loop moves and reads ----------------------------------------------------

    def _placed(self, device: Devices, devices: Devices, use_multi_gpus: bool, empty_cache: bool) -> Any:
        """The context of a `test` or `predict`: the manager placed by its strategy (see `strategy.placed`)."""
        options = (self._strategy_option, self._precision, self._compile)
        return placed(self, *options, device, devices, use_multi_gpus, empty_cache=empty_cache)


def _trainable(loss: torch.Tensor | None) -> torch.Tensor:
    """The default step's loss, which must exist and depend on a trainable parameter."""
    if loss is None or not loss.requires_grad:
        raise RuntimeError(
            "The loss does not depend on any trainable parameter (it has no gradient); check that the model's "
            "parameters require grad and that the loss is computed from the model output."
        )
    return loss
