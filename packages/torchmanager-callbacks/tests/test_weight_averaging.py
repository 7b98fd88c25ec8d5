"""EMA: the average against a hand loop over the weights after each update, validation (and a test() inside
fit) on the averaged weights with training unchanged, its state through a resume, bad arguments."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from cb_testkit import batches, blobs, make_manager

from torchmanager_callbacks import EMA, LambdaCallback, LastCheckpoint
from torchmanager_core.callbacks import Callback

TRAIN, VAL = batches(*blobs(32), size=8), batches(*blobs(16, seed=1), size=8)


class Weights(Callback):
    """Records a copy of the training weights after every update and the averaged ones at every epoch's end."""

    def __init__(self, ema: EMA) -> None:
        self.ema, self.after_update, self.averaged_at_epoch_end = ema, [], []  # type: ignore[var-annotated]

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        self.after_update.append({k: v.clone() for k, v in self.manager.raw_model.state_dict().items()})

    def on_epoch_end(self, epoch: int, summary: Any = None, val_summary: Any = None) -> None:
        self.averaged_at_epoch_end.append(self.ema.averaged_state_dict())


def test_the_average_follows_a_hand_loop_and_validation_uses_it() -> None:
    manager = make_manager(lr=0.5)
    initial = {k: v.clone() for k, v in manager.raw_model.state_dict().items()}
    ema = EMA(decay=0.75, apply_on_train_end=False)
    record = Weights(ema)
    manager.fit(TRAIN, epochs=3, val_dataset=VAL, callbacks_list=[ema, record])

    averaged = dict(initial)  # by hand: a = 0.75 a + 0.25 w after each update
    expected_at_epoch_end = []
    for step, weights in enumerate(record.after_update, start=1):
        averaged = {k: 0.75 * averaged[k] + 0.25 * weights[k] for k in averaged}
        if step % 4 == 0:
            expected_at_epoch_end.append(averaged)
    for got, expected in zip(record.averaged_at_epoch_end, expected_at_epoch_end, strict=True):
        for key in expected:
            torch.testing.assert_close(got[key], expected[key])

    # validation ran on the averaged weights: its loss, by hand with torch.nn.functional
    x, y = torch.cat([b[0] for b in VAL]), torch.cat([b[1] for b in VAL])
    for summary, weights in zip(manager.history, record.averaged_at_epoch_end, strict=True):
        by_hand = F.cross_entropy(F.linear(x, weights["weight"], weights["bias"]), y)
        assert summary["val_loss"] == pytest.approx(float(by_hand), rel=1e-5)

    # and training went on from the training weights: the same as a run without EMA, bit for bit
    plain = make_manager(lr=0.5)
    plain.fit(TRAIN, epochs=3, val_dataset=VAL)
    assert torch.equal(plain.raw_model.weight, manager.raw_model.weight)
    assert ema.updates == 12


def test_the_model_keeps_the_average_after_fit_and_a_test_inside_fit_uses_it() -> None:
    manager = make_manager(lr=0.5)
    ema = EMA(decay=0.5)
    tested: list[float] = []
    tester = LambdaCallback(post_fn=lambda e, s: tested.append(manager.test(VAL, callbacks_list=[ema])["loss"]))
    manager.fit(TRAIN, epochs=2, val_dataset=VAL, callbacks_list=[ema, tester])
    assert tested == pytest.approx([summary["val_loss"] for summary in manager.history])  # both on the average
    averaged = ema.averaged_state_dict()
    assert all(torch.equal(v, averaged[k]) for k, v in manager.raw_model.state_dict().items())


def test_the_average_resumes_exactly(tmp_path: Any) -> None:
    path = str(tmp_path / "last.model")
    whole = make_manager(lr=0.5)
    whole_ema = EMA(decay=0.9)
    whole.fit(TRAIN, epochs=4, val_dataset=VAL, callbacks_list=[whole_ema])

    first = make_manager(lr=0.5)
    first.fit(TRAIN, epochs=2, val_dataset=VAL, callbacks_list=[EMA(decay=0.9), LastCheckpoint(first, path)])
    resumed, resumed_ema = make_manager(lr=0.5, seed=7), EMA(decay=0.9)
    resumed.fit(TRAIN, epochs=4, val_dataset=VAL, callbacks_list=[resumed_ema], resume_from=path)
    assert resumed.history == whole.history  # validation on the same averages, epoch by epoch
    for key, value in whole_ema.averaged_state_dict().items():
        assert torch.equal(resumed_ema.averaged_state_dict()[key], value)
    assert os.path.isfile(path)
    with pytest.raises(ValueError, match=r"The checkpoint's EMA averaged with decay=0.9; resume it with the same"):
        make_manager().fit(TRAIN, epochs=4, callbacks_list=[EMA(decay=0.5)], resume_from=path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decay": 1.0}, r"`decay` must be a number in \[0, 1\), such as 0.999. Received: decay=1.0"),
        ({"decay": -0.1}, r"`decay` must be a number in \[0, 1\), such as 0.999. Received: decay=-0.1"),
        ({"every_n_steps": 0}, r"`every_n_steps` must be an int >= 1. Received: every_n_steps=0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EMA(**kwargs)
