"""Callbacks are called only for the hooks their settings use: an epoch callback costs nothing per batch."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import torch
from cb_testkit import FakeManager

from torchmanager_callbacks import (
    BestCheckpoint,
    Callback,
    EarlyStop,
    Experiment,
    Frequency,
    LambdaCallback,
    LastCheckpoint,
    LrScheduler,
    MonitorType,
    MultiCallbacks,
    TensorBoard,
)
from torchmanager_core.callbacks import CallbackList, overrides


def _scheduler() -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0), 1)


def per_epoch_callbacks(tmp_path: Any) -> list[Callback]:
    manager = FakeManager()
    return [
        TensorBoard(str(tmp_path / "tb")),
        LastCheckpoint(manager, str(tmp_path / "last.model")),
        BestCheckpoint("accuracy", manager, str(tmp_path / "best.model")),
        EarlyStop("loss", MonitorType.MIN),
        LrScheduler(_scheduler()),
        LambdaCallback(post_fn=lambda e, s: None),
        Experiment("e", manager, ["accuracy"], root=str(tmp_path / "experiments")),
    ]


@pytest.mark.parametrize("index", range(7))
def test_per_epoch_callbacks_override_no_batch_hook(tmp_path: Any, index: int) -> None:
    callback = per_epoch_callbacks(tmp_path)[index]
    assert not overrides(callback, "on_batch_end")
    assert not overrides(callback, "on_batch_start")
    assert isinstance(callback, Callback)
    assert not CallbackList([callback]).uses("on_batch_end")


def test_batch_settings_turn_batch_hooks_on(tmp_path: Any) -> None:
    manager = FakeManager()
    assert overrides(TensorBoard(str(tmp_path / "tb"), freq=Frequency.BATCH), "on_batch_end")
    assert overrides(LastCheckpoint(manager, str(tmp_path / "l.model"), save_every_n_steps=5), "on_batch_end")
    assert overrides(LrScheduler(_scheduler(), Frequency.BATCH), "on_batch_end")
    assert overrides(LambdaCallback(pre_fn=print, freq=Frequency.BATCH), "on_batch_start")
    assert not overrides(LambdaCallback(pre_fn=print, freq=Frequency.BATCH), "on_batch_end")


def test_changing_lambda_settings_reselects_hooks() -> None:
    callback = LambdaCallback(post_fn=lambda e, s: None)
    assert not overrides(callback, "on_batch_end") and overrides(callback, "on_epoch_end")
    callback.freq = Frequency.BATCH
    assert overrides(callback, "on_batch_end") and not overrides(callback, "on_epoch_end")
    callback.post_callback_fn = None
    assert not overrides(callback, "on_batch_end")
    assert type(callback).__name__ == "LambdaCallback" and isinstance(callback, LambdaCallback)


def test_a_subclass_override_is_kept(tmp_path: Any) -> None:
    seen: list[int] = []

    class Counting(TensorBoard):
        def on_batch_end(self, batch: int, summary: Any = {}) -> None:  # noqa: B006
            seen.append(batch)
            super().on_batch_end(batch, summary)

    callback = Counting(str(tmp_path / "tb"))
    assert overrides(callback, "on_batch_end")
    CallbackList([callback]).on_batch_end(3, {"loss": 1.0})
    assert seen == [3]  # and the epoch-frequency TensorBoard did not step for it
    assert callback.current_step == 0


def test_multi_callbacks_use_the_union_of_their_members(tmp_path: Any) -> None:
    calls: list[str] = []
    group = MultiCallbacks(LambdaCallback(post_fn=lambda e, s: calls.append(f"epoch{e}")))
    assert not overrides(group, "on_batch_end") and overrides(group, "on_epoch_end")
    group.append(LambdaCallback(pre_fn=lambda b: calls.append(f"batch{b}"), freq=Frequency.BATCH))
    assert overrides(group, "on_batch_start")
    loop = CallbackList([group])
    loop.on_batch_start(0)
    loop.on_epoch_end(0, {"loss": 1.0})
    assert calls == ["batch0", "epoch0"]
    group.pop()
    assert not overrides(group, "on_batch_start") and len(group) == 1
    with pytest.raises(AttributeError):
        group.callbacks_list.append(group[0])  # type: ignore[attr-defined]


def test_selected_instances_copy_and_pickle(tmp_path: Any) -> None:
    callback = LambdaCallback(pre_fn=print, freq=Frequency.BATCH)
    for clone in (copy.deepcopy(callback), pickle.loads(pickle.dumps(callback))):
        assert type(clone) is type(callback)
        assert overrides(clone, "on_batch_start") and not overrides(clone, "on_epoch_end")
        assert clone.pre_callback_fn is print
