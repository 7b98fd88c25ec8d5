"""FrequencyCallback, LambdaCallback and the decorators, DynamicWeight: when they act, driven through a real fit."""

from __future__ import annotations

from typing import Any

import pytest
from cb_testkit import batches, blobs, make_manager

from torchmanager_callbacks import (
    DynamicWeight,
    Frequency,
    FrequencyCallback,
    LambdaCallback,
    LambdaDynamicWeight,
    on_batch_end,
    on_batch_start,
    on_epoch_end,
    on_epoch_start,
)


class Recorder(FrequencyCallback):
    def __init__(self, freq: Frequency, initial_step: int = 0) -> None:
        super().__init__(freq, initial_step)
        self.steps: list[tuple[int, int]] = []

    def step(self, *args: Any, **kwargs: Any) -> int:
        return len(args)

    def _update(self, result: int) -> None:
        self.steps.append((self.current_step, result))


DATA = batches(*blobs(20), size=8)  # 3 batches an epoch


@pytest.mark.parametrize(
    ("freq", "expected"),
    [
        (Frequency.EPOCH, [(0, 2), (1, 2)]),  # after each epoch, with (summary, val_summary)
        (Frequency.EPOCH_START, [(0, 0), (1, 0)]),
        (Frequency.BATCH, [(i, 1) for i in range(6)]),  # after each batch, with its summary
        (Frequency.BATCH_START, [(i, 0) for i in range(6)]),
    ],
)
def test_frequency_callback_steps_at_its_frequency(freq: Frequency, expected: list[tuple[int, int]]) -> None:
    recorder = Recorder(freq)
    make_manager().fit(DATA, epochs=2, callbacks_list=[recorder])
    assert recorder.steps == expected


def test_batch_frequency_counts_from_initial_step_across_fits() -> None:
    recorder = Recorder(Frequency.BATCH, initial_step=10)
    manager = make_manager()
    manager.fit(DATA, epochs=1, callbacks_list=[recorder])
    manager.fit(DATA, epochs=2, callbacks_list=[recorder])
    assert [s for s, _ in recorder.steps] == list(range(10, 16))


def test_bad_frequency_arguments() -> None:
    with pytest.raises(
        TypeError, match=r"`freq` must be `Frequency.EPOCH` or `Frequency.EPOCH_START`.*Received: freq='epoch'"
    ):
        Recorder("epoch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`initial_step` must be an int >= 0. Received: initial_step=-1"):
        Recorder(Frequency.EPOCH, initial_step=-1)
    with pytest.raises(
        ValueError,
        match=r"`freq` must be `Frequency.BATCH` or `Frequency.EPOCH` for this callback. Received: freq=Frequency.EPOCH_START",
    ):
        LambdaCallback(print, freq=Frequency.EPOCH_START)
    with pytest.raises(TypeError, match=r"`post_fn` must be a function or None. Received: post_fn=3"):
        LambdaCallback(post_fn=3)  # type: ignore[arg-type]


def test_decorators_call_the_function_at_their_hook() -> None:
    calls: list[tuple[str, Any]] = []

    @on_epoch_start
    def epoch_start(epoch: int) -> None:
        calls.append(("epoch_start", epoch))

    @on_epoch_end
    def epoch_end(epoch: int, summary: dict[str, float]) -> None:
        calls.append(("epoch_end", (epoch, sorted(summary))))

    @on_batch_start
    def batch_start(batch: int) -> None:
        calls.append(("batch_start", batch))

    @on_batch_end
    def batch_end(batch: int, summary: dict[str, Any]) -> None:
        calls.append(("batch_end", (batch, sorted(summary))))

    for callback in (epoch_start, epoch_end, batch_start, batch_end):
        assert isinstance(callback, LambdaCallback)
    make_manager().fit(
        DATA, epochs=1, val_dataset=DATA, callbacks_list=[epoch_start, epoch_end, batch_start, batch_end]
    )
    assert calls == [
        ("epoch_start", 0),
        ("batch_start", 0),
        ("batch_end", (0, ["accuracy", "loss"])),
        ("batch_start", 1),
        ("batch_end", (1, ["accuracy", "loss"])),
        ("batch_start", 2),
        ("batch_end", (2, ["accuracy", "loss"])),
        ("epoch_end", (0, ["accuracy", "loss", "lr", "val_accuracy", "val_loss"])),
    ]


def test_epoch_post_fn_gets_the_summary_of_the_fit() -> None:
    seen: list[dict[str, float]] = []
    _, summary = make_manager().fit(
        DATA,
        epochs=2,
        val_dataset=DATA,
        callbacks_list=[LambdaCallback(post_fn=lambda e, s: seen.append(s))],
        return_summary=True,
    )
    assert len(seen) == 2 and seen[-1] == summary


class Loss:
    weight = 1.0


def test_lambda_dynamic_weight_sets_the_weight_each_epoch_start() -> None:
    loss, weights = Loss(), []
    dynamic = LambdaDynamicWeight(lambda step: 1.0 / (step + 1), loss, freq=Frequency.EPOCH_START)
    watch = LambdaCallback(pre_fn=lambda e: weights.append(loss.weight))  # listed after: sees the new weight
    make_manager().fit(DATA, epochs=3, callbacks_list=[dynamic, watch])
    assert weights == [1.0, 0.5, pytest.approx(1 / 3)]


def test_dynamic_weight_writes_the_weight_and_checks_its_target() -> None:
    class Writer:
        def __init__(self) -> None:
            self.records: list[tuple[str, dict[str, float], int | None]] = []

        def add_scalars(self, tag: str, values: dict[str, float], step: int | None = None) -> None:
            self.records.append((tag, values, step))

    class Halving(DynamicWeight):
        def step(self, *args: Any, **kwargs: Any) -> float:
            return 0.5**self.current_step

    writer, loss = Writer(), Loss()
    make_manager().fit(DATA, epochs=2, callbacks_list=[Halving(loss, writer=writer)])
    # upstream's EPOCH semantics: the weight written after epoch e is the one epoch e used
    assert writer.records == [("Loss.weight", {"train": 1.0}, 1), ("Loss.weight", {"train": 1.0}, 2)]
    assert loss.weight == 0.5
    with pytest.raises(TypeError, match=r"`weighted` must have a `weight` attribute.*Received: weighted=3"):
        LambdaDynamicWeight(lambda s: s, 3)  # type: ignore[arg-type]
