"""The confusion-matrix family: ConfusionMatrix, BinaryConfusionMatrix, Precision, Recall and F1.

Who owns what: `count_pairs` is the one place where labels become counts; the classes keep a
count matrix as a "sum" state and derive their value from it, so the epoch value is exact over
any batching (upstream 1.5 averaged per-batch values instead). Scores become class indices
through `accuracy.predicted_classes`. The overlap module builds its IoU on `ConfusionMatrix`.

Counting uses `index_add_` into a fixed-size vector rather than `torch.bincount`: on CUDA,
`bincount` reads the labels' minimum and maximum back to the host, a sync on every batch.
"""

from __future__ import annotations

from typing import Literal

import torch

from .accuracy import check_class_labels, check_dim_arg, predicted_classes
from .attributes import alias
from .metric import Metric, overrides

__all__ = [
    "F1",
    "Average",
    "BinaryConfusionMatrix",
    "ConfusionMatrix",
    "Precision",
    "Recall",
    "binary_confusion_matrix",
    "check_num_classes",
    "confusion_matrix",
    "count_pairs",
    "f1",
    "per_class_counts",
    "precision",
    "recall",
]

Average = Literal["binary", "micro", "macro", "weighted"]
"""How per-class values become one: the `class_index` class alone, pooled counts, the mean over
the classes that occur, or the mean weighted by each class's number of true samples."""

_AVERAGES = ("binary", "micro", "macro", "weighted")


def check_num_classes(num_classes: object) -> int:
    """Check a `num_classes` argument: a positive int."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}")
    return num_classes


def _stat_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def count_pairs(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs: `(num_classes, num_classes)`, int64.

    Rows are true classes and columns predicted ones (scikit-learn's layout). Pairs whose label
    or prediction is outside `[0, num_classes)` are skipped (an ignore index such as 255), as
    upstream. Nothing here waits for the device.
    """
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = (target >= 0) & (target < num_classes) & (pred >= 0) & (pred < num_classes)
    overflow = num_classes * num_classes  # invalid pairs land in one extra bin, dropped below
    index = torch.where(valid, target * num_classes + pred, overflow)
    counts = torch.zeros(overflow + 1, dtype=torch.int64, device=index.device)
    counts.index_add_(0, index, torch.ones_like(index))
    return counts[:overflow].reshape(num_classes, num_classes)


def confusion_matrix(input: torch.Tensor, target: torch.Tensor, num_classes: int, *, dim: int = 1) -> torch.Tensor:
    """The confusion matrix of one batch: `(num_classes, num_classes)` int64 counts.

    Args:
        input: Scores with `num_classes` classes on `dim` (or one binary logit when
            `num_classes` is 2), or integer predictions of the shape of `target`.
        target: Integer class labels.
        num_classes: The number of classes.
        dim: The class dimension of scores.
    """
    check_num_classes(num_classes)
    return count_pairs(predicted_classes(input, target, dim, num_classes), target, num_classes)


def binary_confusion_matrix(
    input: torch.Tensor, target: torch.Tensor, *, class_index: int = 1, dim: int = 1
) -> torch.Tensor:
    """Counts of `class_index` against every other class: `[[tn, fp], [fn, tp]]`, int64."""
    pred = predicted_classes(input, target, dim)
    return count_pairs(pred.eq(class_index), check_class_labels(target).eq(class_index), 2)


def per_class_counts(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(tp, tn, fp, fn)`, one float entry per class, from a confusion matrix (rows true)."""
    m = matrix.to(_stat_dtype(matrix.device))
    tp = m.diagonal()
    fp = m.sum(dim=0) - tp
    fn = m.sum(dim=1) - tp
    return tp, m.sum() - tp - fp - fn, fp, fn


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"`eps` must be a positive float. Received: eps={eps!r}")
    return float(eps)


def _check_average(average: object, num_classes: int | None) -> None:
    if average not in _AVERAGES:
        raise ValueError(f"`average` must be one of {_AVERAGES}. Received: average={average!r}")
    if average != "binary" and num_classes is None:
        raise ValueError(
            f"`num_classes` is required when `average` is {average!r} (only 'binary' counts one class against "
            f"the rest). Received: num_classes=None"
        )


def _check_class_index(class_index: object, num_classes: int | None) -> int:
    if isinstance(class_index, bool) or not isinstance(class_index, int) or class_index < 0:
        raise ValueError(f"`class_index` must be a non-negative int. Received: class_index={class_index!r}")
    if num_classes is not None and class_index >= num_classes:
        raise ValueError(
            f"`class_index` must be less than `num_classes`={num_classes}. Received: class_index={class_index}"
        )
    return class_index


class _CountingMetric(Metric):
    """A metric whose state is a count matrix (a "sum" state) and whose value derives from it.

    A subclass replacing `forward` makes it a sample-weighted mean of that `forward` (see `Metric`).
    """

    matrix: torch.Tensor

    def __init__(self, size: int, dim: int, target: str | None) -> None:
        super().__init__(target=target)
        self.dim = check_dim_arg(dim)
        self.add_state("matrix", torch.zeros((size, size), dtype=torch.int64), "sum")
        self._fused = not overrides(self, _CountingMetric, "forward")  # else a mean of the subclass's forward

    def batch_matrix(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The count matrix of one batch: what subclasses define."""
        raise NotImplementedError

    def value_of(self, matrix: torch.Tensor) -> torch.Tensor:
        """The metric value of a count matrix: what subclasses define."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The value of this batch alone (pure)."""
        return self.value_of(self.batch_matrix(input, target))

    @torch.no_grad()
    def update(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Add the batch counts to `matrix` and return the batch value."""
        if not self._fused:
            return super().update(input, target)
        counts = self.batch_matrix(input, target)
        self.matrix = self.matrix.to(counts.device) + counts
        return self.value_of(counts)

    def compute(self) -> torch.Tensor:
        """The value of the summed matrix: exact over every batch since `reset()`."""
        return self.value_of(self.matrix) if self._fused else super().compute()


class ConfusionMatrix(_CountingMetric):
    """The confusion matrix over every batch: `(num_classes, num_classes)` int64 counts.

    Rows are true classes, columns predicted ones (scikit-learn's layout); labels outside
    `[0, num_classes)` are skipped. `result` is the matrix itself (upstream 1.5 gave NaN there
    and the matrix in `results`, which is kept as an alias).

    Args:
        num_classes: The number of classes (a positive int).
        dim: The class dimension of score inputs.
        target: Optional key picking one entry of dict outputs and labels.
    """

    def __init__(self, num_classes: int, /, *, dim: int = 1, target: str | None = None) -> None:
        super().__init__(check_num_classes(num_classes), dim, target)
        self.num_classes = num_classes

    @property
    def results(self) -> torch.Tensor:
        """The summed matrix (upstream 1.5's name for it)."""
        return self.compute()

    def batch_matrix(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return confusion_matrix(input, target, self.num_classes, dim=self.dim)

    def value_of(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix

    def extra_repr(self) -> str:
        return f"{self.num_classes}, dim={self.dim}"


class BinaryConfusionMatrix(_CountingMetric):
    """Base of the metrics computed from true/false positives and negatives.

    Subclasses define `forward_metric(tp, tn, fp, fn)` elementwise (one entry per class, or
    scalars); `average` says how the per-class values become the result:
    "binary" scores `class_index` against the rest (upstream 1.5's only mode); "micro" pools the
    counts of every class; "macro" is the mean over the classes that occur in the labels or
    the predictions (scikit-learn's default labels); "weighted" weighs each class by its
    number of true samples. Ratios with a zero denominator are 0 (scikit-learn's
    `zero_division=0`); the result is NaN before any batch.

    Args:
        dim: The class dimension of score inputs (argmax over it; one channel: `logit > 0`).
        class_index: The positive class when `average="binary"`.
        eps: Floor of denominators, so that 0/0 is 0 (counts are integers: exact otherwise).
        average: One of "binary", "micro", "macro", "weighted".
        num_classes: The number of classes; required unless `average="binary"`.
        target: Optional key picking one entry of dict outputs and labels.
    """

    def __init__(
        self,
        dim: int = 1,
        *,
        class_index: int = 1,
        eps: float = 1e-7,
        average: Average = "binary",
        num_classes: int | None = None,
        target: str | None = None,
    ) -> None:
        if num_classes is not None:
            check_num_classes(num_classes)
        _check_average(average, num_classes)
        _check_eps(eps)
        size = 2 if average == "binary" else num_classes
        assert size is not None  # checked by _check_average
        super().__init__(size, dim, target)
        self.num_classes = num_classes
        self.class_index = class_index
        self.eps = eps
        self.average = average

    _dim = alias("dim")  # upstream 1.5's names, which its subclasses assign and read
    _eps: float
    _class_index: int

    @property
    def class_index(self) -> int:
        """The positive class of the binary mode (`_class_index` is upstream's name of it)."""
        return self._class_index

    @class_index.setter
    def class_index(self, value: int) -> None:
        self._class_index = _check_class_index(value, self.num_classes)

    @property
    def eps(self) -> float:
        """The floor of denominators (`_eps` is upstream's name of it)."""
        return self._eps

    @eps.setter
    def eps(self, value: float) -> None:
        self._eps = _check_eps(value)

    def batch_matrix(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.average == "binary":
            return binary_confusion_matrix(input, target, class_index=self._class_index, dim=self.dim)
        assert self.num_classes is not None
        return confusion_matrix(input, target, self.num_classes, dim=self.dim)

    def forward_metric(self, tp: torch.Tensor, tn: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        """The metric of true/false positives and negatives, elementwise: what subclasses define."""
        raise NotImplementedError(f"{type(self).__name__} must define `forward_metric(tp, tn, fp, fn)`.")

    def ratio(self, numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
        """`numerator / denominator`, 0 where the denominator is 0."""
        return numerator / denominator.clamp_min(self._eps)

    def value_of(self, matrix: torch.Tensor) -> torch.Tensor:
        tp, tn, fp, fn = per_class_counts(matrix)
        if self.average == "binary":
            value = self.forward_metric(tp[1], tn[1], fp[1], fn[1])
        elif self.average == "micro":
            value = self.forward_metric(tp.sum(), tn.sum(), fp.sum(), fn.sum())
        else:
            per_class = self.forward_metric(tp, tn, fp, fn)
            weight = (tp + fp + fn > 0).to(tp.dtype) if self.average == "macro" else tp + fn
            value = torch.where(weight > 0, per_class, 0).mul(weight).sum() / weight.sum().clamp_min(1)
        empty = matrix.sum() == 0
        return torch.where(empty, torch.nan, value).to(torch.float32)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, class_index={self._class_index}, average={self.average!r}, num_classes={self.num_classes}"
        )


class Precision(BinaryConfusionMatrix):
    """Precision `tp / (tp + fp)`: the fraction of positive predictions that are right."""

    def forward_metric(self, tp: torch.Tensor, tn: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        return self.ratio(tp, tp + fp)


class Recall(BinaryConfusionMatrix):
    """Recall `tp / (tp + fn)`: the fraction of positive samples that are found."""

    def forward_metric(self, tp: torch.Tensor, tn: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        return self.ratio(tp, tp + fn)


class F1(BinaryConfusionMatrix):
    """F1 `2 tp / (2 tp + fp + fn)`: the harmonic mean of precision and recall."""

    def forward_metric(self, tp: torch.Tensor, tn: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        return self.ratio(2 * tp, 2 * tp + fp + fn)


def _functional(
    metric: type[BinaryConfusionMatrix],
    input: torch.Tensor,
    target: torch.Tensor,
    average: Average,
    num_classes: int | None,
    class_index: int,
    dim: int,
) -> torch.Tensor:
    return metric(dim, class_index=class_index, average=average, num_classes=num_classes).forward(input, target)


def precision(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    average: Average = "binary",
    num_classes: int | None = None,
    class_index: int = 1,
    dim: int = 1,
) -> torch.Tensor:
    """The precision of one batch (see `Precision` for the arguments)."""
    return _functional(Precision, input, target, average, num_classes, class_index, dim)


def recall(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    average: Average = "binary",
    num_classes: int | None = None,
    class_index: int = 1,
    dim: int = 1,
) -> torch.Tensor:
    """The recall of one batch (see `Recall` for the arguments)."""
    return _functional(Recall, input, target, average, num_classes, class_index, dim)


def f1(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    average: Average = "binary",
    num_classes: int | None = None,
    class_index: int = 1,
    dim: int = 1,
) -> torch.Tensor:
    """The F1 score of one batch (see `F1` for the arguments)."""
    return _functional(F1, input, target, average, num_classes, class_index, dim)
