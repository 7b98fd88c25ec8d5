"""Checkpoint keys of callbacks come from stable identities (issue 20, kind 4): two callbacks of one kind, whose
shown names are the same, each get their own state back after a resume, as in a run that was never interrupted."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from cb_testkit import batches, blobs, make_manager

from torchmanager_callbacks import (
    BestCheckpoint,
    EarlyStop,
    Frequency,
    LastCheckpoint,
    LrScheduler,
    MonitorType,
)
from torchmanager_core import checkpoint
from torchmanager_core.callbacks import Callback

DATA = batches(*blobs(16), size=8)  # two batches an epoch


def interrupted_and_uninterrupted(
    tmp_path: Path, make_callbacks: Any, epochs: int = 4, stop_after: int = 2
) -> tuple[Any, list[Callback], Any, list[Callback]]:
    """A run of `epochs` epochs, and the same run stopped after `stop_after` epochs then resumed by new objects."""
    reference = make_manager(lr=1.0)
    reference_callbacks = make_callbacks(reference)
    reference.fit(DATA, epochs=epochs, callbacks_list=reference_callbacks)
    path = str(tmp_path / "last.model")
    first = make_manager(lr=1.0)
    first.fit(DATA, epochs=stop_after, callbacks_list=[*make_callbacks(first), LastCheckpoint(first, path)])
    resumed = make_manager(lr=1.0, seed=5)  # other weights: they must come from the checkpoint
    resumed_callbacks = make_callbacks(resumed)
    resumed.fit(DATA, epochs=epochs, callbacks_list=resumed_callbacks, resume_from=path)
    return reference, reference_callbacks, resumed, resumed_callbacks


def test_two_schedulers_on_one_optimizer_resume_each_their_own_state(tmp_path: Path) -> None:
    """A per-update warmup and a per-epoch decay, both shown as `lr`: one state each, the uninterrupted lr."""

    def schedulers(manager: Any) -> list[Callback]:
        warmup = torch.optim.lr_scheduler.LinearLR(manager.optimizer, start_factor=0.25, total_iters=6)
        decay = torch.optim.lr_scheduler.StepLR(manager.optimizer, step_size=1, gamma=0.5)
        return [LrScheduler(warmup, Frequency.BATCH), LrScheduler(decay)]

    reference, _, resumed, callbacks = interrupted_and_uninterrupted(tmp_path, schedulers)
    # by hand: the warmup ends after 6 updates (factor 1), the decay halved the rate after each of 4 epochs
    assert reference.optimizer.param_groups[0]["lr"] == pytest.approx(0.5**4, rel=1e-6)
    assert resumed.optimizer.param_groups[0]["lr"] == reference.optimizer.param_groups[0]["lr"]
    assert torch.equal(resumed.raw_model.weight, reference.raw_model.weight)
    saved = checkpoint.load(tmp_path / "last.model")["callbacks"]
    assert (
        saved["LrScheduler#0"]["scheduler"]["total_iters"] == 6
        and saved["LrScheduler#1"]["scheduler"]["step_size"] == 1
    )
    assert [c.scheduler.last_epoch for c in callbacks] == [8, 4]  # type: ignore[attr-defined]


def test_two_early_stops_of_one_monitor_keep_their_own_counts(tmp_path: Path) -> None:
    def stops(manager: Any) -> list[Callback]:
        # the first never improves after its first epoch, the second improves every epoch
        return [
            EarlyStop("loss", MonitorType.MIN, steps=100, min_delta=10.0),
            EarlyStop("loss", MonitorType.MIN, steps=100),
        ]

    _, expected, _, got = interrupted_and_uninterrupted(tmp_path, stops, epochs=5, stop_after=3)
    states = [(c.wait, c.best_epoch, c.best_score) for c in expected]  # type: ignore[attr-defined]
    assert states[0] != states[1]  # they differ, so a shared key would show
    assert [(c.wait, c.best_epoch, c.best_score) for c in got] == states  # type: ignore[attr-defined]


def test_two_best_checkpoints_of_one_monitor_keep_their_own_best(tmp_path: Path) -> None:
    def bests(manager: Any) -> list[Callback]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the highest loss is warned about: here it is wanted
            return [
                BestCheckpoint(
                    "loss", manager, str(tmp_path / f"high-{id(manager)}.model"), monitor_type=MonitorType.MAX
                ),
                BestCheckpoint(
                    "loss", manager, str(tmp_path / f"low-{id(manager)}.model"), monitor_type=MonitorType.MIN
                ),
            ]

    _, expected, _, got = interrupted_and_uninterrupted(tmp_path, bests)
    scores = [c.best_score for c in expected]  # type: ignore[attr-defined]
    assert scores[0] > scores[1]
    assert [c.best_score for c in got] == scores  # type: ignore[attr-defined]


def test_a_given_state_key_survives_a_new_order(tmp_path: Path) -> None:
    """`state_key` names a callback's state: the list may be reordered between a run and its resume."""
    path = str(tmp_path / "last.model")
    manager = make_manager(lr=1.0)
    warm = LrScheduler(torch.optim.lr_scheduler.LinearLR(manager.optimizer, 0.25, total_iters=6), Frequency.BATCH)
    decay = LrScheduler(torch.optim.lr_scheduler.StepLR(manager.optimizer, 1, 0.5))
    warm.state_key, decay.state_key = "warmup", "decay"  # type: ignore[attr-defined]
    manager.fit(DATA, epochs=2, callbacks_list=[warm, decay, LastCheckpoint(manager, path)])
    assert set(checkpoint.load(path)["callbacks"]) == {"LrScheduler:warmup", "LrScheduler:decay"}
    again = make_manager(lr=1.0)
    warm2 = LrScheduler(torch.optim.lr_scheduler.LinearLR(again.optimizer, 0.25, total_iters=6), Frequency.BATCH)
    decay2 = LrScheduler(torch.optim.lr_scheduler.StepLR(again.optimizer, 1, 0.5))
    warm2.state_key, decay2.state_key = "warmup", "decay"  # type: ignore[attr-defined]
    again.fit(DATA, epochs=2, callbacks_list=[decay2, warm2], resume_from=path)  # nothing left to train
    assert (warm2.scheduler.last_epoch, decay2.scheduler.last_epoch) == (4, 2)
    bad = LrScheduler(torch.optim.lr_scheduler.StepLR(again.optimizer, 1))
    bad.state_key = 3  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"`state_key` of a callback must be a non-empty str .* Received: state_key=3"):
        bad.on_save_checkpoint({})
