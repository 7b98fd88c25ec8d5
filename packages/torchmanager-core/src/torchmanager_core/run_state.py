"""The run state: where a training run is, in one object that checkpoints save and a resume restores.

Who owns what: the manager holds what the user configured (model, optimizer, losses, metrics,
options); `RunState` holds where the run is: the epoch and the batch within it, the global step
(optimizer updates), the random-state snapshots an exact resume needs, the stop flag, the
non-finite policy, the checkpoints callbacks asked for, and the history of epoch summaries. Each
manager has one; `fit` starts it (`start`) and the loop moves it on. Everything a checkpoint needs
to continue the run bit-identically is in `state_dict()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .callbacks import CallbackList
from .progress import EpochProgress, RunEta
from .random import (
    RawRngState,
    capture_rng_state,
    get_data_rng_state,
    pack_rng_state,
    restore_rng_state,
    set_data_rng_state,
    set_rng_state,
)

__all__ = ["CheckpointErrorPolicy", "NonFinitePolicy", "RandomSnapshot", "RunState"]

NonFinitePolicy = Literal["raise", "stop"]
CheckpointErrorPolicy = Literal["raise", "continue"]


@dataclass(frozen=True)
class RandomSnapshot:
    """The state of every generator a run draws from: the global ones and those the training data owns.

    Taken in memory as the libraries give it (`raw`, cheap: `fit` takes one per epoch) or read from
    a checkpoint (`packed`, `random.get_rng_state()`'s layout); `data` holds the states of
    `random.data_generators(data)`.
    """

    raw: RawRngState | None = None
    packed: Mapping[str, Any] | None = None
    data: tuple[torch.Tensor, ...] = ()

    @classmethod
    def take(cls, data: object) -> RandomSnapshot:
        """Snapshot the global generators and those of `data` (the training data; None for none)."""
        return cls(capture_rng_state(), None, tuple(get_data_rng_state(data)) if data is not None else ())

    @property
    def generators(self) -> Mapping[str, Any]:
        """The global generators' states in `random.get_rng_state()`'s checkpoint-safe layout."""
        if self.packed is not None:
            return self.packed
        assert self.raw is not None
        return pack_rng_state(self.raw)

    def restore(self, data: object) -> None:
        """Set every generator back (the data's only when `data` is given and states were taken)."""
        if self.raw is not None:
            restore_rng_state(self.raw)
        else:
            set_rng_state(self.generators)
        if data is not None and self.data:
            set_data_rng_state(data, self.data)

    def state_dict(self) -> dict[str, Any]:
        return {"generators": dict(self.generators), "data": list(self.data)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any] | None) -> RandomSnapshot | None:
        if state is None:
            return None
        if "generators" not in state:  # format 1 stored `get_rng_state()` alone
            return cls(packed=dict(state))
        return cls(packed=dict(state["generators"]), data=tuple(state.get("data", ())))


@dataclass(eq=False)
class RunState:
    """Where a training run is (see the module docstring).

    Attributes:
        epoch: The index of the epoch in progress during `fit`; once an epoch ends, the next one
            (so after `fit`, the number of epochs done).
        step: Batches done in the epoch in progress (where a mid-epoch checkpoint resumes).
        global_step: Optimizer updates done in the whole run (one per accumulation window; a
            float16 step the grad scaler skipped counts too).
        total_epochs: The epochs the current `fit` trains in all.
        steps_in_epoch: Batches in the epoch in progress when known beforehand, else None.
        last_batch: Whether the batch being trained is the last of its epoch (known by looking
            one batch ahead).
        epoch_rng: The generators when the epoch in progress drew its data order.
        resume_rng: The generators when the checkpoint being resumed from was written.
        stop: Set to end `fit` at the next batch boundary.
        signal: The preemption signal (SIGTERM, SIGUSR1) this process received during the `fit` in
            progress and that the loop has not acted on yet, else None.
        on_nonfinite: "raise" or "stop" when the loss is NaN or infinite.
        on_checkpoint_error: "raise" or "continue" when a checkpoint cannot be written during `fit`.
        agree_each_step: Whether every process checks the stop flag after each batch (only when a
            stop can be decided mid-epoch under torchrun: it costs a collective per step).
        step_values_read: Whether anything reads a step's batch values (a custom step, a callback
            reading batch summaries); without, the default step does not make them.
        active: Whether a `fit` is running.
        dispatching: Whether the loop is calling a batch-end or epoch-end hook (saves are requests then).
        data: The training data of the `fit` in progress (its generators are saved with the run).
        callbacks: The callbacks of the `fit` in progress.
        resumed_callbacks: The callbacks' states of the checkpoint loaded last, until a `fit` gives
            them to its callbacks.
        progress: The progress bar of the epoch in progress, open until the epoch's summary closes it.
        eta: The whole run's pace, for the time left shown beside the bar.
        checkpoint_requests: Checkpoint paths callbacks asked for during the current hook
            dispatch; the loop writes them after it.
        saved_checkpoints: The checkpoint files the current `fit` wrote, each once.
        history: The merged summary of each epoch of the run so far, `history[i]` for epoch i + 1
            (Keras's `History`): kept by a later `fit` that continues the run and by checkpoints.
    """

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    total_epochs: int = 0
    steps_in_epoch: int | None = None
    last_batch: bool = False
    epoch_rng: RandomSnapshot | None = None
    resume_rng: RandomSnapshot | None = None
    stop: bool = False
    signal: int | None = None
    on_nonfinite: NonFinitePolicy = "raise"
    on_checkpoint_error: CheckpointErrorPolicy = "raise"
    agree_each_step: bool = False
    step_values_read: bool = True
    active: bool = False
    dispatching: bool = False
    data: object = None
    callbacks: CallbackList | None = None
    resumed_callbacks: dict[str, Any] | None = None
    progress: EpochProgress | None = None
    eta: RunEta | None = None
    checkpoint_requests: list[str] = field(default_factory=list)
    saved_checkpoints: list[str] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)

    def start(
        self, total_epochs: int, on_nonfinite: NonFinitePolicy, on_checkpoint_error: CheckpointErrorPolicy = "raise"
    ) -> None:
        """Begin a `fit`: the position (epoch, step, global step, snapshots) is kept, the rest is new."""
        self.total_epochs = total_epochs
        self.on_nonfinite = on_nonfinite
        self.on_checkpoint_error = on_checkpoint_error
        self.stop = False
        self.signal = None
        self.active = True
        self.checkpoint_requests = []
        self.saved_checkpoints = []
        del self.history[self.epoch :]  # the run goes on from `epoch`: what came after it is redone

    def close_progress(self, summary: dict[str, float] | None = None) -> bool:
        """Close the epoch's progress bar with `summary`; whether a bar was drawn (then it showed the summary)."""
        progress, self.progress = self.progress, None
        if progress is None:
            return False
        progress.close(summary)
        return progress.enabled

    def start_at(self, epoch: int) -> None:
        """Go to the start of `epoch` (`fit(initial_epoch=...)`), forgetting any resume position."""
        self.epoch, self.step, self.epoch_rng, self.resume_rng = epoch, 0, None, None

    def end_epoch(self) -> None:
        """The epoch in progress is done: a checkpoint written now resumes at the start of the next."""
        self.epoch += 1
        self.step = 0
        self.steps_in_epoch = None
        self.epoch_rng = None

    @property
    def stopped_mid_epoch(self) -> bool:
        """Whether the run stopped between two batches of an epoch (not after its last)."""
        return self.stop and not self.last_batch

    def window_end(self, accumulate: int) -> bool:
        """Whether the batch being trained ends an accumulation window of `accumulate` batches."""
        return self.last_batch or (self.step + 1) % accumulate == 0

    def window_done(self, accumulate: int) -> bool:
        """Whether the batch just trained (counted in `step`) ended an accumulation window: its update is done."""
        return accumulate == 1 or self.last_batch or self.step % accumulate == 0

    def window_size(self, accumulate: int) -> int:
        """The expected size of the window the batch being trained belongs to (the last may be shorter)."""
        start = self.step - self.step % accumulate
        if self.steps_in_epoch is None:
            return accumulate
        return max(1, min(accumulate, self.steps_in_epoch - start))

    def take_resumed_callbacks(self) -> dict[str, Any] | None:
        """The callbacks' part of the checkpoint loaded last (once), for `on_load_checkpoint`."""
        resumed, self.resumed_callbacks = self.resumed_callbacks, None
        return resumed

    def state_dict(self) -> dict[str, Any]:
        """The position for a checkpoint, with the generators' states now (for `resume_rng`)."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "epoch_rng": self.epoch_rng.state_dict() if self.epoch_rng is not None else None,
            "rng": RandomSnapshot.take(self.data).state_dict(),
            "history": [dict(summary) for summary in self.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's position (format 1 and 2 payloads)."""
        self.epoch = int(state.get("epoch", 0))
        self.step = int(state.get("step", 0))
        self.global_step = int(state.get("global_step", 0))
        self.epoch_rng = RandomSnapshot.from_state_dict(state.get("epoch_rng"))
        self.resume_rng = RandomSnapshot.from_state_dict(state.get("rng"))
        self.history = [dict(summary) for summary in state.get("history") or []]  # none in files before it
        self.resumed_callbacks = {
            "callbacks": dict(state.get("callbacks") or {}),
            **{key: state[key] for key in ("epoch", "step", "global_step") if key in state},
        }
