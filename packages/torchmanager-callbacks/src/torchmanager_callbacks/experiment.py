"""`Experiment`: one callback that keeps a run's checkpoints, TensorBoard data, configs and log together.

The folder layout (the seed README's):

    <root>/<name>.exp/
        checkpoints/best-<metric>.model   one per monitor (BestCheckpoint)
        checkpoints/last.model            after every epoch (LastCheckpoint)
        data/                             TensorBoard event files
        <name>.cfg                        the configs, in YAML (when given)
        <name>.log                        the "torchmanager" log of the run
        in-progress                       while the run has not finished (see below)

`checkpoints/best_<metric>.model` (upstream torchmanager's name) links to `best-<metric>.model`.
Whether a re-run continues the run kept in a folder or starts a numbered one is
`torchmanager_core.configs.experiment_folder`'s rule, which `Configs` applies too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from torchmanager_core import checkpoint as core_checkpoint
from torchmanager_core.configs.experiment_folder import (
    choose_experiment_folder,
    last_checkpoint,
    mark_finished,
    mark_in_progress,
)
from torchmanager_core.distributed import from_main_process
from torchmanager_core.run_log import add_console

from ._hooks import error_leaving_fit, handled_error
from ._io import configs_dict, is_writer
from .checkpoint import BestCheckpoint, CheckpointManager, LastCheckpoint
from .monitor import MonitorType, check_monitor_type
from .multi import MultiCallbacks
from .tensorboard import TensorBoard

__all__ = ["Experiment"]

_logger = logging.getLogger("torchmanager")
_open_experiment: Experiment | None = None
"""The experiment whose log file the `torchmanager` logger writes to (one at a time)."""
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


def _monitor_types(
    monitors: Mapping[str, MonitorType | None] | Sequence[str] | None,
) -> dict[str, MonitorType | None]:
    if monitors is None:
        return {}
    if isinstance(monitors, str) or not isinstance(monitors, (Mapping, Sequence)):
        raise TypeError(
            "`monitors` must be a list of metric names or a dict of names to `MonitorType`, "
            f"such as ['accuracy'] or {{'loss': MonitorType.MIN}}. Received: monitors={monitors!r}"
        )
    pairs = monitors.items() if isinstance(monitors, Mapping) else ((name, None) for name in monitors)
    checked: dict[str, MonitorType | None] = {}
    for name, monitor_type in pairs:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Each monitor must be a summary name (a non-empty str). Received: monitor={name!r}")
        check_monitor_type(monitor_type, name)
        checked[name] = monitor_type
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
    data = configs_dict(configs)
    try:
        import yaml
    except ImportError as error:
        raise ImportError(
            'Writing `configs` to the experiment needs PyYAML; install it with `pip install "torchmanager-callbacks[yaml]"` '
            f"(or `pip install PyYAML`). Received: {error}"
        ) from error
    with open(path, "w") as file:
        yaml.safe_dump(_plain(data), file, sort_keys=False)


def _best_path(folder: str, monitor: str) -> str:
    return os.path.join(folder, "checkpoints", f"best-{monitor}.model")


class Experiment(MultiCallbacks):
    """Saves a run's checkpoints, TensorBoard data, configs and log under `<root>/<name>.exp` (see the module).

    It is `BestCheckpoint`s for the monitors, `LastCheckpoint` and `TensorBoard`; the loop writes
    their checkpoints after every callback's `on_epoch_end`, so a checkpoint holds the state of every
    callback of the same epoch, whatever their order. Each best checkpoint also opens under
    upstream torchmanager's name `best_<metric>.model` (a link to the same file).

    Running the same script again continues the run it left unfinished, and keeps a finished one:
    with `resume="auto"` (the default) a run stopped by SIGTERM or SIGUSR1 during `fit` (saved to
    `last.model` after the optimizer update in progress), by a crash or by a kill is continued from
    its `last.model` (`fit` resumes from it: weights, optimizer, position, random states, and every
    callback of the list), while after a finished run (its `fit` returned; the folder's
    `in-progress` mark is then removed) a new numbered folder (`<name>-2.exp`, ...) is used and
    logged. `resume=True` continues the folder's run whatever its state (to train a finished run
    for more epochs); `resume=False` never continues one.

    Args:
        experiment: The name, with or without ".exp" ("test" and "test.exp" both give `experiments/test.exp`).
        manager: The manager to save (None: the one whose `fit` runs this callback).
        monitors: Names to keep a best checkpoint for (`["accuracy", "val_loss"]`: each one's direction
            inferred from its name, MIN for losses and errors, MAX for the rest), or a dict of names to
            `MonitorType` (None infers it); none keeps the last checkpoint only.
        configs: The run's configs, written to `<name>.cfg` when training starts.
        resume: "auto" (continue the run if it is unfinished, else start in the first free folder),
            True (continue the existing run) or False (start in the first free folder).
        root: The folder holding the experiments.
    Raises:
        FileNotFoundError: `resume=True` but the experiment has no `checkpoints/last.model`.
        ImportError: tensorboard is not installed.
        TypeError: `monitors` or a monitor type is malformed.
        ValueError: `resume` is not True, False or "auto".
    """

    def __init__(
        self,
        experiment: str,
        manager: CheckpointManager | None = None,
        monitors: Mapping[str, MonitorType | None] | Sequence[str] | None = None,
        *,
        configs: Any = None,
        resume: bool | Literal["auto"] = "auto",
        root: str = "experiments",
    ) -> None:
        if resume not in (True, False, "auto"):
            raise ValueError(f"`resume` must be True, False or 'auto'. Received: resume={resume!r}")
        folder, self.name = _experiment_folder(experiment, os.fspath(root))
        if resume is True and not core_checkpoint.exists(last_checkpoint(folder)):
            raise FileNotFoundError(
                f"Experiment `{folder}` cannot be resumed: it has no `checkpoints/last.model`; pass `resume='auto'` to "
                f"start it when there is nothing to resume, or choose another name. Received: experiment={experiment!r}, resume=True"
            )
        # every process applies the rule (it only reads the disk, so they agree before training starts,
        # and a sibling `LastCheckpoint(experiment.last_ckpt_path)` has the same path on each)
        self.experiment_dir, self.resumed = choose_experiment_folder(folder, resume)
        self.renamed_from = folder if self.experiment_dir != folder else None
        self.configs = configs
        types = _monitor_types(monitors)
        self.best_checkpoints = [
            BestCheckpoint(name, manager, _best_path(self.experiment_dir, name), monitor_type=monitor_type)
            for name, monitor_type in types.items()
        ]
        self.last_checkpoint = LastCheckpoint(manager, self.last_ckpt_path)
        self.tensorboard = TensorBoard(os.path.join(self.experiment_dir, "data"))
        super().__init__(*self.best_checkpoints, self.last_checkpoint, self.tensorboard)
        if manager is not None:
            self.set_manager(manager)
        self._handler: logging.Handler | None = None
        self._saved_level = logging.NOTSET
        self._error_before: BaseException | None = None

    def _move_to(self, folder: str) -> None:
        """Use `folder` (the one the writing process chose) for every file of the experiment."""
        self.experiment_dir = folder
        for best in self.best_checkpoints:
            best.ckpt_path = _best_path(folder, best.monitor)
        self.last_checkpoint.ckpt_path = self.last_ckpt_path
        self.tensorboard.log_dir = os.path.join(folder, "data")

    @property
    def last_ckpt_path(self) -> str:
        """The last checkpoint: `<folder>/checkpoints/last.model`."""
        return last_checkpoint(self.experiment_dir)

    @property
    def cfg_path(self) -> str:
        """The configs file: `<folder>/<name>.cfg`."""
        return os.path.join(self.experiment_dir, f"{self.name}.cfg")

    @property
    def log_path(self) -> str:
        """The log file: `<folder>/<name>.log`."""
        return os.path.join(self.experiment_dir, f"{self.name}.log")

    def resume_checkpoint(self) -> str | None:
        return self.last_ckpt_path if self.resumed else None

    @property
    def best_ckpt_paths(self) -> dict[str, str]:
        """The best checkpoint file of each monitor."""
        return {c.monitor: c.ckpt_path for c in self.best_checkpoints}

    def on_train_start(self, initial_epoch: int = 0) -> None:
        folder = from_main_process(self.experiment_dir)
        if folder != self.experiment_dir:
            self._move_to(folder)
        self._error_before = handled_error()
        if is_writer():
            os.makedirs(os.path.dirname(self.last_ckpt_path), exist_ok=True)
            mark_in_progress(self.experiment_dir)
            self._link_upstream_names()
            if self.configs is not None:
                write_configs(self.configs, self.cfg_path)
            add_console()  # where the run is kept goes to the console too, as `fit`'s own lines do
            self._open_log()
            if self.renamed_from is not None:
                _logger.info(
                    f"Experiment {self.name}: `{self.renamed_from}` holds a finished run, so this run is kept in "
                    f"`{self.experiment_dir}` (pass `resume=True` to continue the finished one)"
                )
            monitors = ", ".join(f"{c.monitor} ({c.monitor_type.name})" for c in self.best_checkpoints) or "none"
            start = f"resumes at epoch {initial_epoch + 1}" if self.resumed else f"starts at epoch {initial_epoch + 1}"
            _logger.info(f"Experiment {self.name}: {start}, folder {self.experiment_dir}, monitors: {monitors}")
            _logger.info(f"Settings: {_settings(self.manager)}")
            if self.configs is not None:
                _logger.info(f"Configs: {_plain(configs_dict(self.configs))}")
        super().on_train_start(initial_epoch)

    def _link_upstream_names(self) -> None:
        """`best_<metric>.model`, upstream's name, links to our `best-<metric>.model` (one file on disk)."""
        for best in self.best_checkpoints:
            folder, name = os.path.split(best.ckpt_path)
            alias = os.path.join(folder, name.replace("best-", "best_", 1))
            if not os.path.lexists(alias):
                with contextlib.suppress(OSError):  # a filesystem without links: the README name still works
                    os.symlink(name, alias)

    def on_train_end(self, model: torch.nn.Module) -> None:
        # `fit` calls it from its `finally`: an exception on its way out (a preemption's `Preempted`, an
        # error, Ctrl-C) leaves the run unfinished, so that the same command run again continues it
        finished = error_leaving_fit(self._error_before) is None
        try:
            super().on_train_end(model)
        finally:
            if self._handler is not None:
                _logger.info(f"Experiment {self.name}: training {'ended' if finished else 'stopped before its end'}")
            if finished and is_writer():
                mark_finished(self.experiment_dir)
        # the log stays open: what the script does next (its `test()`) belongs to the run, as upstream's log
        # kept it; the next experiment to open its log, or `close_log()`, closes it

    def _open_log(self) -> None:
        global _open_experiment
        if self._handler is not None:
            return
        if _open_experiment is not None:
            _open_experiment.close_log()  # one run's log at a time: a later run is not written into it
        _open_experiment = self
        handler = logging.FileHandler(self.log_path, mode="a", encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        self._saved_level = _logger.level
        if not _logger.isEnabledFor(logging.INFO):
            _logger.setLevel(logging.INFO)  # the file gets INFO records even if the logger was quieter
        _logger.addHandler(handler)
        self._handler = handler

    def close_log(self) -> None:
        """Stop writing the `torchmanager` logger's records to this experiment's log file.

        The log stays open after `fit`, so that a `test()` after it is in the run's log; the next
        experiment to start a `fit` closes it, as does the end of the process.
        """
        global _open_experiment
        if self._handler is None:
            return
        if _open_experiment is self:
            _open_experiment = None
        _logger.removeHandler(self._handler)
        self._handler.close()
        self._handler = None
        _logger.setLevel(self._saved_level)
