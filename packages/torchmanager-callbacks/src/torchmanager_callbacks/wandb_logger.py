"""`WandbLogger`: a training run as a Weights & Biases run: its configs, per-epoch and per-step metrics.

wandb is imported when the callback is created, never when the package is imported. Only the main
process (rank 0 under torchrun) talks to W&B.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from torchmanager_core.callbacks import Callback
from torchmanager_core.tracking import merge_summaries

from ._hooks import error_leaving_fit, handled_error, select_hooks
from ._io import configs_dict, is_writer
from ._state import get_state, put_state
from .steps import EveryNSteps, scalar_floats

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["WandbLogger", "import_wandb"]

EXTRA_HINT = 'pip install "torchmanager-callbacks[wandb]"'
STEP_PREFIX = "step/"
"""Per-step metrics are named `step/<name>`, beside the per-epoch `<name>` (as `MLflowLogger` names them)."""


def import_wandb() -> ModuleType:
    """The `wandb` module, or an ImportError that says how to install it."""
    try:
        import wandb
    except ImportError as error:
        raise ImportError(
            f"`WandbLogger` needs the wandb package, which is not installed; install it with `{EXTRA_HINT}` "
            f"(or `pip install wandb`). Received: {error}"
        ) from error
    return wandb


class WandbLogger(Callback):
    """Logs a `fit` as a W&B run: the configs, per-epoch and per-step metrics, each at W&B's step.

    W&B's step is the optimizer update count (`manager.global_step`), one axis for everything:
    - per-epoch metrics: the training values and the validation ones as `val_<name>`, with `epoch`
      (the epochs done), at the step of the epoch's last update;
    - per-step metrics: every `log_every_n_steps` optimizer updates, the values of the batch that
      made the update, as `step/<name>`; they are read from the device on those steps only.

    A checkpoint written with this callback records the run's id and its step, so a resumed run
    goes on in the same W&B run, rewound to the checkpoint (W&B's `resume_from`: what the
    interrupted run logged after the checkpoint is set aside, not shown twice). `mode="offline"`
    writes the run to `folder` only (`wandb sync` uploads it later), as in the tests here.

    Args:
        project: The W&B project.
        configs: The run's configs (a torchmanager `Configs`, a dict or an `argparse.Namespace`), as W&B's config.
        name: The run's display name (W&B makes one up when None).
        folder: The folder of W&B's local files (`<folder>/wandb/...`).
        mode: W&B's mode: "online", "offline" or "disabled" (None: W&B's default, `WANDB_MODE`).
        entity: The W&B entity (user or team; None: the default one).
        tags: Tags of the run.
        log_every_n_steps: Per-step metrics every this many optimizer updates; None for none.
    Raises:
        ImportError: wandb is not installed (the message names the pip extra).
        ValueError: `log_every_n_steps` is not a positive int or None, or `mode` is not one of W&B's.
    """

    def __init__(
        self,
        project: str = "torchmanager",
        *,
        configs: Any = None,
        name: str | None = None,
        folder: str | os.PathLike[str] = ".",
        mode: str | None = None,
        entity: str | None = None,
        tags: Sequence[str] | None = None,
        log_every_n_steps: int | None = 50,
    ) -> None:
        self._wandb = import_wandb()
        if mode not in (None, "online", "offline", "disabled"):
            raise ValueError(f"`mode` must be 'online', 'offline', 'disabled' or None. Received: mode={mode!r}")
        self._steps = EveryNSteps(log_every_n_steps)
        self.project, self.name, self.mode, self.entity = project, name, mode, entity
        self.config = configs_dict(configs) if configs is not None else {}
        self.folder = os.path.abspath(os.fspath(folder))
        self.tags = list(tags or [])
        self.run: Any = None
        self.run_id: str | None = None
        self._resume_step: int | None = None  # the last step a checkpoint's run had logged, until training starts
        self._error_before: BaseException | None = None
        if log_every_n_steps is None:
            select_hooks(self, WandbLogger, {"on_batch_end"})

    def _step(self) -> int:
        step = getattr(self.manager, "global_step", None)
        return step if isinstance(step, int) else 0

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self._steps.start(self.manager)
        self._error_before = handled_error()
        if not is_writer() or self.run is not None:
            return
        options: dict[str, Any] = {}
        if self.run_id is not None and self._resume_step is not None:  # rewound to the checkpoint's step
            options["resume_from"] = f"{self.run_id}?_step={self._resume_step}"  # kept up to it, logged on after
        elif self.run_id is not None:  # a second fit of this object: the same run
            options.update(id=self.run_id, resume="allow")
        os.makedirs(self.folder, exist_ok=True)
        self.run = self._wandb.init(
            project=self.project,
            entity=self.entity,
            name=self.name,
            dir=self.folder,
            mode=self.mode,
            config=self.config,
            tags=self.tags,
            **options,
        )
        self.run_id, self._resume_step = str(self.run.id), None

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        step = self._steps.due(self.manager)
        if step is not None and is_writer() and self.run is not None:
            self.run.log({STEP_PREFIX + name: value for name, value in scalar_floats(summary).items()}, step=step)

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        if is_writer() and self.run is not None:
            self.run.log({**merge_summaries(summary, val_summary), "epoch": epoch + 1}, step=self._step())

    def on_train_end(self, model: torch.nn.Module) -> None:
        if self.run is None:
            return
        failed = error_leaving_fit(self._error_before) is not None  # preempted, an error: W&B shows it failed
        self.run.finish(exit_code=1 if failed else 0)
        self.run = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        put_state(checkpoint, self, {"run_id": self.run_id, "step": self._step()})

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        state = get_state(checkpoint, self)
        if state is not None and isinstance(state.get("run_id"), str):
            self.run_id, self._resume_step = state["run_id"], int(state["step"])
