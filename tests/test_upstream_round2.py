"""Code written for upstream torchmanager 1.5, round two: what real projects set, name and call (issue 21).

Each test is built the way a subclass or a call site written for 1.5 does it, with 1.5's behaviour
(read from its sources) as the reference for what happens, and an independent computation (torch's
functional ops, a hand loop, scikit-learn) for the numbers. Five kinds:

1. attributes 1.5's classes assign in their own `__init__` or expose, which a subclass may assign;
2. names 1.5 accepted (metric names, constructor calls);
3. calls 1.5's loop made on user objects, in the form it made them;
4. values 1.5 returned;
5. imports without side effects on the packages' names.

Tests marked `xfail(strict=True, reason="needs ... in the loop")` describe a change in the manager or
the loop (issue 19's redesign owns those files); they pass once the change is made.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import torchmanager
from torchmanager import losses, metrics
from torchmanager.callbacks import Callback
from torchmanager_core.protocols import WrappedFn

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def needs(change: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"needs {change} in the loop")


def classification(n_batches: int = 3, batch: int = 4, seed: int = 1) -> Batches:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 3, generator=generator), torch.randint(0, 2, (batch,), generator=generator))
        for _ in range(n_batches)
    ]


def linear() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def whole(batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    """The data set as one batch: the reference computes each epoch value on it in one call."""
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


@torch.no_grad()
def cross_entropy_of(model: torch.nn.Module, batches: Batches) -> float:
    """torch's cross entropy of `model` over the whole data set, in one call."""
    x, y = whole(batches)
    return float(F.cross_entropy(model(x), y))


# -- 1. attributes a subclass assigns ------------------------------------------------------------


class TeacherKL(losses.Loss):
    """A distillation loss as 1.5 code wrote it: `self.target` names the teacher's entry, read in `forward`."""

    def __init__(self, target: str = "teacher") -> None:
        super().__init__()
        self.target = target  # free in 1.5 (its key was `_target`): the whole dict reaches `forward`

    def forward(self, input: Any, target: Any) -> torch.Tensor:
        return F.kl_div(input["student"].log_softmax(1), input[self.target].softmax(1), reduction="batchmean")


def test_a_loss_subclass_assigns_target_for_its_own_use_as_in_1_5() -> None:
    loss = TeacherKL()
    y = {"student": torch.randn(4, 3), "teacher": torch.randn(4, 3)}
    expected = F.kl_div(y["student"].log_softmax(1), y["teacher"].softmax(1), reduction="batchmean")
    torch.testing.assert_close(loss(y, torch.zeros(4)), expected)
    assert loss.target == "teacher" and loss._target is None  # 1.5 picked nothing: `_target` was its key

    class TowardVector(losses.Loss):  # a tensor target, and a module one (registered, as torch does)
        def __init__(self, target: torch.Tensor) -> None:
            super().__init__()
            self.target = target

        def forward(self, input: torch.Tensor, label: Any) -> torch.Tensor:
            return F.mse_loss(input, self.target.expand_as(input))

    goal = torch.tensor([1.0, -2.0, 0.5])
    x = torch.randn(5, 3)
    torch.testing.assert_close(TowardVector(goal)(x, None), ((x - goal) ** 2).mean())
    learned = TowardVector(torch.nn.Parameter(goal.clone()))  # registered as torch registers parameters
    assert learned.target is dict(learned.named_parameters())["target"]
    learned(x, None).backward()
    torch.testing.assert_close(learned.target.grad, -2 * (x - goal).mean(0) / 3)
    buffered = losses.Loss()
    buffered.register_buffer("target", goal)
    assert buffered.target is goal and set(buffered.state_dict()) >= {"target"}
    teacher = torch.nn.Linear(3, 3)
    buffered = losses.Loss()
    buffered.target = teacher
    assert buffered.target is teacher and "target.weight" in buffered.state_dict()


def test_assigning_1_5_s_key_attribute_changes_what_is_picked() -> None:
    class OutLoss(losses.MSE):
        def __init__(self) -> None:
            super().__init__()
            self._target = "out"  # 1.5's key attribute

    y, label = {"out": torch.randn(4, 2), "aux": torch.randn(4, 2)}, {"out": torch.randn(4, 2)}
    torch.testing.assert_close(OutLoss()(y, label), F.mse_loss(y["out"], label["out"]))


def box_ssim(x: torch.Tensor, y: torch.Tensor, k: int, pixel_range: float) -> torch.Tensor:
    """SSIM with a k x k box window, computed with `avg_pool2d` (an independent filter), per image."""

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, k, stride=1)

    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    c1, c2 = (0.01 * pixel_range) ** 2, (0.03 * pixel_range) ** 2
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim.mean(dim=(1, 2, 3))


def test_an_ssim_subclass_assigns_its_own_window_as_1_5_s_ssim_did() -> None:
    class BoxSSIM(metrics.SSIM):
        def __init__(self, channels: int, k: int) -> None:
            super().__init__(channels, pixel_range=1)
            box = torch.full((k, k), 1 / k**2).expand(channels, 1, k, k).contiguous()
            self.window = torch.nn.Parameter(box, requires_grad=False)  # 1.5's SSIM assigned `self.window` so

    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    metric = BoxSSIM(3, 5)
    torch.testing.assert_close(metric(x, y), box_ssim(x, y, 5, 1.0).mean())
    assert metric.window.shape == (3, 1, 5, 5)
    plain = metrics.SSIM(3, pixel_range=1)  # without its own window: the gaussian
    assert plain.window.shape == (3, 1, 11, 11) and not torch.allclose(plain(x, y), metric(x, y))


def test_confusion_metrics_use_1_5_s_private_settings_that_subclasses_assign() -> None:
    from sklearn.metrics import f1_score, precision_score

    class ClassTwoF1(metrics.F1):
        def __init__(self) -> None:
            super().__init__()
            self._class_index, self._dim, self._eps = 2, 1, 1e-9

    torch.manual_seed(0)
    scores, labels = torch.randn(40, 3), torch.randint(0, 3, (40,))
    f1 = ClassTwoF1()
    f1(scores, labels)
    assert (f1.class_index, f1.dim, f1.eps) == (2, 1, 1e-9)
    assert float(f1.result) == pytest.approx(f1_score(labels == 2, scores.argmax(1) == 2))
    precision = metrics.Precision()
    precision.class_index = 0  # the public names are settable too, checked as in the constructor
    precision(scores, labels)
    assert float(precision.result) == pytest.approx(precision_score(labels == 0, scores.argmax(1) == 0))
    with pytest.raises(ValueError, match=r"`eps` must be a positive float\. Received: eps=-1"):
        precision.eps = -1


def test_a_mean_iou_subclass_reads_and_assigns_1_5_s_private_settings() -> None:
    class ForegroundIoU(metrics.MeanIoU):
        def __init__(self) -> None:
            super().__init__()
            self._smooth = 0.0  # 1.5's names of smooth and threshold

        def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            pred = input.argmax(self._dim) == 1
            inter, union = (pred & (target == 1)).sum(), (pred | (target == 1)).sum()
            return (inter + self._smooth) / (union + self._smooth)

    scores, labels = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 1, 0])
    metric = ForegroundIoU()
    assert float(metric(scores, labels)) == pytest.approx(1 / 3) and metric.smooth == 0.0
    metric._threshold = 0.5
    assert metric.threshold == 0.5


def test_a_kl_div_subclass_replaces_1_5_s_metric_fn() -> None:
    class BatchMeanKL(losses.KLDiv):
        def __init__(self) -> None:
            super().__init__()
            self._metric_fn = torch.nn.KLDivLoss(reduction="batchmean")  # where 1.5 kept torch's loss

    torch.manual_seed(0)
    x, t = torch.randn(4, 5).log_softmax(1), torch.randn(4, 5).softmax(1)
    loss = BatchMeanKL()
    assert loss.reduction == "batchmean"
    torch.testing.assert_close(loss(x, t), F.kl_div(x, t, reduction="batchmean"))


# Every attribute 1.5's classes assign in their own `__init__` (names it mangled, `__x`, left out: no
# subclass reaches them), with the settable properties they expose; read from 1.5's sources. Each
# can be read here and assigned back by a subclass.
UPSTREAM_ATTRIBUTES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "Metric": (lambda: metrics.Metric(lambda a, b: a), ("_metric_fn", "_target")),
    "Accuracy": (metrics.Accuracy, ("_metric_fn", "_target")),
    "SparseCategoricalAccuracy": (lambda: metrics.SparseCategoricalAccuracy(1), ("_target", "dim")),
    "Dice (metric)": (lambda: metrics.Dice(3), ("_eps", "_target", "dim", "num_classes")),
    "PartialDice": (lambda: metrics.PartialDice(1), ("_eps", "_target", "class_idx", "dim")),
    "F1": (metrics.F1, ("_class_index", "_dim", "_eps", "_target")),
    "MeanIoU": (metrics.MeanIoU, ("_dim", "_smooth", "_target", "_threshold")),
    "PSNR": (metrics.PSNR, ("_target", "denormalize_fn", "max_value")),
    "SSIM": (lambda: metrics.SSIM(3), ("_target", "denormalize_fn", "pixel_range", "window")),
    "MS_SSIM": (lambda: metrics.MS_SSIM(3), ("_target", "pixel_range", "weights", "window")),
    "FeatureMetric": (lambda: metrics.FeatureMetric(lambda a, b: a), ("_target", "feature_extractor")),
    "KID": (metrics.KID, ("_target", "c", "degree", "feature_extractor", "scale")),
    "LPIPS": (metrics.LPIPS, ("_target", "feature_extractor", "lins")),
    "metric (decorator)": (lambda: metrics.metric(lambda a, b: a), ("_metric_fn", "_target", "wrapped_metric_fn")),
    "Loss": (lambda: losses.Loss(lambda a, b: a), ("_metric_fn", "_target", "weight")),
    "MultiLosses": (lambda: losses.MultiLosses([losses.MSE()]), ("_target", "weight")),
    "CrossEntropy": (losses.CrossEntropy, ("_metric_fn", "_target", "weight")),
    "FocalCrossEntropy": (
        losses.FocalCrossEntropy,
        ("_target", "alpha", "calculate_average", "gamma", "ignore_index", "weight"),
    ),
    "KLDiv": (losses.KLDiv, ("_metric_fn", "_target", "replace_nan", "softmax_temperature", "weight")),
    "Dice (loss)": (losses.Dice, ("_target", "dim", "smooth", "softmax_input", "weight")),
    "DiceCE": (losses.DiceCE, ("_target", "ce_lambda", "dice_lambda", "dim", "smooth", "softmax_input", "weight")),
    "MSE": (losses.MSE, ("_target", "reduction", "replace_nan", "weight")),
    "Identity": (losses.Identity, ("_target", "reduction", "replace_nan", "weight")),
    "loss (decorator)": (lambda: losses.loss(lambda a, b: a), ("_metric_fn", "_target", "wrapped_metric_fn")),
    "ParallelLoss": (lambda: losses.ParallelLoss(losses.MSE()), ("_target", "module", "weight")),
}
READ_ONLY_UPSTREAM = {"wrapped_metric_fn"}  # a property without setter in 1.5 too


@pytest.mark.parametrize("name", sorted(UPSTREAM_ATTRIBUTES))
def test_every_attribute_1_5_assigned_can_be_read_and_assigned_by_a_subclass(name: str) -> None:
    make, attributes = UPSTREAM_ATTRIBUTES[name]
    obj = make()
    for attribute in attributes:
        value = getattr(obj, attribute)
        if attribute in READ_ONLY_UPSTREAM:
            continue
        setattr(obj, attribute, value)  # what a subclass's `__init__` does after `super().__init__()`
        assert getattr(obj, attribute) is value or getattr(obj, attribute) == value, attribute


# The manager: the attributes 1.5's managers assign or expose settable, and the names a 1.5 subclass
# could use freely because 1.5 did not (`scaler`, `device`, ...), which are read-only properties here.


class OwnScaler(torchmanager.Manager):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)  # its own AMP, as a 1.5 subclass kept one


def fit_and_compare(manager: torchmanager.Manager, model: torch.nn.Module, batches: Batches) -> None:
    """Fit one epoch and compare the weights with a hand loop's (SGD, cross entropy)."""
    hand = linear()
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.1)
    for x, y in batches:
        optimizer.zero_grad()
        F.cross_entropy(hand(x), y).backward()
        optimizer.step()
    manager.fit(batches, epochs=1)
    for a, b in zip(hand.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def manager_of(cls: type[torchmanager.Manager] = torchmanager.Manager, **kwargs: Any) -> torchmanager.Manager:
    model = linear()
    options: dict[str, Any] = {"loss_fn": losses.CrossEntropy(), **kwargs}
    return cls(model, torch.optim.SGD(model.parameters(), lr=0.1), **options)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("scaler"),
        pytest.param("device"),
        pytest.param("history"),
        pytest.param("precision"),
    ],
)
def test_a_manager_subclass_assigns_names_1_5_left_free(name: str) -> None:
    values = {"scaler": torch.amp.GradScaler("cpu", enabled=False), "device": torch.device("cpu"), "history": []}
    value = values.get(name, "32")

    class Subclass(torchmanager.Manager):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            setattr(self, name, value)

    manager = manager_of(Subclass)
    assert getattr(manager, name) is value
    fit_and_compare(manager, manager.raw_model, classification())


def test_loss_dict_is_settable_as_in_1_5() -> None:
    manager = manager_of()
    manager.loss_dict = {"ce": losses.CrossEntropy(), "half": losses.CrossEntropy(weight=0.5)}  # type: ignore[misc]
    batches = classification()
    result = manager.test(batches)
    ce = cross_entropy_of(manager.raw_model, batches)
    assert result == pytest.approx({"loss": 1.5 * ce, "ce_loss": ce, "half_loss": 0.5 * ce}, rel=1e-5)


def test_a_callback_reads_current_batch_as_in_1_5() -> None:
    seen: list[int] = []
    manager = manager_of()

    class Reader(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            seen.append(manager.current_batch)  # type: ignore[attr-defined]

    manager.fit(classification(), epochs=2, callbacks_list=[Reader()])
    assert seen == [0, 1, 2, 0, 1, 2]


# -- 2. names 1.5 accepted -----------------------------------------------------------------------


def test_losses_given_as_metrics_report_as_1_5_named_them() -> None:
    """1.5 took loss objects in `metrics=`: under `*_loss` as they are, under another name with `_loss` appended."""
    batches = classification()
    manager = manager_of(metrics={"ce_loss": losses.CrossEntropy(), "half": losses.CrossEntropy(weight=0.5)})
    assert set(manager.metric_fns) == {"ce_loss", "half_loss"}
    result = manager.test(batches)
    ce = cross_entropy_of(manager.raw_model, batches)
    assert result == pytest.approx({"loss": ce, "ce_loss": ce, "half_loss": 0.5 * ce}, rel=1e-5)
    _, summary = manager.fit(batches, epochs=1, val_dataset=batches, return_summary=True)
    assert {"ce_loss", "half_loss", "val_ce_loss", "val_half_loss"} <= set(summary)
    ce = cross_entropy_of(manager.raw_model, batches)
    assert summary["val_ce_loss"] == pytest.approx(ce, rel=1e-5)


def test_a_val_loss_metric_is_accepted_beside_no_loss_fn() -> None:
    """In a testing manager without `loss_fn`, a metric `val_loss` is the only value of its name (1.5 took it)."""
    model = linear()
    manager = torchmanager.TestingManager(model, metrics={"val_loss": losses.CrossEntropy()})
    batches = classification()
    (name, value), *rest = manager.test(batches).items()
    assert not rest and name in ("loss", "val_loss")  # 1.5 named it `loss`: see the kind-4 test
    assert value == pytest.approx(cross_entropy_of(model, batches), rel=1e-5)


@pytest.mark.parametrize(
    ("loss_fn", "metrics_", "match"),
    [
        (
            {"ce": losses.CrossEntropy()},
            {"ce_loss": losses.MSE()},
            r"Two values would be reported as `ce_loss` in an epoch's summary: loss `ce` and metric `ce_loss`",
        ),
        (
            losses.CrossEntropy(),
            {"val_loss": losses.MSE()},
            r"Two values would be reported as `val_loss` in an epoch's summary: the total loss on validation and "
            r"metric `val_loss` on validation",
        ),
        (
            losses.CrossEntropy(),
            {"ce": losses.CrossEntropy(), "ce_loss": losses.MSE()},
            r"Two metrics would report as `ce_loss`: a loss given as a metric reports as `<name>_loss` \(as in "
            r"torchmanager 1\.5\); rename one\. Received: metrics keys \['ce', 'ce_loss'\]",
        ),
        (
            losses.CrossEntropy(),
            {"loss": metrics.MAE()},
            r"`loss` names the total of `loss_fn` in a summary; give this metric another name\. "
            r"Received: metrics key 'loss'",
        ),
    ],
    ids=["metric-beside-loss-part", "val-loss-beside-loss-fn", "renamed-loss-beside-same-name", "metric-named-loss"],
)
def test_names_that_would_overwrite_one_another_are_still_refused(
    loss_fn: Any, metrics_: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        manager_of(loss_fn=loss_fn, metrics=metrics_)


def hand_dice(scores: torch.Tensor, labels: torch.Tensor, eps: float = 1e-7) -> float:
    """Each sample's Dice averaged over classes, then over samples, by loops over one-hot masks."""
    pred, classes = scores.argmax(1), scores.shape[1]
    per_sample = []
    for p, t in zip(pred, labels, strict=True):
        per_class = [
            (2 * ((p == c) & (t == c)).sum() + eps) / ((p == c).sum() + (t == c).sum() + eps) for c in range(classes)
        ]
        per_sample.append(float(torch.stack(per_class).mean()))
    return sum(per_sample) / len(per_sample)


def test_dice_without_num_classes_takes_the_classes_of_the_scores() -> None:
    """Upstream's own test `test_0102::test_dice_metric` calls `metrics.Dice()`."""
    torch.manual_seed(0)
    scores = torch.randn(4, 4, 8, 8)
    labels = torch.randn_like(scores).argmax(1)
    dice = metrics.Dice()
    assert float(dice(scores, labels)) == pytest.approx(hand_dice(scores, labels), rel=1e-5)
    partial = metrics.PartialDice(2)
    p, t = scores.argmax(1) == 2, labels == 2
    expected = (2 * (p & t).sum() + 1e-7) / (p.sum() + t.sum() + 1e-7)
    assert float(partial(scores, labels)) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match=r"give `num_classes` for class maps\. Received: input of shape \(4, 8, 8\)"):
        dice(labels, labels)


def test_decorated_losses_and_metrics_are_wrapped_functions_as_in_1_5() -> None:
    """Upstream's own test `test_0103::test_wrapped_fn`: the decorators' objects expose `wrapped_metric_fn`."""

    def gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).mean()

    made = [
        losses.loss(gap),
        losses.loss_fn(target="out", weight=2)(gap),
        metrics.metric(gap),
        metrics.metric_fn("out")(gap),
    ]
    for fn in made:
        assert isinstance(fn, WrappedFn) and fn.wrapped_metric_fn is gap
    assert not isinstance(losses.Loss(gap), WrappedFn) and not isinstance(metrics.Metric(gap), WrappedFn)
    a, b = torch.randn(3), torch.randn(3)
    assert float(made[1]({"out": a}, {"out": b})) == pytest.approx(2 * float(gap(a, b)))


# -- 3. calls 1.5's loop made on user objects ------------------------------------------------------


class EMAOptimizer(torch.optim.Optimizer):
    """An EMA wrapper as public packages built on torchmanager 1.5 write one: it wraps an optimizer without
    `Optimizer.__init__`, and its `zero_grad` takes no argument (1.5's loop called `zero_grad()`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, decay: float = 0.5) -> None:  # no super().__init__()
        self.optimizer, self.decay, self.zero_grad_calls = optimizer, decay, 0
        self.ema = [p.detach().clone() for group in optimizer.param_groups for p in group["params"]]

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = self.optimizer.step(closure)
        params = [p for group in self.param_groups for p in group["params"]]
        with torch.no_grad():
            for average, p in zip(self.ema, params, strict=True):
                average.mul_(self.decay).add_(p, alpha=1 - self.decay)
        return loss

    def zero_grad(self) -> None:  # type: ignore[override]
        self.zero_grad_calls += 1
        self.optimizer.zero_grad()

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"optimizer": self.optimizer.state_dict(), "ema": self.ema}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.ema = state_dict["ema"]


def test_an_ema_optimizer_wrapper_trains_as_with_1_5() -> None:
    model = linear()
    ema = EMAOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    manager = torchmanager.Manager(model, ema, loss_fn=losses.CrossEntropy())
    batches = classification()
    fit_and_compare(manager, model, batches)
    assert ema.zero_grad_calls == len(batches)
    hand = linear()  # the EMA of the hand loop's weights
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.1)
    average = [p.detach().clone() for p in hand.parameters()]
    for x, y in batches:
        optimizer.zero_grad()
        F.cross_entropy(hand(x), y).backward()
        optimizer.step()
        average = [0.5 * a + 0.5 * p.detach() for a, p in zip(average, hand.parameters(), strict=True)]
    for a, b in zip(average, ema.ema, strict=True):
        torch.testing.assert_close(a, b)


class WarmupScheduler:
    """A learning-rate schedule as 1.5 code wrote one: `step()` and `get_last_lr()` (what 1.5's
    `LrScheduler` called), not a torch `LRScheduler` subclass."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int) -> None:
        self.optimizer, self.warmup, self.epoch = optimizer, warmup, 0
        self.base = [group["lr"] for group in optimizer.param_groups]
        self._set()

    def _set(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * min(1.0, (self.epoch + 1) / self.warmup)

    def step(self) -> None:
        self.epoch += 1
        self._set()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]


def test_lr_scheduler_steps_a_schedule_that_is_not_a_torch_scheduler() -> None:
    manager = manager_of()
    assert manager.optimizer is not None
    schedule = WarmupScheduler(manager.optimizer, warmup=4)
    rates: list[float] = []

    class Rates(Callback):
        def on_epoch_start(self, epoch: int) -> None:
            rates.append(schedule.get_last_lr()[0])

    manager.fit(classification(), epochs=3, callbacks_list=[Rates(), torchmanager.callbacks.LrScheduler(schedule)])  # type: ignore[arg-type]
    assert rates == pytest.approx([0.025, 0.05, 0.075])


class PlainMetric:
    """A metric of 1.5's `Resulting` protocol that is not a `torch.nn.Module`: 1.5's loop called
    `metric(y, label)`, `reset()`, `result`, `to(device)`, `train()` and `eval()` on it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.total, self.count = torch.zeros(()), 0

    def __call__(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = (input.argmax(1) == target).float().mean()
        self.total, self.count = self.total + value * len(target), self.count + len(target)
        return value

    @property
    def result(self) -> torch.Tensor:
        return self.total / self.count

    def reset(self) -> None:
        self.total, self.count = torch.zeros(()), 0

    def to(self, device: torch.device) -> PlainMetric:
        self.calls.append(f"to {device}")
        self.total = self.total.to(device)
        return self

    def train(self, mode: bool = True) -> PlainMetric:
        self.calls.append("train" if mode else "eval")
        return self

    def eval(self) -> PlainMetric:
        return self.train(False)


def test_a_plain_metric_is_moved_and_put_in_eval_mode_as_1_5_did() -> None:
    metric = PlainMetric()
    manager = manager_of(metrics={"acc": metric})
    batches = classification()
    manager.test(batches)
    x, y = whole(batches)
    assert float(metric.result) == pytest.approx(float((manager.raw_model(x).argmax(1) == y).float().mean()))
    assert "to cpu" in metric.calls and "eval" in metric.calls


# -- 4. values 1.5 returned ------------------------------------------------------------------------


def accuracy_metric() -> metrics.Metric:
    return metrics.SparseCategoricalAccuracy(dim=1)


def test_test_reports_val_metrics_without_their_prefix_as_1_5() -> None:
    batches = classification()
    manager = manager_of(metrics={"val_acc": accuracy_metric()})
    result = manager.test(batches)
    x, y = whole(batches)
    assert set(result) == {"loss", "acc"}
    assert result["acc"] == pytest.approx(float((manager.raw_model(x).argmax(1) == y).float().mean()))


def test_the_val_summary_a_callback_gets_names_val_metrics_without_their_prefix() -> None:
    got: list[tuple[set[str], set[str]]] = []

    class Keys(Callback):
        def on_epoch_end(self, epoch: int, summary: Any = None, val_summary: Any = None) -> None:
            got.append((set(summary), set(val_summary)))

    manager = manager_of(metrics={"acc": accuracy_metric(), "val_top": accuracy_metric()})
    _, merged = manager.fit(
        classification(), epochs=1, val_dataset=classification(seed=2), callbacks_list=[Keys()], return_summary=True
    )
    assert got[0][1] == {"loss", "acc", "top"}  # 1.5: test()'s names, prefixed once when merged
    assert {"val_loss", "val_acc", "val_top"} <= set(merged) and "val_val_top" not in merged


def test_a_client_test_step_calls_the_dict_loss_fn_as_in_1_5() -> None:
    class Client(torchmanager.Manager):  # type: ignore[misc]
        def test_step(self, x_test: Any, y_test: Any) -> dict[str, Any]:
            y = self.model(x_test)
            loss = self.loss_fn(y, y_test)  # 1.5: the dict's losses, summed and weighted
            return {"loss": loss, **self.eval(y, y_test)}

    manager = manager_of(Client, loss_fn={"ce": losses.CrossEntropy(), "half": losses.CrossEntropy(weight=0.5)})
    batches = classification()
    total = manager.test(batches)["loss"]
    assert total == pytest.approx(1.5 * cross_entropy_of(manager.raw_model, batches), rel=1e-5)


@pytest.mark.parametrize("layout", ["triple", "dict"])
def test_batches_with_more_than_input_and_label_unpack_as_in_1_5(layout: str) -> None:
    batches = classification()
    if layout == "triple":
        data: list[Any] = [(x, y, torch.arange(len(y))) for x, y in batches]  # (input, label, sample index)
    else:
        data = [{"image": x, "label": y} for x, y in batches]
    manager = manager_of()
    result = manager.test(data)
    assert result["loss"] == pytest.approx(cross_entropy_of(manager.raw_model, batches), rel=1e-5)


def test_a_metric_named_lr_keeps_its_value_in_the_epoch_summary() -> None:
    """1.5 put no learning rate in summaries, so a metric `lr` was reported as itself; here the rate overwrote it."""
    batches = classification()
    manager = manager_of(metrics={"lr": accuracy_metric()})
    hand = linear()  # the accuracy of each batch, under the weights before that batch's update
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.1)
    hits = 0
    for x, y in batches:
        out = hand(x)
        hits += int((out.argmax(1) == y).sum())
        optimizer.zero_grad()
        F.cross_entropy(out, y).backward()
        optimizer.step()
    _, summary = manager.fit(batches, epochs=1, return_summary=True)
    assert summary["lr"] == pytest.approx(hits / sum(len(y) for _, y in batches))


def test_loss_dict_lists_the_losses_given_as_metrics() -> None:
    ce = losses.CrossEntropy()
    manager = manager_of(metrics={"ce": ce, "acc": accuracy_metric()})
    assert manager.loss_dict == {"loss": manager.loss_fn, "ce_loss": ce}  # type: ignore[attr-defined]


# -- 5. imports without side effects ---------------------------------------------------------------

PACKAGES = [
    "torchmanager",
    "torchmanager_core",
    "torchmanager_metrics",
    "torchmanager_losses",
    "torchmanager_data",
    "torchmanager_callbacks",
]

_IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys, types
roots = {roots}
packages = []
for root in roots:
    module = importlib.import_module(root)
    packages.append(root)
    packages += [info.name for info in pkgutil.walk_packages(module.__path__, root + ".") if info.ispkg]
before = {{name: dict(vars(importlib.import_module(name))) for name in packages}}
for name in packages:
    for info in pkgutil.iter_modules(sys.modules[name].__path__):
        importlib.import_module(f"{{name}}.{{info.name}}")
changed = [
    f"{{name}}.{{key}}: {{type(value).__name__}} -> {{type(vars(sys.modules[name]).get(key)).__name__}}"
    for name in packages for key, value in before[name].items() if vars(sys.modules[name]).get(key) is not value
]
print(json.dumps({{"changed": changed, "packages": len(packages)}}))
"""


def test_importing_every_submodule_leaves_every_package_name_as_it_was() -> None:
    """Importing `torchmanager.metrics.metric` once replaced the `metric` decorator with the module (upstream's
    own `test_0103::test_wrapped_fn` failed on it); no import of any submodule changes a package's names now."""
    script = _IMPORT_EVERYTHING.format(roots=PACKAGES)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["changed"] == [] and report["packages"] > 10


def test_the_decorators_and_module_paths_mean_what_they_meant_in_1_5() -> None:
    import torchmanager.losses.loss
    import torchmanager.metrics.metric

    assert torchmanager.metrics.metric is torchmanager.metrics.metric_fn.__globals__["metric"]
    assert callable(torchmanager.losses.loss) and not isinstance(torchmanager.losses.loss, type(sys))
    assert sys.modules["torchmanager.losses.loss"].Loss is losses.Loss
    # 1.5's `torchmanager.metrics.accuracy` was the module; the one-batch function is in it
    accuracy = importlib.import_module("torchmanager.metrics.accuracy")
    assert (
        torchmanager.metrics.accuracy is accuracy
        and accuracy.SparseCategoricalAccuracy is metrics.SparseCategoricalAccuracy
    )
    assert float(accuracy.accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3]))) == pytest.approx(2 / 3)
