"""The overlap family for segmentation: MeanIoU, InstanceIoU, Dice, PartialDice and HD95.

Who owns what: scores become class maps through `accuracy.predicted_classes`; `InstanceIoU`
derives from the summed `ConfusionMatrix`. Each metric keeps the state that makes its epoch
value exact over any batching: pooled counts (MeanIoU, PartialDice, InstanceIoU) or a mean over
samples of per-sample values (Dice, HD95). Nothing in an update waits for the device: HD95
measures distances with a dense distance transform instead of listing points with `nonzero`.
"""

from __future__ import annotations

import torch

from .accuracy import check_class_labels, check_dim_arg, predicted_classes
from .attributes import alias
from .confusion import ConfusionMatrix, check_num_classes, confusion_matrix, per_class_counts
from .metric import Metric, overrides

__all__ = [
    "HD95",
    "Dice",
    "InstanceIoU",
    "MeanIoU",
    "PartialDice",
    "dice",
    "hd95",
    "instance_iou",
    "mean_iou",
    "partial_dice",
    "squared_distance_transform",
]


def _classes(
    input: torch.Tensor, target: torch.Tensor, dim: int, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """Predicted and true class maps, and the number of score channels (None for integer input).

    A one-channel score map may come with a label map of its own shape (upstream's binary masks):
    the label's channel is dropped.
    """
    check_dim_arg(dim)
    target = check_class_labels(target)
    if target.dim() == 0:
        raise ValueError(f"`target` must have a batch dimension. Received: target.shape={tuple(target.shape)}")
    if isinstance(input, torch.Tensor) and input.is_floating_point() and input.shape == target.shape:
        if -input.dim() <= dim < input.dim() and input.shape[dim] == 1:
            target = target.squeeze(dim)
    pred = predicted_classes(input, target, dim, num_classes)
    channels = input.shape[dim] if input.dim() == target.dim() + 1 else None
    return pred, target, channels


def _check_eps(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative float. Received: {name}={value!r}")
    return float(value)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = torch.float32 if numerator.device.type == "mps" else torch.float64
    return ((numerator.to(dtype) + eps) / (denominator.to(dtype) + eps)).to(torch.float32)


# ---------------------------------------------------------------- IoU


def _iou_counts(input: torch.Tensor, target: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target, channels = _classes(input, target, dim)
    if channels == 1:  # binary logits: the IoU of the foreground
        p, t = pred.bool(), target != 0
        return (p & t).sum(), (p | t).sum()
    # the one-hot masks' intersection and union, summed over classes (labels out of range count once)
    valid = (target >= 0) if channels is None else (target >= 0) & (target < channels)
    intersection = (pred.eq(target) & valid).sum()
    return intersection, pred.numel() + valid.sum() - intersection


def mean_iou(input: torch.Tensor, target: torch.Tensor, *, dim: int = 1, smooth: float = 1e-4) -> torch.Tensor:
    """Upstream's mIoU of one batch: `(I + smooth) / (U + smooth)` of the one-hot masks.

    With several score channels, intersection and union are summed over all classes (scikit-
    learn's micro-averaged Jaccard); with one channel (`logit > 0`) it is the foreground's IoU.
    """
    intersection, union = _iou_counts(input, target, dim)
    return _ratio(intersection, union, _check_eps("smooth", smooth))


def instance_iou(input: torch.Tensor, target: torch.Tensor, num_classes: int, *, dim: int = 1) -> torch.Tensor:
    """The mean over classes of each class's IoU in one batch (classes absent from both left out)."""
    return _iou_of(confusion_matrix(input, target, num_classes, dim=dim))


def _iou_of(matrix: torch.Tensor) -> torch.Tensor:
    tp, _, fp, fn = per_class_counts(matrix)
    return (tp / (tp + fp + fn)).nanmean().to(torch.float32)


class MeanIoU(Metric):
    """Upstream's mIoU over every batch: pooled intersection over pooled union (see `mean_iou`).

    A subclass replacing `forward` makes the result the sample-weighted mean of its values.

    Args:
        dim: The class dimension of the scores.
        smooth: Added to intersection and union (so two empty masks score 1).
        threshold: In [0, 1); above 0 the IoU is mapped to `ceil(10 (iou - t) / (1 - t)) / 10`
            clipped to [0, 1], as upstream (applied to the epoch IoU).
        target: Optional key picking one entry of dict outputs and labels.
    """

    intersection: torch.Tensor
    union: torch.Tensor
    elements: torch.Tensor
    _dim, _smooth, _threshold = alias("dim"), alias("smooth"), alias("threshold")  # upstream 1.5's names

    def __init__(self, dim: int = 1, smooth: float = 1e-4, threshold: float = 0, *, target: str | None = None) -> None:
        super().__init__(target=target)
        self.dim = check_dim_arg(dim)
        self.smooth = _check_eps("smooth", smooth)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise ValueError(f"`threshold` must be in [0, 1). Received: threshold={threshold!r}")
        self.threshold = float(threshold)
        for name in ("intersection", "union", "elements"):
            self.add_state(name, torch.zeros((), dtype=torch.int64), "sum")
        self._fused = not overrides(self, MeanIoU, "forward")  # else a mean of the subclass's forward

    def _value(self, intersection: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
        iou = _ratio(intersection, union, self.smooth)
        if self.threshold == 0:
            return iou
        return (10 / (1 - self.threshold) * (iou - self.threshold)).clamp(0, 10).ceil() / 10

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._value(*_iou_counts(input, target, self.dim))

    @torch.no_grad()
    def update(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self._fused:
            return super().update(input, target)
        intersection, union = _iou_counts(input, target, self.dim)
        elements = torch.full((), target.numel(), dtype=torch.int64, device=intersection.device)
        for name, value in (("intersection", intersection), ("union", union), ("elements", elements)):
            setattr(self, name, getattr(self, name).to(value.device) + value)
        return self._value(intersection, union)

    def compute(self) -> torch.Tensor:
        """The IoU of every batch since `reset()` (NaN before any)."""
        if not self._fused:
            return super().compute()
        return torch.where(self.elements > 0, self._value(self.intersection, self.union), torch.nan)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, smooth={self.smooth}, threshold={self.threshold}"


class InstanceIoU(ConfusionMatrix):
    """The mean over classes of each class's IoU `tp / (tp + fp + fn)`, from the summed confusion matrix.

    Classes absent from both labels and predictions are left out of the mean (upstream's
    `nanmean`); the value is exact over any batching (upstream averaged batch values).
    """

    def value_of(self, matrix: torch.Tensor) -> torch.Tensor:
        return _iou_of(matrix)


# ---------------------------------------------------------------- Dice


def _per_sample_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """How often each class occurs in each sample: `(N, num_classes)`, labels out of range skipped."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1).long()
    rows = torch.arange(n, device=flat.device).unsqueeze(1) * num_classes
    index = torch.where((flat >= 0) & (flat < num_classes), rows + flat, n * num_classes).reshape(-1)
    counts = torch.zeros(n * num_classes + 1, dtype=torch.int64, device=flat.device)
    counts.index_add_(0, index, torch.ones_like(index))
    return counts[:-1].reshape(n, num_classes)


def dice(
    input: torch.Tensor, target: torch.Tensor, num_classes: int, *, dim: int = 1, eps: float = 1e-7
) -> torch.Tensor:
    """Each sample's Dice score, averaged over classes: shape `(N,)`.

    Per class `(2 |P & T| + eps) / (|P| + |T| + eps)`, so a class absent from both the sample's
    prediction and its label scores 1 (as upstream).
    """
    check_num_classes(num_classes)
    eps = _check_eps("eps", eps)
    pred, target, _ = _classes(input, target, dim, num_classes)
    hits = torch.where(pred.eq(target), target.long(), -1)
    intersection = _per_sample_counts(hits, num_classes)
    sizes = _per_sample_counts(pred, num_classes) + _per_sample_counts(target, num_classes)
    return _ratio(2 * intersection, sizes, eps).mean(dim=1)


def partial_dice(
    input: torch.Tensor, target: torch.Tensor, class_index: int, *, dim: int = 1, eps: float = 1e-7
) -> torch.Tensor:
    """The Dice score of one class over a whole batch: `(2 |P & T| + eps) / (|P| + |T| + eps)`."""
    intersection, predicted, actual = _class_sizes(input, target, class_index, dim)
    return _ratio(2 * intersection, predicted + actual, _check_eps("eps", eps))


def _class_sizes(
    input: torch.Tensor, target: torch.Tensor, class_index: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pred, target, _ = _classes(input, target, dim)
    p, t = pred.eq(class_index), target.eq(class_index)
    return (p & t).sum(), p.sum(), t.sum()


class Dice(Metric):
    """The Dice score, averaged over classes per sample and then over every sample (see `dice`).

    Args:
        num_classes: The number of classes; None takes the score channels of each batch
            (`input.shape[dim]`, as upstream's one-hot encoding did), so integer class maps need it.
        dim: The class dimension of the scores.
        eps: Added to numerator and denominator of each class's score.
        target: Optional key picking one entry of dict outputs and labels.
    """

    def __init__(
        self, num_classes: int | None = None, /, dim: int = 1, *, eps: float = 1e-7, target: str | None = None
    ) -> None:
        super().__init__(target=target)
        self.num_classes = check_num_classes(num_classes) if num_classes is not None else None
        self.dim = check_dim_arg(dim)
        self._eps = _check_eps("eps", eps)

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice(input, target, self._classes_of(input, target), dim=self.dim, eps=self._eps).mean()

    def _classes_of(self, input: torch.Tensor, target: torch.Tensor) -> int:
        if self.num_classes is not None:
            return self.num_classes
        if (
            isinstance(input, torch.Tensor)
            and input.dim() == target.dim() + 1
            and -input.dim() <= self.dim < input.dim()
        ):
            return int(input.shape[self.dim])
        raise ValueError(
            f"Dice() without `num_classes` takes the classes from score inputs with a class dimension `dim`={self.dim}; "
            f"give `num_classes` for class maps. Received: input of shape "
            f"{tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__} and target of shape "
            f"{tuple(target.shape)}"
        )

    def extra_repr(self) -> str:
        return f"{self.num_classes}, dim={self.dim}, eps={self._eps}"


class PartialDice(Metric):
    """The Dice score of class `c`, from its pooled counts over every batch (see `partial_dice`).

    A subclass replacing `forward` makes the result the sample-weighted mean of its values.

    Args:
        c: The class index scored.
        dim: The class dimension of the scores.
        eps: Added to numerator and denominator.
        target: Optional key picking one entry of dict outputs and labels.
    """

    intersection: torch.Tensor
    predicted: torch.Tensor
    actual: torch.Tensor
    elements: torch.Tensor

    def __init__(self, c: int, /, dim: int = 1, *, eps: float = 1e-7, target: str | None = None) -> None:
        super().__init__(target=target)
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise ValueError(f"`c` must be a non-negative class index. Received: c={c!r}")
        self.class_idx = c
        self.dim = check_dim_arg(dim)
        self._eps = _check_eps("eps", eps)
        for name in ("intersection", "predicted", "actual", "elements"):
            self.add_state(name, torch.zeros((), dtype=torch.int64), "sum")
        self._fused = not overrides(self, PartialDice, "forward")  # else a mean of the subclass's forward

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return partial_dice(input, target, self.class_idx, dim=self.dim, eps=self._eps)

    @torch.no_grad()
    def update(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self._fused:
            return super().update(input, target)
        intersection, predicted, actual = _class_sizes(input, target, self.class_idx, self.dim)
        elements = torch.full((), target.numel(), dtype=torch.int64, device=intersection.device)
        for name, value in zip(
            ("intersection", "predicted", "actual", "elements"), (intersection, predicted, actual, elements)
        ):
            setattr(self, name, getattr(self, name).to(value.device) + value)
        return _ratio(2 * intersection, predicted + actual, self._eps)

    def compute(self) -> torch.Tensor:
        """The Dice score of every batch since `reset()` (NaN before any)."""
        if not self._fused:
            return super().compute()
        value = _ratio(2 * self.intersection, self.predicted + self.actual, self._eps)
        return torch.where(self.elements > 0, value, torch.nan)

    def extra_repr(self) -> str:
        return f"{self.class_idx}, dim={self.dim}, eps={self._eps}"


# ---------------------------------------------------------------- Hausdorff distance

_CHUNK = 1 << 24  # elements of the (rows, n, n) tensor built per step of the distance transform


def squared_distance_transform(mask: torch.Tensor, *, batch_dims: int = 1) -> torch.Tensor:
    """The squared euclidean distance from every element to the nearest True element of `mask`.

    Distances are measured in index units over the dims after the first `batch_dims`, each
    sample alone; `inf` where a sample's mask is empty. Exact, by one brute-force minimum per
    axis (the transform is separable), so memory per step is bounded and nothing syncs.
    """
    dist = torch.where(mask, 0.0, torch.inf).to(torch.float32)
    for axis in range(batch_dims, mask.dim()):
        n = mask.shape[axis]
        moved = dist.movedim(axis, -1)
        rows = moved.reshape(-1, n)
        offsets = torch.arange(n, dtype=torch.float32, device=mask.device)
        gaps = (offsets.unsqueeze(1) - offsets.unsqueeze(0)).square()  # (to, from)
        step = max(1, _CHUNK // (n * n))
        rows = torch.cat([(chunk.unsqueeze(1) + gaps).amin(dim=-1) for chunk in torch.split(rows, step)])
        dist = rows.reshape(moved.shape).movedim(-1, axis)
    return dist


def _row_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The `q`-quantile of each row's non-NaN values, interpolated linearly (as numpy).

    `torch.nanquantile` refuses inputs over 2**24 elements, which a batch of volumes exceeds.
    """
    ordered = values.sort(dim=1).values  # NaN sorts last
    position = values.isnan().logical_not().sum(dim=1, keepdim=True).sub(1).clamp_min(0).to(values.dtype) * q
    below, above = position.floor(), position.ceil()
    low, high = ordered.gather(1, below.long()), ordered.gather(1, above.long())
    return (low + (high - low) * (position - below)).squeeze(1)


def hd95(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    dim: int = 1,
    class_index: int | None = None,
    percentile: float = 95.0,
) -> torch.Tensor:
    """Each sample's 95th-percentile Hausdorff distance between predicted and true masks: `(N,)`.

    For every foreground point of either mask, the distance to the nearest foreground point of
    the other; the percentile (linear interpolation, as numpy) of all these. In index units;
    0 when both masks are empty, `inf` when only one is.

    Args:
        input: Masks of the shape of `target`, or scores with classes on `dim`.
        target: Integer or bool masks `(N, *spatial)`.
        dim: The class dimension of scores.
        class_index: The foreground class; `None` takes every non-zero class (upstream).
        percentile: In [0, 100]; 100 gives the Hausdorff distance.
    """
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile <= 100:
        raise ValueError(f"`percentile` must be in [0, 100]. Received: percentile={percentile!r}")
    pred, target, _ = _classes(input, target, dim)
    if class_index is None:
        p, t = pred.ne(0), target.ne(0)
    else:
        p, t = pred.eq(class_index), target.eq(class_index)
    to_target = squared_distance_transform(t).sqrt()
    to_pred = squared_distance_transform(p).sqrt()
    n = p.shape[0]
    distances = torch.cat(
        [torch.where(p, to_target, torch.nan).reshape(n, -1), torch.where(t, to_pred, torch.nan).reshape(n, -1)], dim=1
    )
    both, either = p.reshape(n, -1).any(dim=1) & t.reshape(n, -1).any(dim=1), (p | t).reshape(n, -1).any(dim=1)
    quantile = _row_quantile(distances, percentile / 100)  # replaced below where a mask is empty
    return torch.where(both, quantile, torch.where(either, torch.inf, 0.0))


class HD95(Metric):
    """The 95th-percentile Hausdorff distance per sample, averaged over every sample (see `hd95`).

    Upstream 1.5 pooled a whole batch into one point set, with the batch index as a coordinate.

    Args:
        dim: The class dimension of score inputs.
        class_index: The foreground class; `None` takes every non-zero class.
        percentile: The percentile of the distances, in [0, 100].
        target: Optional key picking one entry of dict outputs and labels.
    """

    def __init__(
        self,
        *,
        dim: int = 1,
        class_index: int | None = None,
        percentile: float = 95.0,
        target: str | None = None,
    ) -> None:
        super().__init__(target=target)
        self.dim = check_dim_arg(dim)
        if class_index is not None and (isinstance(class_index, bool) or not isinstance(class_index, int)):
            raise ValueError(f"`class_index` must be an int or None. Received: class_index={class_index!r}")
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile <= 100:
            raise ValueError(f"`percentile` must be in [0, 100]. Received: percentile={percentile!r}")
        self.class_index, self.percentile = class_index, float(percentile)

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return hd95(input, target, dim=self.dim, class_index=self.class_index, percentile=self.percentile).mean()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, class_index={self.class_index}, percentile={self.percentile}"
