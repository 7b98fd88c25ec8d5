"""SIGTERM and SIGUSR1 during `fit`, in this process: real signals, sent by a callback to this process at
chosen moments of a run (after a batch inside or at the end of an accumulation window, at the last batch,
during validation, while a checkpoint is written, when training or an epoch starts, after the last update).

What must hold, each against a reference computed independently of the loop: training stops after the
optimizer update in progress (the end of the accumulation window, worked out by hand from the window size),
the run is saved there to its `LastCheckpoint` (or `Experiment`) path, one log line says where, `fit` raises
`Preempted` with code 128 + the signal's number, and a new manager resumed from the file ends bit-identical
(`torch.equal`) to a run that was never interrupted, summary included. The handlers are `fit`'s only while it
runs. Each test runs with a recording handler installed before `fit`, so that a signal the loop failed to
defer would be seen by the test rather than end the test process.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from core_testkit import batches, blobs

import torchmanager
from torchmanager.callbacks import Callback, Experiment, LastCheckpoint
from torchmanager_core import checkpoint
from torchmanager_core.configs.experiment_folder import mark_in_progress
from torchmanager_core.errors import Preempted

EPOCHS, BATCHES, SIZE = 3, 10, 4
X, Y = blobs(BATCHES * SIZE, seed=3)
DATA = batches(X, Y, SIZE)
VAL = batches(*blobs(12, seed=4), SIZE)


def make_manager(seed: int, accumulate: int = 1) -> torchmanager.Manager:
    """The same initial weights whatever `seed`; `seed` decides the run's random draws (dropout)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Dropout(0.3), torch.nn.Linear(8, 3))
    manager = torchmanager.Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        loss_fn=torchmanager.losses.CrossEntropy(),
        metrics={"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()},
        accumulate_grad_batches=accumulate,
    )
    torch.manual_seed(seed)
    return manager


class SendSignal(Callback):
    """Sends this process `signum` once, at `moment`: "batch" (after batch `batch` of epoch `epoch`, 0-based),
    "validation" (when epoch `epoch`'s validation starts), "write" (while the checkpoint written after batch
    `batch` of epoch `epoch` is saved), "train_start", "epoch_start" (of epoch `epoch`) or "train_end"."""

    def __init__(self, signum: int, moment: str, epoch: int = 0, batch: int = 0) -> None:
        self.signum, self.moment, self.epoch, self.batch = signum, moment, epoch, batch
        self.sent = False

    def _send(self, moment: str, epoch: int = 0, batch: int = 0) -> None:
        if not self.sent and (moment, epoch, batch) == (self.moment, self.epoch, self.batch):
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self._send("train_start")

    def on_epoch_start(self, epoch: int) -> None:
        self._send("epoch_start", epoch)

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        self._send("batch", self.manager.current_epoch, batch)

    def on_validation_start(self, epoch: int) -> None:
        self._send("validation", epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._send("write", self.manager.current_epoch, self.manager.batch_index - 1)

    def on_train_end(self, model: torch.nn.Module) -> None:
        self._send("train_end")


@pytest.fixture
def received() -> Iterator[list[int]]:
    """A recording handler for SIGTERM and SIGUSR1 while the test runs (the previous ones back after)."""
    seen: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: seen.append(signum)) for signum in SIGNALS}
    try:
        yield seen
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def expected_stop(moment: str, epoch: int, batch: int, accumulate: int) -> tuple[int, int, int]:
    """(epoch, batches done in it, optimizer updates) where the run must stop, worked out from the windows."""
    windows = math.ceil(BATCHES / accumulate)  # updates per epoch, the last window maybe shorter
    if moment == "validation":
        return epoch + 1, 0, (epoch + 1) * windows
    done = {"train_start": 1, "epoch_start": 1}.get(moment, batch + 1)  # batches trained when the signal came
    stop = min(math.ceil(done / accumulate) * accumulate, BATCHES)  # the end of that batch's window
    return epoch, stop, epoch * windows + math.ceil(stop / accumulate)


REFERENCES: dict[int, tuple[dict[str, torch.Tensor], dict[str, float]]] = {}


def reference(accumulate: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The weights and summary of a run that was never interrupted (computed once per window size)."""
    if accumulate not in REFERENCES:
        model, summary = make_manager(0, accumulate).fit(DATA, epochs=EPOCHS, val_dataset=VAL, return_summary=True)
        REFERENCES[accumulate] = ({k: v.clone() for k, v in model.state_dict().items()}, summary)
    return REFERENCES[accumulate]


CASES = [
    # moment, epoch, batch, window size, signal, checkpoint callback
    ("batch", 1, 4, 1, signal.SIGTERM, "last"),
    ("batch", 1, 4, 1, signal.SIGTERM, "experiment"),
    ("batch", 1, 3, 3, signal.SIGTERM, "last"),  # first batch of a window: two more batches, then the update
    ("batch", 1, 8, 3, signal.SIGUSR1, "last"),  # the last batch of a window: stops at once
    ("batch", 0, 7, 4, signal.SIGTERM, "last"),
    ("batch", 2, 9, 3, signal.SIGTERM, "last"),  # the last batch of the run (a short window of 1)
    ("validation", 1, 0, 2, signal.SIGUSR1, "last"),  # acted on at the epoch's end
    ("write", 1, 3, 1, signal.SIGTERM, "last"),  # while the step checkpoint after batch 3 is written
    ("train_start", 0, 0, 3, signal.SIGTERM, "experiment"),
    ("epoch_start", 2, 0, 4, signal.SIGUSR1, "last"),
]


@pytest.mark.parametrize(("moment", "epoch", "batch", "accumulate", "signum", "kind"), CASES)
def test_a_signal_stops_after_the_update_in_progress_and_the_run_resumes_bit_identical(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    received: list[int],
    moment: str,
    epoch: int,
    batch: int,
    accumulate: int,
    signum: signal.Signals,
    kind: str,
) -> None:
    def callbacks(manager: torchmanager.Manager, resume: bool) -> list[Callback]:
        if kind == "experiment":
            return [Experiment("run", manager, resume="auto" if resume else False, root=str(tmp_path))]
        return [LastCheckpoint(manager, str(tmp_path / "last.model"), save_every_n_steps=2)]

    path = tmp_path / ("run.exp/checkpoints/last.model" if kind == "experiment" else "last.model")
    manager = make_manager(0, accumulate)
    handlers = [signal.getsignal(s) for s in SIGNALS]
    with caplog.at_level(logging.INFO, "torchmanager"), pytest.raises(Preempted) as preempted:
        manager.fit(
            DATA,
            epochs=EPOCHS,
            val_dataset=VAL,
            callbacks_list=[*callbacks(manager, False), SendSignal(signum, moment, epoch, batch)],
        )
    assert received == []  # the loop acted on it: the previous handler never saw it
    assert [signal.getsignal(s) for s in SIGNALS] == handlers
    assert preempted.value.code == 128 + signum and preempted.value.signal == signum
    assert preempted.value.checkpoints == (str(path),)

    stop_epoch, stop_step, updates = expected_stop(moment, epoch, batch, accumulate)
    saved = checkpoint.load(path)
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (stop_epoch, stop_step, updates)
    where = f"after batch {stop_step} of epoch {stop_epoch + 1}" if stop_step else f"at the end of epoch {stop_epoch}"
    lines = [r.getMessage() for r in caplog.records if "received" in r.getMessage()]
    assert lines == [
        f"{signum.name} received: training stopped {where} (optimizer update {updates}), the run was saved to "
        f"{path}; exiting with code {128 + signum}. Run the same command again to resume."
    ]

    resumed = make_manager(1234, accumulate)  # other random draws: they must all come from the checkpoint
    resumed_callbacks = callbacks(resumed, True)
    model, summary = resumed.fit(
        DATA,
        epochs=EPOCHS,
        val_dataset=VAL,
        callbacks_list=resumed_callbacks,
        resume_from=path if kind == "last" else None,
        return_summary=True,
    )
    weights, expected_summary = reference(accumulate)
    for name, tensor in weights.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert summary == expected_summary


class SignalEachWrite(Callback):
    """Sends this process SIGTERM while each checkpoint from epoch `epoch` on is written."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.sent = epoch, 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.manager.current_epoch >= self.epoch:
            self.sent += 1
            os.kill(os.getpid(), signal.SIGTERM)


def test_another_signal_while_the_preempted_run_is_saved_changes_nothing(tmp_path: Path, received: list[int]) -> None:
    manager, path = make_manager(0), tmp_path / "last.model"
    each_write = SignalEachWrite(epoch=1)
    callbacks = [LastCheckpoint(manager, str(path), save_every_n_steps=2), each_write]
    with pytest.raises(Preempted) as preempted:
        manager.fit(DATA, epochs=EPOCHS, callbacks_list=callbacks)
    assert each_write.sent == 2  # epoch 1's checkpoint (written once the run is at epoch index 1), then its own
    assert preempted.value.code == 143 and received == []  # the second one did not end the process another way
    saved = checkpoint.load(path)
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (1, 0, 10)  # at epoch 1's end


def test_other_random_draws_end_elsewhere() -> None:
    """A run with other dropout masks ends with other weights: the resume test above is not vacuous."""
    model = make_manager(1234).fit(DATA, epochs=EPOCHS, val_dataset=VAL)
    weights, _ = reference(1)
    assert not any(torch.equal(model.state_dict()[name], tensor) for name, tensor in weights.items())


def test_without_a_checkpoint_callback_it_stops_and_says_nothing_was_saved(
    caplog: pytest.LogCaptureFixture, received: list[int]
) -> None:
    manager = make_manager(0, accumulate=2)
    with caplog.at_level(logging.INFO, "torchmanager"), pytest.raises(Preempted) as preempted:
        manager.fit(DATA, epochs=EPOCHS, callbacks_list=[SendSignal(signal.SIGTERM, "batch", 1, 2)])
    assert preempted.value.code == 143 and preempted.value.checkpoints == ()
    assert manager.current_epoch == 1 and manager.batch_index == 4 and manager.global_step == 5 + 2
    assert any(
        re.fullmatch(
            r"SIGTERM received: training stopped after batch 4 of epoch 2 \(optimizer update 7\), nothing was saved "
            r"\(no LastCheckpoint or Experiment in `callbacks_list`\); exiting with code 143\.",
            record.getMessage(),
        )
        for record in caplog.records
    )
    assert received == []


class RemoveFolder(Callback):
    """Removes `folder` after batch `batch` of epoch `epoch`, so that the next checkpoint there cannot be written."""

    def __init__(self, folder: Path, epoch: int, batch: int) -> None:
        self.folder, self.epoch, self.batch = folder, epoch, batch

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        if (self.manager.current_epoch, batch) == (self.epoch, self.batch):
            shutil.rmtree(self.folder)


@pytest.mark.parametrize("policy", ["raise", "continue"])
def test_a_preemption_checkpoint_that_cannot_be_written_follows_the_policy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, received: list[int], policy: str
) -> None:
    folder = tmp_path / "checkpoints"
    manager = make_manager(0)
    callbacks = [
        LastCheckpoint(manager, str(folder / "last.model")),  # each epoch: the preemption's is the next write
        RemoveFolder(folder, 1, 2),
        SendSignal(signal.SIGTERM, "batch", 1, 4),
    ]
    with caplog.at_level(logging.INFO, "torchmanager"):
        if policy == "raise":
            with pytest.raises(checkpoint.CheckpointError, match=r"Cannot save checkpoint `.*last.model`: its folder"):
                manager.fit(DATA, epochs=EPOCHS, callbacks_list=callbacks, on_checkpoint_error=policy)
        else:
            with pytest.raises(Preempted) as preempted:
                manager.fit(DATA, epochs=EPOCHS, callbacks_list=callbacks, on_checkpoint_error=policy)
            assert preempted.value.code == 143 and preempted.value.checkpoints == ()
            assert (
                f"SIGTERM received: training stopped after batch 5 of epoch 2 (optimizer update 15), the run was not "
                f"saved (writing {folder / 'last.model'} failed); exiting with code 143."
            ) in [record.getMessage() for record in caplog.records]
    assert received == []  # acted on either way: not raised again for the previous handler
    assert not folder.exists()


class Look(Callback):
    """Records this process's SIGTERM and SIGUSR1 handlers when each epoch starts; raises at the end of epoch `fail`."""

    def __init__(self, fail: int | None = None) -> None:
        self.seen: list[list[Any]] = []
        self.fail = fail

    def on_epoch_start(self, epoch: int) -> None:
        self.seen.append([signal.getsignal(s) for s in SIGNALS])

    def on_epoch_end(self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Any = None) -> None:
        if epoch == self.fail:
            raise RuntimeError("the callback failed on purpose")


def test_the_handlers_are_fits_only_while_it_runs_and_come_back_after_an_error(received: list[int]) -> None:
    before = [signal.getsignal(s) for s in SIGNALS]
    look = Look()
    make_manager(0).fit(DATA, epochs=2, callbacks_list=[look])
    assert all(handler not in before for handlers in look.seen for handler in handlers)
    assert [signal.getsignal(s) for s in SIGNALS] == before

    failing = Look(fail=0)
    with pytest.raises(RuntimeError, match="the callback failed on purpose"):
        make_manager(0).fit(DATA, epochs=2, callbacks_list=[failing])
    assert len(failing.seen) == 1 and failing.seen[0] != before
    assert [signal.getsignal(s) for s in SIGNALS] == before
    assert received == []


def test_an_ignored_signal_stays_ignored(received: list[int]) -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the fixture puts its handler back afterwards
    look = Look()
    manager = make_manager(0)
    manager.fit(DATA, epochs=EPOCHS, callbacks_list=[look, SendSignal(signal.SIGUSR1, "batch", 1, 4)])
    assert manager.current_epoch == EPOCHS  # trained to the end
    assert all(handlers[1] == signal.SIG_IGN for handlers in look.seen)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN


def test_fit_outside_the_main_thread_leaves_the_handlers_alone(received: list[int]) -> None:
    before = [signal.getsignal(s) for s in SIGNALS]
    look, errors = Look(), []

    def train() -> None:
        try:
            make_manager(0).fit(DATA, epochs=2, callbacks_list=[look])
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert errors == [] and look.seen == [before, before]


def test_a_signal_after_the_last_update_goes_to_the_previous_handler(received: list[int]) -> None:
    """SIGTERM during `on_train_end` comes after the last point where the processes agree: `fit` returns as
    usual and the signal is raised again, once, for the handler that was there before."""
    manager = make_manager(0)
    manager.fit(DATA, epochs=EPOCHS, callbacks_list=[SendSignal(signal.SIGTERM, "train_end")])
    assert manager.current_epoch == EPOCHS
    assert received == [signal.SIGTERM]


def test_on_checkpoint_error_takes_raise_or_continue() -> None:
    with pytest.raises(
        ValueError, match=r"`on_checkpoint_error` must be 'raise' or 'continue'. Received: on_checkpoint_error='skip'"
    ):
        make_manager(0).fit(DATA, epochs=1, on_checkpoint_error="skip")  # type: ignore[arg-type]


def test_auto_resume_starts_in_the_named_folder_when_it_has_no_checkpoint_yet(tmp_path: Path) -> None:
    """A run killed before its first checkpoint left its log and its in-progress mark: a restart with
    resume='auto' must start in that folder (where its next restart looks); it saved nothing, so
    resume=False starts there too. (A folder of files without the mark is another run's: see test_experiment_folder.)"""
    folder = tmp_path / "run.exp"
    folder.mkdir()
    (folder / "run.log").write_text("a start killed before its first checkpoint\n")
    mark_in_progress(str(folder))  # as `Experiment` writes it when training starts
    auto = Experiment("run", None, resume="auto", root=str(tmp_path))
    assert not auto.resumed and auto.experiment_dir == str(folder)
    # a start that saved nothing is free: resume=False starts there too (nothing of that run could continue)
    assert Experiment("run", None, resume=False, root=str(tmp_path)).experiment_dir == str(folder)
