"""`Experiment`: one callback that keeps a run's checkpoints, TensorBoard data, configs and log together.

The folder layout (the seed README's):

    <root>/<name>.exp/
        checkpoints/best-<metric>.model   one per monitor (BestCheckpoint)
        checkpoints/last.model            after every epoch (LastCheckpoint)
        data/                             TensorBoard event files
        <name>.cfg                        the configs, in YAML (when given)
        <name>.log                        the "torchmanager" log of the run
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from torchmanager_core import checkpoint as core_checkpoint
from torchmanager_core.random import set_rng_state

from ._io import is_writer
from .checkpoint import BestCheckpoint, CheckpointManager, LastCheckpoint
from .monitor import MonitorType, check_monitor_type
from .multi import MultiCallbacks
from .tensorboard import TensorBoard

__all__ = ["Experiment"]

_logger = logging.getLogger("torchmanager")
_LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def _experiment_folder(experiment: str, root: str) -> tuple[str, str]:
    """The experiment's folder and base name: "test" and "test.exp" both give `<root>/test.exp` and "test"."""
    if not isinstance(experiment, str) or not experiment.strip():
        raise ValueError(
            f"`experiment` must be a non-empty name, such as 'test.exp'. Received: experiment={experiment!r}"
        )
    path = os.path.normpath(experiment)
    if path.endswith(".exp"):
        path = path[: -len(".exp")]
    name = os.path.basename(path)
    if not name or name in (".", ".."):
        raise ValueError(
            f"`experiment` must end with a file name, such as 'test.exp'. Received: experiment={experiment!r}"
        )
    return os.path.join(root, f"{path}.exp"), name


def _monitor_types(monitors: Mapping[str, MonitorType] | Sequence[str] | None) -> dict[str, MonitorType]:
    if monitors is None:
        return {}
    if isinstance(monitors, str) or not isinstance(monitors, (Mapping, Sequence)):
        raise TypeError(
            "`monitors` must be a list of metric names or a dict of names to `MonitorType`, "
            f"such as ['accuracy'] or {{'loss': MonitorType.MIN}}. Received: monitors={monitors!r}"
        )
    pairs = monitors.items() if isinstance(monitors, Mapping) else ((name, MonitorType.MAX) for name in monitors)
    checked: dict[str, MonitorType] = {}
    for name, monitor_type in pairs:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Each monitor must be a summary name (a non-empty str). Received: monitor={name!r}")
        checked[name] = check_monitor_type(monitor_type)
    return checked


def _plain(value: Any) -> Any:
    """`value` with everything YAML's safe dumper cannot write turned into its str()."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(item) for item in value]
    return str(value)


def _configs_dict(configs: Any) -> Any:
    if callable(getattr(configs, "to_dict", None)):
        return configs.to_dict()
    return dict(configs) if isinstance(configs, Mapping) else vars(configs)


def _settings(manager: Any) -> str:
    """One line naming the model, optimizer, losses and metrics of `manager`."""
    model = getattr(manager, "raw_model", getattr(manager, "model", None))
    parts = []
    if isinstance(model, torch.nn.Module):
        parts.append(f"model={type(model).__name__} ({sum(p.numel() for p in model.parameters())} parameters)")
    optimizer = getattr(manager, "optimizer", None)
    if optimizer is not None:
        lrs = sorted({group.get("lr") for group in optimizer.param_groups if "lr" in group})
        parts.append(f"optimizer={type(optimizer).__name__} (lr={', '.join(map(str, lrs))})")
    loss_fn = getattr(manager, "loss_fn", None)
    if loss_fn is not None:
        names = (
            {k: type(v).__name__ for k, v in loss_fn.items()}
            if isinstance(loss_fn, Mapping)
            else type(loss_fn).__name__
        )
        parts.append(f"loss_fn={names}")
    metrics = getattr(manager, "metric_fns", None) or {}
    parts.append(f"metrics={ {name: type(fn).__name__ for name, fn in metrics.items()} }")
    return ", ".join(parts)


def write_configs(configs: Any, path: str) -> None:
    """Write `configs` as YAML: its `to_yaml(path)`, else its `to_dict()` or `vars()` with `yaml.safe_dump`.

    Raises:
        ImportError: PyYAML is needed and not installed (the message names the pip extra).
    """
    if callable(getattr(configs, "to_yaml", None)):
        configs.to_yaml(path)
        return
    data = _configs_dict(configs)
    try:
        import yaml
    except ImportError as error:
        raise ImportError(
            'Writing `configs` to the experiment needs PyYAML; install it with `pip install "torchmanager-callbacks[yaml]"` '
            f"(or `pip install PyYAML`). Received: {error}"
        ) from error
    with open(path, "w") as file:
        yaml.safe_dump(_plain(data), file, sort_keys=False)


class Experiment(MultiCallbacks):
    """Saves a run's checkpoints, TensorBoard data, configs and log under `<root>/<name>.exp` (see the module).

    It is `BestCheckpoint`s for the monitors, then `LastCheckpoint` (after them, so that it stores
    their state of the same epoch), then `TensorBoard`. Re-using the name of an experiment that
    already holds checkpoints is an error unless `resume=True`, which loads its `last.model` into
    the manager (weights, optimizer, epoch and the callbacks' state) so that `fit` goes on from there.

    Args:
        experiment: The name, with or without ".exp" ("test" and "test.exp" both give `experiments/test.exp`).
        manager: The manager to save and resume.
        monitors: Names to keep a best checkpoint for, all MAX (`["accuracy"]`), or a dict of names to
            `MonitorType`; none keeps the last checkpoint only.
        configs: The run's configs, written to `<name>.cfg` when training starts.
        resume: Continue an existing experiment from its `last.model`.
        root: The folder holding the experiments.
    Raises:
        FileExistsError: The experiment already holds checkpoints and `resume` is False.
        FileNotFoundError: `resume=True` but the experiment has best checkpoints and no `last.model`.
        ImportError: tensorboard is not installed.
        TypeError: `monitors` or a monitor type is malformed, or `manager` has no `save_checkpoint`.
    """

    def __init__(
        self,
        experiment: str,
        manager: CheckpointManager,
        monitors: Mapping[str, MonitorType] | Sequence[str] | None = None,
        *,
        configs: Any = None,
        resume: bool = False,
        root: str = "experiments",
    ) -> None:
        self.experiment_dir, self.name = _experiment_folder(experiment, os.fspath(root))
        types = _monitor_types(monitors)
        checkpoints = os.path.join(self.experiment_dir, "checkpoints")
        self.last_ckpt_path = os.path.join(checkpoints, "last.model")
        self.cfg_path = os.path.join(self.experiment_dir, f"{self.name}.cfg")
        self.log_path = os.path.join(self.experiment_dir, f"{self.name}.log")
        self.configs = configs
        existing = sorted(glob.glob(os.path.join(glob.escape(checkpoints), "*.model")))
        if existing and not resume:
            raise FileExistsError(
                f"Experiment `{self.experiment_dir}` already holds the checkpoints of a run ({', '.join(map(os.path.basename, existing))}); "
                f"pass `resume=True` to continue it from `last.model`, or choose another experiment name. "
                f"Received: experiment={experiment!r}, resume={resume!r}"
            )
        if existing and not os.path.isfile(self.last_ckpt_path):
            raise FileNotFoundError(
                f"Experiment `{self.experiment_dir}` cannot be resumed: it has no `checkpoints/last.model`; "
                f"choose another experiment name. Received: experiment={experiment!r}, resume={resume!r}"
            )
        self.best_checkpoints = [
            BestCheckpoint(name, manager, os.path.join(checkpoints, f"best-{name}.model"), monitor_type=monitor_type)
            for name, monitor_type in types.items()
        ]
        self.last_checkpoint = LastCheckpoint(manager, self.last_ckpt_path)
        self.tensorboard = TensorBoard(os.path.join(self.experiment_dir, "data"))
        super().__init__(*self.best_checkpoints, self.last_checkpoint, self.tensorboard)
        self.resumed_epoch: int | None = None
        if existing:
            self._resume(manager)
        self._handler: logging.Handler | None = None
        self._saved_level = logging.NOTSET

    def _resume(self, manager: CheckpointManager) -> None:
        load = getattr(manager, "load_checkpoint", None)
        if not callable(load):
            raise TypeError(
                f"`resume=True` needs a manager with `load_checkpoint(path)`. Received: manager={type(manager).__name__}"
            )
        payload = load(self.last_ckpt_path)
        if not isinstance(payload, Mapping):
            payload = core_checkpoint.load(self.last_ckpt_path, map_location="cpu")
        self.on_load_checkpoint(payload)
        if payload.get("step", 0) == 0 and payload.get("rng") is not None:
            set_rng_state(payload["rng"])  # go on with the random draws the interrupted run would have made
        self.resumed_epoch = int(getattr(manager, "current_epoch", payload.get("epoch", 0)))

    @property
    def best_ckpt_paths(self) -> dict[str, str]:
        """The best checkpoint file of each monitor."""
        return {c.monitor: c.ckpt_path for c in self.best_checkpoints}

    def on_train_start(self, initial_epoch: int = 0) -> None:
        if is_writer():
            os.makedirs(self.experiment_dir, exist_ok=True)
            if self.configs is not None:
                write_configs(self.configs, self.cfg_path)
            self._open_log()
            monitors = ", ".join(f"{c.monitor} ({c.monitor_type.name})" for c in self.best_checkpoints) or "none"
            start = (
                f"resumed at epoch {initial_epoch}"
                if self.resumed_epoch is not None
                else f"starts at epoch {initial_epoch}"
            )
            _logger.info(f"Experiment {self.name}: {start}, folder {self.experiment_dir}, monitors: {monitors}")
            _logger.info(f"Settings: {_settings(self.last_checkpoint.manager)}")
            if self.configs is not None:
                _logger.info(f"Configs: {_plain(_configs_dict(self.configs))}")
        super().on_train_start(initial_epoch)

    def on_train_end(self, model: torch.nn.Module) -> None:
        try:
            super().on_train_end(model)
        finally:
            self._close_log()

    def _open_log(self) -> None:
        if self._handler is not None:
            return
        handler = logging.FileHandler(self.log_path, mode="a", encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        self._saved_level = _logger.level
        if not _logger.isEnabledFor(logging.INFO):
            _logger.setLevel(logging.INFO)  # the file gets INFO records even if the logger was quieter
        _logger.addHandler(handler)
        self._handler = handler

    def _close_log(self) -> None:
        if self._handler is None:
            return
        _logger.info(f"Experiment {self.name}: training ended")
        _logger.removeHandler(self._handler)
        self._handler.close()
        self._handler = None
        _logger.setLevel(self._saved_level)
