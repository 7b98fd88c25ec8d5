"""`fit`: the same numbers as a hand-written loop, its options, and its errors."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from core_testkit import Accuracy, batches, blobs, hand_epoch, linear

from torchmanager_core import BasicTrainingManager, Callback, Manager, StopTraining
from torchmanager_core.errors import LossError, MetricError, NonFiniteLossError


def make_manager(model: torch.nn.Module | None = None, **kwargs: Any) -> Manager:
    model = model or linear()
    kwargs.setdefault("loss_fn", torch.nn.CrossEntropyLoss())
    return Manager(model, torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5), **kwargs)


def test_two_epochs_equal_the_hand_loop_with_uneven_batches() -> None:
    x, y = blobs(70)
    data = batches(x, y, 16)  # 16, 16, 16, 16, 6
    hand = linear()
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.3, momentum=0.5)
    hand_epoch(hand, optimizer, data)
    expected_loss, expected_acc = hand_epoch(hand, optimizer, data)

    manager = make_manager(metrics={"accuracy": Accuracy()})
    model, summary = manager.fit(data, epochs=2, return_summary=True)
    assert summary["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert summary["accuracy"] == pytest.approx(expected_acc, abs=1e-7)
    for a, b in zip(hand.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert manager.current_epoch == 2


def test_validation_values_are_prefixed_and_equal_test() -> None:
    x, y = blobs(40)
    manager = make_manager(metrics={"accuracy": Accuracy()})
    _, summary = manager.fit(batches(x, y, 8), epochs=1, val_dataset=batches(x, y, 8), return_summary=True)
    tested = manager.test(batches(x, y, 8))
    assert summary["val_loss"] == pytest.approx(tested["loss"])
    assert summary["val_accuracy"] == pytest.approx(tested["accuracy"])
    with torch.no_grad():
        assert tested["loss"] == pytest.approx(F.cross_entropy(manager.raw_model(x), y).item(), rel=1e-6)


def test_val_metrics_run_only_in_validation() -> None:
    calls = {"train": 0}

    def val_only(y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        calls["train"] += 1
        return (y.argmax(-1) == label).float().mean()

    x, y = blobs(24)
    manager = make_manager(metrics={"val_acc": val_only})
    _, summary = manager.fit(batches(x, y, 8), epochs=1, return_summary=True)
    assert "val_acc" not in summary and calls["train"] == 0
    _, summary = manager.fit(batches(x, y, 8), epochs=2, val_dataset=batches(x, y, 8), return_summary=True)
    assert calls["train"] == 3 and "val_acc" in summary and "val_val_acc" not in summary


def test_iterations_stop_mid_epoch() -> None:
    seen: list[int] = []

    class Count(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            seen.append(batch)

    x, y = blobs(40)
    make_manager().fit(batches(x, y, 10), iterations=6, callbacks_list=[Count()])
    assert seen == [0, 1, 2, 3, 0, 1]


def test_initial_epoch_and_continuing_fit() -> None:
    epochs: list[int] = []

    class Epochs(Callback):
        def on_epoch_start(self, epoch: int) -> None:
            epochs.append(epoch)

    x, y = blobs(16)
    manager = make_manager()
    manager.fit(batches(x, y, 8), epochs=3, initial_epoch=1, callbacks_list=[Epochs()])
    manager.fit(batches(x, y, 8), epochs=5, callbacks_list=[Epochs()])  # continues at the epoch reached
    assert epochs == [1, 2, 3, 4]


def test_hooks_run_in_order_and_only_where_overridden() -> None:
    events: list[str] = []

    class Recorder(Callback):
        def on_train_start(self, initial_epoch: int = 0) -> None:
            events.append(f"train_start {initial_epoch}")

        def on_epoch_start(self, epoch: int) -> None:
            events.append(f"epoch_start {epoch}")

        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            events.append(f"batch_end {batch} {sorted(summary)}")

        def on_validation_end(self, epoch: int, val_summary: Any) -> None:
            events.append(f"validation_end {epoch} {sorted(val_summary)}")

        def on_epoch_end(self, epoch: int, summary: Any = None, val_summary: Any = None) -> None:
            events.append(f"epoch_end {epoch} {sorted(summary)} {sorted(val_summary)}")

        def on_train_end(self, model: torch.nn.Module) -> None:
            events.append(f"train_end {type(model).__name__}")

    class Idle(Callback):
        pass

    x, y = blobs(16)
    make_manager(metrics={"accuracy": Accuracy()}).fit(
        batches(x, y, 8), epochs=1, val_dataset=batches(x, y, 16), callbacks_list=[Recorder(), Idle()]
    )
    assert events == [
        "train_start 0",
        "epoch_start 0",
        "batch_end 0 ['accuracy', 'loss']",
        "batch_end 1 ['accuracy', 'loss']",
        "validation_end 0 ['accuracy', 'loss']",
        "epoch_end 0 ['accuracy', 'loss', 'lr'] ['accuracy', 'loss']",
        "train_end Linear",
    ]


@pytest.mark.parametrize("how", ["exception", "flag", "keyboard"])
def test_training_stops_cleanly(how: str) -> None:
    class Stopper(Callback):
        def __init__(self, manager: Manager) -> None:
            self.manager = manager
            self.ended = False

        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            if batch == 1:
                if how == "exception":
                    raise StopTraining(0)
                if how == "keyboard":
                    raise KeyboardInterrupt
                self.manager.stop_training = True

        def on_train_end(self, model: torch.nn.Module) -> None:
            self.ended = True

    x, y = blobs(40)
    manager = make_manager()
    stopper = Stopper(manager)
    if how == "keyboard":  # Ctrl-C is not swallowed: it reaches the caller, after `on_train_end`
        with pytest.raises(KeyboardInterrupt):
            manager.fit(batches(x, y, 8), epochs=10, callbacks_list=[stopper])
        assert stopper.ended and (manager.current_epoch, manager.batch_index) == (0, 2)
        return
    model = manager.fit(batches(x, y, 8), epochs=10, callbacks_list=[stopper])
    assert model is manager.raw_model and stopper.ended
    assert (manager.current_epoch, manager.batch_index) == (0, 2)


def test_user_values_are_sample_weighted() -> None:
    class WithExtra(Manager):
        def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
            summary = super().train_step(x_train, y_train)
            summary["size"] = float(len(x_train))
            summary["twice"] = 2 * summary["loss"]
            return summary

    x, y = blobs(20)
    model = linear()
    manager = WithExtra(model, torch.optim.SGD(model.parameters(), lr=0.0), loss_fn=torch.nn.CrossEntropyLoss())
    _, summary = manager.fit(batches(x, y, 8), epochs=1, return_summary=True)
    assert summary["size"] == pytest.approx((8 * 8 + 8 * 8 + 4 * 4) / 20)
    assert summary["twice"] == pytest.approx(2 * summary["loss"], rel=1e-6)
    with torch.no_grad():
        assert summary["loss"] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)  # lr 0: one model


def test_dict_loss_of_plain_callables_reports_each_part() -> None:
    x, y = blobs(30)
    model = linear()
    manager = Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn={"ce": F.cross_entropy, "nll": lambda o, t: F.nll_loss(o.log_softmax(-1), t) * 2},
    )
    result = manager.test(batches(x, y, 7))
    with torch.no_grad():
        ce = F.cross_entropy(model(x), y).item()
    assert result["ce_loss"] == pytest.approx(ce, rel=1e-6)
    assert result["nll_loss"] == pytest.approx(2 * ce, rel=1e-6)
    assert result["loss"] == pytest.approx(3 * ce, rel=1e-6)


def test_a_torchmetrics_style_metric_with_compute() -> None:
    class ComputeStyle:
        """Like torchmetrics: `forward` gives the batch value, `compute()` the epoch value."""

        def __init__(self) -> None:
            self.inner = Accuracy()

        def reset(self) -> None:
            self.inner.reset()

        def __call__(self, y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            return self.inner(y, label)

        def compute(self) -> torch.Tensor:
            return self.inner.correct / self.inner.seen

    x, y = blobs(24)
    model = linear()
    result = Manager(model, metrics={"acc": ComputeStyle()}, loss_fn=F.cross_entropy).test(batches(x, y, 5))
    with torch.no_grad():
        assert result["acc"] == pytest.approx((model(x).argmax(-1) == y).float().mean().item())


def test_epoch_summaries_reach_the_logger(caplog: pytest.LogCaptureFixture) -> None:
    x, y = blobs(16)
    with caplog.at_level(logging.INFO, logger="torchmanager"):
        make_manager().fit(batches(x, y, 8), epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Epoch")]
    assert len(lines) == 2 and lines[1].startswith("Epoch 2/2: loss=")


class UserSteps(BasicTrainingManager):
    def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        loss = F.mse_loss(self.model(x_train).squeeze(-1), y_train)
        self.backward(loss)
        self.optimize()
        return {"loss": loss.detach()}

    def test_step(self, x_test: Any, y_test: Any) -> dict[str, Any]:
        return {"loss": F.mse_loss(self.model(x_test).squeeze(-1), y_test)}


def test_basic_training_manager_needs_only_the_steps() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    model = torch.nn.Linear(4, 1)
    manager = UserSteps(model, torch.optim.SGD(model.parameters(), lr=0.05))
    manager.fit(batches(x, y, 16), epochs=30)
    with torch.no_grad():
        assert F.mse_loss(model(x).squeeze(-1), y).item() < 0.05


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, r"`epochs` must be a positive int\. Received: epochs=0"),
        ({"epochs": -2}, r"Received: epochs=-2"),
        ({}, r"exactly one of `epochs` and `iterations`"),
        ({"epochs": 2, "iterations": 3}, r"exactly one of `epochs` and `iterations`"),
        ({"epochs": 2, "initial_epoch": 2}, r"`initial_epoch` must be an int in \[0, 2\)"),
        ({"epochs": 1, "on_nonfinite_loss": "skip"}, r"Received: on_nonfinite_loss='skip'"),
        ({"epochs": 1, "device": "cpu", "devices": "cpu"}, r"either `device`.*or `devices`"),
        ({"epochs": 1, "device": "cuda:7"}, r"CUDA device\(s\) are visible"),
        ({"epochs": 1, "device": "tpu"}, r"`device` must name a device.*Received: device='tpu'"),
    ],
)
def test_bad_fit_arguments(kwargs: dict[str, Any], match: str) -> None:
    x, y = blobs(8)
    with pytest.raises(ValueError, match=match):
        make_manager().fit(batches(x, y, 4), **kwargs)


def test_fit_without_optimizer_or_loss() -> None:
    x, y = blobs(8)
    with pytest.raises(ValueError, match=r"needs an optimizer.*Received: optimizer=None"):
        Manager(linear(), loss_fn=F.cross_entropy).fit(batches(x, y, 4), epochs=1)
    model = linear()
    with pytest.raises(ValueError, match=r"needs a `loss_fn`.*Received: loss_fn=None"):
        Manager(model, torch.optim.SGD(model.parameters(), lr=0.1)).fit(batches(x, y, 4), epochs=1)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError, match=r"`model` must be a torch.nn.Module\. Received: model=str"):
        Manager("model")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`loss_fn` must be a loss"):
        Manager(linear(), loss_fn=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`metrics` must be a dict"):
        Manager(linear(), metrics=[Accuracy()])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`loss` names the total of `loss_fn` in a summary"):
        Manager(linear(), metrics={"loss": Accuracy()})


def test_empty_data_and_bad_batches() -> None:
    with pytest.raises(ValueError, match=r"`training_dataset` is empty"):
        make_manager().fit([], epochs=1)
    with pytest.raises(ValueError, match=r"yielded no batches"):
        make_manager().test([])
    x, _ = blobs(8)
    with pytest.raises(TypeError, match=r"A batch must hold an input and a label.*Received: batch of 1 items"):
        make_manager().fit([(x,)], epochs=1)  # a longer batch's first two items are taken, as upstream did


def test_loss_errors_name_the_loss_and_shapes() -> None:
    x, y = blobs(8)
    with pytest.raises(LossError, match=r"Loss `loss` failed on model output shape \(8, 3\) and label shape \(8, 2\)"):
        make_manager().fit([(x, torch.zeros(8, 2, dtype=torch.long))], epochs=1)
    with pytest.raises(LossError, match=r"must return a scalar tensor.*Received: shape \(8,\)"):
        make_manager(loss_fn=torch.nn.CrossEntropyLoss(reduction="none")).fit([(x, y)], epochs=1)
    with pytest.raises(MetricError, match=r"Metric `bad` failed"):
        make_manager(metrics={"bad": lambda o, t: o[:, 7]}).fit([(x, y)], epochs=1)


def test_nonfinite_loss_raises_or_stops() -> None:
    x, y = blobs(8)
    x[0, 0] = math.nan
    with pytest.raises(NonFiniteLossError, match=r"training loss of epoch 1 is nan"):
        make_manager().fit([(x, y)], epochs=3)
    manager = make_manager()
    manager.fit([(x, y)], epochs=3, on_nonfinite_loss="stop")
    assert manager.current_epoch == 1


@pytest.mark.parametrize("where", [{}, {"device": "cpu"}, {"devices": ["cpu"]}])
def test_predict_returns_each_batch_output_on_the_cpu(where: dict[str, Any]) -> None:
    x, y = blobs(10)
    manager = make_manager()
    outputs = manager.predict(batches(x, y, 4), **where)
    with torch.no_grad():
        expected = manager.raw_model(x)
    assert [len(o) for o in outputs] == [4, 4, 2]
    torch.testing.assert_close(torch.cat(outputs), expected)
    assert manager.predict([x[:3]])[0].shape == (3, 3)  # inputs alone work too


def test_progress_bar_and_multi_gpu_fallback_message(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchmanager_core import devices

    monkeypatch.setattr(devices, "_warned", set())  # as in a fresh process
    x, y = blobs(16)
    with caplog.at_level(logging.WARNING, logger="torchmanager"):
        manager = make_manager(metrics={"accuracy": Accuracy()})
        manager.fit(batches(x, y, 8), epochs=2, show_verbose=True, use_multi_gpus=True)
        manager.fit(batches(x, y, 8), epochs=3, use_multi_gpus=True)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "2/2 [" in err  # a tqdm bar per epoch, with its step count
    assert "Epoch 3/3" not in err  # no bar without show_verbose
    fallbacks = [r.getMessage() for r in caplog.records if "use_multi_gpus=True" in r.getMessage()]
    assert len(fallbacks) == 1 and "torchrun" in fallbacks[0]  # said once per process


def test_upstream_progress_bar_callback(capsys: pytest.CaptureFixture[str]) -> None:
    from torchmanager_core.progress import ProgressBar, VerboseType

    x, y = blobs(24)
    bar = ProgressBar(3, verbose_type=VerboseType.METRICS, refresh_s=0.0)
    make_manager(metrics={"accuracy": Accuracy()}).fit(
        batches(x, y, 8), epochs=2, val_dataset=batches(x, y, 8), callbacks_list=[bar]
    )
    err = capsys.readouterr().err
    assert err.count("3/3 [") == 2 and "accuracy=" in err and "val_accuracy=" in err
    assert "loss=" not in err  # METRICS: the losses are left out
    with pytest.raises(TypeError, match=r"`verbose_type` must be a VerboseType.*Received: verbose_type='all'"):
        ProgressBar(3, verbose_type="all")  # type: ignore[arg-type]


def test_fit_logs_what_it_trains(caplog: pytest.LogCaptureFixture) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    model[0].requires_grad_(False)
    manager = Manager(model, torch.optim.SGD(model[1].parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss())
    x, y = blobs(16)
    with caplog.at_level(logging.INFO, logger="torchmanager"):
        manager.fit(batches(x, y, 8), epochs=1)
    # 4*8+8 = 40 frozen, 8*3+3 = 27 trainable
    assert "Training Sequential: 67 parameters (27 trainable, 40 frozen) on cpu, precision 32" in caplog.text


def test_a_test_with_nothing_to_report_says_why(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    model = linear()
    manager = Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss())
    x, y = blobs(16)
    manager.fit(batches(x, y, 8), epochs=1)
    manager.save_checkpoint(tmp_path / "m.model")
    restored = Manager.from_checkpoint(tmp_path / "m.model", model=linear())
    with caplog.at_level(logging.WARNING, logger="torchmanager"):
        assert restored.test(batches(x, y, 8)) == {}
    assert "Test has nothing to report: the manager has no `loss_fn` and no `metrics`" in caplog.text
    assert "gets them with `loss_fn=` and `metrics=`" in caplog.text
    again = Manager.from_checkpoint(tmp_path / "m.model", model=linear(), loss_fn=torch.nn.CrossEntropyLoss())
    expected = F.cross_entropy(model(x), y).item()
    assert again.test(batches(x, y, 8))["loss"] == pytest.approx(expected, rel=1e-6)
