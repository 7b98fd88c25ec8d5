"""`MLflowLogger`: a training run as an MLflow run: its configs, metrics and checkpoints.

mlflow is imported when the callback is created, never when the package is imported. Only the
main process (rank 0 under torchrun) talks to MLflow.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch

from torchmanager_core.callbacks import Callback
from torchmanager_core.tracking import merge_summaries

from ._hooks import select_hooks
from ._io import configs_dict, is_writer
from ._state import get_state, put_state
from .steps import EveryNSteps, scalar_floats

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["STEP_PREFIX", "MLflowLogger", "flatten_params", "import_mlflow_client"]

EXTRA_HINT = 'pip install "torchmanager-callbacks[mlflow]"'
STEP_PREFIX = "step/"
"""Per-step metrics are named `step/<name>` (their step is the optimizer update), beside the per-epoch `<name>`."""
MAX_PARAM_LENGTH = 6000
"""MLflow's limit on a parameter's value (longer values are cut, ending with "...")."""
_BATCH = 100  # parameters per `log_batch` request, MLflow's limit
_logger = logging.getLogger("torchmanager")


def import_mlflow_client() -> type[MlflowClient]:
    """`mlflow.tracking.MlflowClient`, or an ImportError that says how to install it."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise ImportError(
            f"`MLflowLogger` needs the mlflow package, which is not installed; install it with `{EXTRA_HINT}` "
            f"(or `pip install mlflow`). Received: {error}"
        ) from error
    return MlflowClient


def flatten_params(configs: Any) -> dict[str, str]:
    """The run parameters of `configs` (torchmanager `Configs`, a dict or an `argparse.Namespace`).

    Nested dicts are flattened with dotted keys (`{"optim": {"lr": 0.1}}` gives `optim.lr`), every
    value becomes its `str` (cut to `MAX_PARAM_LENGTH` characters), None values are left out.

    Raises:
        TypeError: `configs` is none of those.
    """
    if not isinstance(configs, (Mapping, argparse.Namespace)):
        raise TypeError(
            "`configs` must be a torchmanager Configs, a dict or an argparse.Namespace. "
            f"Received: configs={type(configs).__name__}"
        )
    return dict(_flat(configs_dict(configs), ""))


def _flat(data: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        elif value is not None:
            text = str(value)
            yield f"{prefix}{key}", text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


class MLflowLogger(Callback):
    """Logs a `fit` as an MLflow run: parameters, per-epoch and per-step metrics, checkpoints as artifacts.

    - parameters: `configs` flattened (`flatten_params`), when training starts;
    - per-epoch metrics: the training values and the validation ones as `val_<name>`, at step
      `epoch + 1` (the epochs done);
    - per-step metrics: every `log_every_n_steps` optimizer updates, the values of the batch that
      made the update, as `step/<name>` at step `manager.global_step` (with gradient accumulation
      an update ends a window of batches); they are read from the device on those steps only;
    - artifacts: when training ends, the checkpoint files the fit wrote (`manager.saved_checkpoints`,
      e.g. those of `Experiment` or `LastCheckpoint`), under `checkpoints/`.

    The run goes to a local MLflow store in `folder` (a SQLite database `mlflow.db`, MLflow's
    default local store since 3.x, and the artifacts in `artifacts/`; browse it with
    `mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db`), or to `tracking_uri` when one is
    given (a tracking server such as `http://host:5000`, or any MLflow store URI). A checkpoint
    written with this callback records the run's id, so `fit(..., resume_from=...)` goes on
    logging into the same run; MLflow keeps every point it is sent, so the points the interrupted
    run logged after the checkpoint are kept and the resumed run does not log those steps again
    (with an exact resume they are the same values). Only the main process logs.

    Args:
        experiment: The MLflow experiment's name (created if needed).
        configs: The run's parameters: a torchmanager `Configs`, a dict or an `argparse.Namespace`.
        folder: The local store's folder, used without `tracking_uri`.
        tracking_uri: Where to log instead of `folder`.
        run_name: The run's name (MLflow makes one up when None).
        log_every_n_steps: Per-step metrics every this many optimizer updates; None for none.
        log_checkpoints: Keep the fit's checkpoint files as artifacts.
        tags: Tags of the run.
    Raises:
        ImportError: mlflow is not installed (the message names the pip extra).
        TypeError/ValueError: A bad `configs` or `log_every_n_steps` (the message names it).
    """

    def __init__(
        self,
        experiment: str = "torchmanager",
        *,
        configs: Any = None,
        folder: str | os.PathLike[str] = "mlruns",
        tracking_uri: str | None = None,
        run_name: str | None = None,
        log_every_n_steps: int | None = 50,
        log_checkpoints: bool = True,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self._client_class = import_mlflow_client()
        self._steps = EveryNSteps(log_every_n_steps)
        self.params = flatten_params(configs) if configs is not None else {}
        self.experiment = experiment
        self.folder = os.path.abspath(os.fspath(folder))
        self.tracking_uri = tracking_uri
        self.run_name = run_name
        self.log_every_n_steps = log_every_n_steps
        self.log_checkpoints = log_checkpoints
        self.tags = dict(tags or {})
        self.run_id: str | None = None
        self._client: MlflowClient | None = None
        self._resumed = False  # a checkpoint gave the run id: steps the run holds are not logged again
        self._held_steps: dict[str, int] = {}  # each metric's last step the run held when this fit resumed it
        if log_every_n_steps is None:
            select_hooks(self, MLflowLogger, {"on_batch_end"})

    @property
    def client(self) -> MlflowClient:
        """The `MlflowClient` of the store (made on first use)."""
        if self._client is None:
            if self.tracking_uri is not None:
                self._client = self._client_class(tracking_uri=self.tracking_uri)
            else:
                os.makedirs(self.folder, exist_ok=True)
                self._client = self._client_class(tracking_uri=f"sqlite:///{self.folder}/mlflow.db")
        return self._client

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self._steps.start(self.manager)
        if not is_writer():
            return
        logged: Mapping[str, str] = {}
        if self.run_id is None:
            self.run_id = self._start_run()
        else:  # a resumed run (or a second fit) goes on in the same MLflow run
            run = self.client.get_run(self.run_id)
            logged = run.data.params
            if run.info.status != "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
            self._held_steps = {}
            if self._resumed:
                self._held_steps = {
                    key: max(point.step for point in self.client.get_metric_history(self.run_id, key))
                    for key in run.data.metrics
                }
        self._resumed = False
        changed = [key for key, value in self.params.items() if key in logged and logged[key] != value]
        if changed:
            _logger.warning(
                f"MLflowLogger: run {self.run_id} keeps its parameters "
                f"{', '.join(f'{key}={logged[key]}' for key in changed)} (the configs now say "
                f"{', '.join(f'{key}={self.params[key]}' for key in changed)}): MLflow never changes a logged parameter"
            )
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in self.params.items() if key not in logged]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + _BATCH])

    def _start_run(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = None if self.tracking_uri is not None else os.path.join(self.folder, "artifacts")
            experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        return str(run.info.run_id)

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        step = self._steps.due(self.manager)
        if step is not None and is_writer():
            self._log_metrics({STEP_PREFIX + name: value for name, value in scalar_floats(summary).items()}, step)

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        if is_writer():
            self._log_metrics(merge_summaries(summary, val_summary), epoch + 1)

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        assert self.run_id is not None  # started in on_train_start
        now = int(time.time() * 1000)
        metrics = [
            Metric(name, float(value), now, step)
            for name, value in values.items()
            if step > self._held_steps.get(name, -1)  # logged before the resume: kept as it is
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_train_end(self, model: torch.nn.Module) -> None:
        if not is_writer() or self.run_id is None:
            return
        if self.log_checkpoints and self.manager is not None:
            for path in getattr(self.manager, "saved_checkpoints", []):
                if os.path.isfile(path):
                    self.client.log_artifact(self.run_id, path, artifact_path="checkpoints")
        self.client.set_terminated(self.run_id)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        put_state(checkpoint, self, {"run_id": self.run_id})

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        state = get_state(checkpoint, self)
        if state is not None and isinstance(state.get("run_id"), str):
            self.run_id, self._resumed = state["run_id"], True
