"""Where a training run is: its position, random-state snapshots, policies and history, and their checkpoint state.

Who owns what: the manager holds what the user configured; a `Run` holds where the run is. The
position is four separate numbers: the epoch, the batch within it, the optimizer updates really
applied (`global_step`: an update the GradScaler skipped is none) and the batches trained in all
(what `fit(iterations=...)` budgets). Everything a checkpoint needs to continue the run
bit-identically is in `state_dict()`, and `load_state_dict` is the one place a resume sets it.
This module knows neither the callbacks nor the progress bar (`dispatch` holds those).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, SupportsIndex, overload

import torch

from ..random import (
    RawRngState,
    capture_rng_state,
    get_data_rng_state,
    pack_rng_state,
    restore_rng_state,
    set_data_rng_state,
    set_rng_state,
)

__all__ = ["CheckpointErrorPolicy", "History", "NonFinitePolicy", "RandomSnapshot", "Run", "RunPosition"]

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


class History(list[dict[str, float]]):
    """Each epoch's merged summary, `history[i]` for epoch i + 1; `history.history[key]` gives one value's list.

    As Keras's `History`: `manager.history.history["val_loss"]` is the validation loss of each
    epoch (an epoch without that value is left out of its list).
    """

    @property
    def history(self) -> dict[str, list[float]]:
        """Each value's name to its list over the epochs (Keras's `History.history`)."""
        lists: dict[str, list[float]] = {}
        for summary in self:
            for name, value in summary.items():
                lists.setdefault(name, []).append(value)
        return lists

    @overload
    def __getitem__(self, index: SupportsIndex, /) -> dict[str, float]: ...
    @overload
    def __getitem__(self, index: slice, /) -> list[dict[str, float]]: ...
    def __getitem__(self, index: SupportsIndex | slice, /) -> dict[str, float] | list[dict[str, float]]:
        """Epoch `index`'s summary, or a slice of them, as a list's.

        Raises:
            TypeError: A value's name (Keras's `history["loss"]`): its list is `history.history["loss"]`.
        """
        if isinstance(index, str):
            raise TypeError(
                f"`manager.history` is a list of each epoch's summary: `manager.history[-1][{index!r}]` is the last "
                f"epoch's value, `manager.history.history[{index!r}]` the list of every epoch's (Keras's "
                f"`History.history`). Received: key={index!r}"
            )
        return super().__getitem__(index)


@dataclass(eq=False)
class Run:
    """Where a training run is (see the module docstring).

    Attributes:
        epoch: The index of the epoch in progress during `fit`; once an epoch ends, the next one
            (so after `fit`, the number of epochs done).
        batch: Batches done in the epoch in progress (where a mid-epoch checkpoint resumes).
        global_step: Optimizer updates applied in the whole run (one per accumulation window that
            stepped; a float16 step the grad scaler skipped is not one).
        trained_batches: Batches trained in the whole run (what `iterations` counts): those of the
            epochs before this one (`finished_batches`) and this one's `batch`.
        total_epochs: The epochs the current `fit` trains in all.
        budget: The batches the current `fit` trains in all (`iterations`), or None.
        steps_in_epoch: Batches in the epoch in progress when known beforehand, else None.
        current_batch: The index of the batch in progress (or the last one trained, between batches).
        last_batch: Whether the batch being trained is the last this pass trains (its data's last,
            known by looking one batch ahead, or the budget's last).
        epoch_complete: Whether the epoch's data ran out (its last batch was trained): only then does it end.
        epoch_rng: The generators when the epoch in progress drew its data order.
        resume_rng: The generators when the checkpoint being resumed from was written.
        skip: Batches the next pass of this epoch skips (a resumed epoch's done batches); one pass takes it.
        stop: Set to end `fit` at the next batch boundary.
        signal: A preemption signal received and not yet acted on, else None.
        on_nonfinite: "raise" or "stop" when the loss is NaN or infinite.
        on_checkpoint_error: "raise" or "continue" when a checkpoint cannot be written during `fit`.
        active: Whether a `fit` is running.
        dispatching: Whether a hook is being called (a save is then a request, written after it).
        data: The training data of the `fit` in progress (its generators are saved with the run).
        checkpoint_requests: Checkpoint paths asked for during the current hook dispatch.
        saved_checkpoints: The checkpoint files the current `fit` wrote, each once.
        resumed_callbacks: The callbacks' states of the checkpoint loaded last, until a `fit` gives them out.
        epoch_values: The training pass's running values (losses', metrics', extra values' state) at a
            mid-epoch position between two `fit`s (a stop, a budget, a resume), until the epoch goes on.
        saved_layout: How the processes of the checkpoint resumed from were laid out (their number and random
            states, the global position), until `fit` checks it against its own (`checkpointing.check_layout`).
        pending_shards: The version folder of a sharded checkpoint being resumed, whose shards are loaded
            once the run is placed (`checkpointing.load_pending_shards`).
        history: Each epoch's merged summary.
    """

    epoch: int = 0
    batch: int = 0
    global_step: int = 0
    finished_batches: int = 0
    total_epochs: int = 0
    budget: int | None = None
    steps_in_epoch: int | None = None
    current_batch: int = 0
    last_batch: bool = False
    epoch_complete: bool = False
    epoch_rng: RandomSnapshot | None = None
    resume_rng: RandomSnapshot | None = None
    skip: int = 0
    stop: bool = False
    signal: int | None = None
    on_nonfinite: NonFinitePolicy = "raise"
    on_checkpoint_error: CheckpointErrorPolicy = "raise"
    active: bool = False
    dispatching: bool = False
    data: object = None
    checkpoint_requests: list[str] = field(default_factory=list)
    saved_checkpoints: list[str] = field(default_factory=list)
    resumed_callbacks: dict[str, Any] | None = None
    epoch_values: dict[str, Any] | None = None
    saved_layout: dict[str, Any] | None = None
    pending_shards: str | None = None
    history: History = field(default_factory=History)

    def start(
        self,
        total_epochs: int,
        budget: int | None,
        on_nonfinite: NonFinitePolicy,
        on_checkpoint_error: CheckpointErrorPolicy,
    ) -> None:
        """Begin a `fit`: the position is kept (a later `fit` goes on from it), the rest is new."""
        self.total_epochs, self.budget = total_epochs, budget
        self.on_nonfinite, self.on_checkpoint_error = on_nonfinite, on_checkpoint_error
        self.stop, self.signal, self.active = False, None, True
        self.checkpoint_requests, self.saved_checkpoints = [], []
        self.skip = self.batch
        del self.history[self.epoch :]  # the run goes on from `epoch`: what came after it is redone

    def start_at(self, epoch: int) -> None:
        """Go to the start of `epoch` (`fit(initial_epoch=...)`), forgetting any resume position."""
        self.epoch, self.batch, self.skip, self.epoch_rng, self.resume_rng = epoch, 0, 0, None, None
        self.epoch_values, self.saved_layout = None, None
        del self.history[epoch:]

    def end_epoch(self) -> None:
        """The epoch in progress is done: a checkpoint written now resumes at the start of the next."""
        self.epoch += 1
        self.finished_batches += self.batch
        self.batch = 0
        self.steps_in_epoch = None
        self.epoch_rng = None
        self.epoch_complete = False

    @property
    def trained_batches(self) -> int:
        """Batches trained in the whole run."""
        return self.finished_batches + self.batch

    @property
    def budget_left(self) -> int | None:
        """Batches the current `fit` may still train (None: no budget)."""
        return None if self.budget is None else self.budget - self.trained_batches

    @property
    def finished(self) -> bool:
        """Whether the current `fit` has nothing left to train."""
        return self.epoch >= self.total_epochs or self.budget_left == 0

    def window_end(self, accumulate: int) -> bool:
        """Whether the batch being trained ends an accumulation window of `accumulate` batches."""
        return self.last_batch or (self.batch + 1) % accumulate == 0

    def window_done(self, accumulate: int) -> bool:
        """Whether the batch just trained (counted in `batch`) ended an accumulation window: its update is done."""
        return accumulate == 1 or self.last_batch or self.batch % accumulate == 0

    def window_size(self, accumulate: int) -> int:
        """The expected size of the window the batch being trained belongs to (the last may be shorter)."""
        start = self.batch - self.batch % accumulate
        ends = [n for n in (self.steps_in_epoch, self._budget_end()) if n is not None]
        return max(1, min([accumulate, *(end - start for end in ends)]))

    def _budget_end(self) -> int | None:
        """The batch index (in this epoch) where the budget runs out, if it does."""
        left = self.budget_left
        return None if left is None else self.batch + left

    def pause(self, values: dict[str, Any]) -> None:
        """The run stopped between two batches: keep what the epoch's rest needs, the training pass's running
        `values` and the generators now (what it draws from after replaying its data order)."""
        self.epoch_values = values
        self.resume_rng = RandomSnapshot.take(self.data)

    def attach(self, data: object) -> None:
        """Take the training data of a `fit`; at an epoch's start, its generators and the global ones go back to
        where the run left them (a resume at an epoch's end draws what the uninterrupted run would)."""
        self.data = data
        if self.batch == 0 and self.resume_rng is not None:
            self.resume_rng.restore(data)
            self.resume_rng = None

    def data_order(self, dataset: object) -> tuple[int, Callable[[], None] | None]:
        """Where a training pass over `dataset` starts: (0, None) fresh, else the batches to skip and what to do after.

        A fresh epoch snapshots the generators its data order is drawn from; a resumed one draws the
        same order again from that snapshot, skips what was done, then takes the generators the
        run stopped with (or its checkpoint was written with). Only the epoch's first pass resumes (a
        `_train` that runs twice an epoch runs its second pass whole).
        """
        skip, self.skip = self.skip, 0
        if skip == 0:
            if self.batch == 0:
                self.epoch_rng = RandomSnapshot.take(dataset)
            return 0, None
        if self.epoch_rng is not None:
            self.epoch_rng.restore(dataset)
        resumed, self.resume_rng = self.resume_rng, None
        return skip, (lambda: resumed.restore(dataset)) if resumed is not None else None

    def take_resumed_callbacks(self) -> dict[str, Any] | None:
        """The callbacks' part of the checkpoint loaded last (once), for `on_load_checkpoint`."""
        resumed, self.resumed_callbacks = self.resumed_callbacks, None
        return resumed

    def state_dict(self) -> dict[str, Any]:
        """The position for a checkpoint, with the generators' states now (for `resume_rng`)."""
        return {
            "epoch": self.epoch,
            "step": self.batch,
            "global_step": self.global_step,
            "trained_batches": self.trained_batches,
            "epoch_rng": self.epoch_rng.state_dict() if self.epoch_rng is not None else None,
            "rng": self._continuation().state_dict(),
            "history": [dict(summary) for summary in self.history],
        }

    def _continuation(self) -> RandomSnapshot:
        """The generators the run goes on drawing from: now during a `fit`, else those a stop or a resume left."""
        if not self.active and self.resume_rng is not None:
            return self.resume_rng
        return RandomSnapshot.take(self.data)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's position (every format: missing keys take their old meaning)."""
        self.epoch = int(state.get("epoch", 0))
        self.batch = int(state.get("step", 0))
        self.global_step = int(state.get("global_step", 0))
        self.finished_batches = int(state.get("trained_batches", self.global_step)) - self.batch
        self.epoch_rng = RandomSnapshot.from_state_dict(state.get("epoch_rng"))
        self.resume_rng = RandomSnapshot.from_state_dict(state.get("rng"))
        self.history = History(dict(summary) for summary in state.get("history") or [])
        self.resumed_callbacks = {
            "callbacks": dict(state.get("callbacks") or {}),
            **{key: state[key] for key in ("epoch", "step", "global_step") if key in state},
        }


class RunPosition:
    """Where a manager's run is, as its public members (the manager inherits them; its `_run` holds the values)."""

    _run: Run

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
        """Optimizer updates applied in the whole run (one per accumulation window; not a skipped float16 step)."""
        return self._run.global_step

    @property
    def batch_index(self) -> int:
        """The index, within its epoch, of the batch being trained (batches done, between batches)."""
        return self._run.batch

    @property
    def stop_training(self) -> bool:
        """Set it (from a callback or a step) to end `fit` at the next batch boundary, on every process."""
        return self._run.stop

    @stop_training.setter
    def stop_training(self, stop: bool) -> None:
        self._run.stop = bool(stop)

    @property
    def history(self) -> History:
        """Each epoch's summary, `history[i]` for epoch i + 1; `history.history["loss"]` is one value's list (Keras).

        Validation values are prefixed "val_". A `fit` that continues the run (a later call, a resume
        from a checkpoint) keeps the earlier epochs; `initial_epoch=0` starts a new history. A subclass may
        assign its own value (upstream 1.5 left the name free); the run keeps its own.
        """
        user: Any = self.__dict__.get("_user_history")
        return user if user is not None else self._run.history

    @history.setter
    def history(self, history: Any) -> None:
        self.__dict__["_user_history"] = history

    @property
    def current_batch(self) -> int:
        """The index, within its epoch, of the batch in progress (upstream 1.5's name; read it from a batch hook)."""
        return self._run.current_batch

    @property
    def saved_checkpoints(self) -> list[str]:
        """The checkpoint files the last `fit` wrote, each once, in the order first written."""
        return self._run.saved_checkpoints
