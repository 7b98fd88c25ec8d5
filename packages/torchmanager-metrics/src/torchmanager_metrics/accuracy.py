"""The accuracy family: the fraction of predictions equal to the labels.

Who owns what: this module also owns `predicted_classes`, the one place where model scores
(logits or probabilities with classes on a dimension) or integer predictions become class
indices; the confusion-matrix and overlap modules reuse it.

Comparisons carry no gradient, so the metrics' `forward` needs no `torch.no_grad()` (entering
one costs microseconds on every batch). Every accuracy here is a mean over samples, so the base class's sample-weighted running mean
gives the exact epoch value over uneven batches.
"""

from __future__ import annotations

from typing import Any

import torch

from .metric import GLOBAL_MODULE_HOOKS, Metric, at_least_float32
from .waiting import HELD_ELEMENTS, PENDING_BATCHES

__all__ = [
    "Accuracy",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "SparseCategoricalAccuracy",
    "TopKAccuracy",
    "accuracy",
    "binary_accuracy",
    "categorical_accuracy",
    "predicted_classes",
    "sparse_categorical_accuracy",
    "top_k_accuracy",
]


def _check_tensor(value: object, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor. Received: {name}={type(value).__name__}")
    return value


def _check_same_shape(input: torch.Tensor, target: torch.Tensor) -> None:
    if input.shape != target.shape:
        raise ValueError(
            "`input` and `target` must have the same shape. "
            f"Received: input.shape={tuple(input.shape)}, target.shape={tuple(target.shape)}"
        )


def check_dim_arg(dim: object) -> int:
    """Check a constructor's `dim` argument: an int (negative counts from the end)."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"`dim` must be an int. Received: dim={dim!r}")
    return dim


def _check_dim(dim: int, ndim: int) -> int:
    """`dim` as a non-negative index into a tensor of `ndim` dimensions."""
    check_dim_arg(dim)
    if not -ndim <= dim < ndim:
        raise ValueError(f"`dim` must be in [{-ndim}, {ndim}) for an input of {ndim} dims. Received: dim={dim}")
    return dim % ndim


def check_class_labels(target: object) -> torch.Tensor:
    """Check that `target` is a tensor of integer (or bool) class indices and return it.

    Raises:
        TypeError: `target` is not a tensor, or holds floats (probabilities, one-hot vectors).
    """
    target = _check_tensor(target, "target")
    if target.is_floating_point() or target.is_complex():
        raise TypeError(
            "`target` must hold integer class indices; for one-hot or probability labels use "
            f"CategoricalAccuracy. Received: target.dtype={target.dtype}"
        )
    return target


def predicted_classes(
    input: torch.Tensor, target: torch.Tensor, dim: int = -1, num_classes: int | None = None
) -> torch.Tensor:
    """Class indices (int64, the shape of `target`) predicted by `input`.

    `input` is either scores with classes on `dim` (the shape of `target` with that dim added):
    argmax over it, or `input > 0` when it has a single channel (binary logits); or integer
    predictions of the shape of `target`, used as they are.

    Raises:
        TypeError: `target` is not integer class indices.
        ValueError: the shapes fit neither form, or the scores do not have `num_classes` channels.
    """
    input, target = _check_tensor(input, "input"), check_class_labels(target)
    if input.shape == target.shape and not input.is_floating_point():
        return input.long()
    if input.dim() == target.dim() + 1:
        d = _check_dim(dim, input.dim())
        if input.shape[:d] + input.shape[d + 1 :] == target.shape:
            channels = input.shape[d]
            if num_classes is not None and channels != num_classes and not (channels == 1 and num_classes == 2):
                raise ValueError(
                    f"`input` must have `num_classes`={num_classes} scores on dim {dim} (or 1 binary logit when "
                    f"`num_classes` is 2). Received: input.shape={tuple(input.shape)}"
                )
            return (input > 0).squeeze(d).long() if channels == 1 else input.argmax(d)
    raise ValueError(
        f"`input` must be scores with classes on dim {dim} (the shape of `target` plus that dim) or integer "
        f"predictions of the shape of `target`. Received: input.shape={tuple(input.shape)}, "
        f"input.dtype={input.dtype}, target.shape={tuple(target.shape)}"
    )


def _mean_of(correct: torch.Tensor) -> torch.Tensor:
    return torch.mean(correct, dtype=torch.float32)  # one kernel: no float copy of the bool tensor first


def _hits(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    input, target = _check_tensor(input, "input"), _check_tensor(target, "target")
    _check_same_shape(input, target)
    return input.eq(target)


def _sparse_categorical_hits(input: torch.Tensor, target: torch.Tensor, dim: int) -> torch.Tensor:
    return predicted_classes(input, target, dim).eq(target)


def _categorical_hits(input: torch.Tensor, target: torch.Tensor, dim: int) -> torch.Tensor:
    input, target = _check_tensor(input, "input"), _check_tensor(target, "target")
    _check_same_shape(input, target)
    d = _check_dim(dim, input.dim())
    return input.argmax(d).eq(target.argmax(d))


def accuracy(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The fraction of elements of `input` equal to `target` (same shapes)."""
    return _mean_of(_hits(input, target))


def sparse_categorical_accuracy(input: torch.Tensor, target: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The fraction of samples whose argmax over `dim` of `input` equals the integer label."""
    return _mean_of(_sparse_categorical_hits(input, target, dim))


def categorical_accuracy(input: torch.Tensor, target: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The fraction of samples whose argmax over `dim` is the same in `input` and one-hot `target`."""
    return _mean_of(_categorical_hits(input, target, dim))


def binary_accuracy(
    input: torch.Tensor, target: torch.Tensor, threshold: float = 0.5, from_logits: bool = False
) -> torch.Tensor:
    """The fraction of elements where `input > threshold` agrees with the 0/1 label.

    Args:
        input: Probabilities, or logits when `from_logits` (a sigmoid is applied first).
        target: Labels of the same shape; values above 0.5 are positive (soft labels are rounded).
        threshold: The probability above which a prediction is positive.
    """
    return _mean_of(_binary_hits(input, target, threshold, from_logits))


def _binary_hits(input: torch.Tensor, target: torch.Tensor, threshold: float, from_logits: bool) -> torch.Tensor:
    input, target = _check_tensor(input, "input"), _check_tensor(target, "target")
    _check_same_shape(input, target)
    input = at_least_float32(input)  # a bfloat16 sigmoid or threshold rounds values across the threshold
    probabilities = input.sigmoid() if from_logits else input
    return (probabilities > threshold).eq(target > 0.5)


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive int. Received: k={k!r}")
    return k


def top_k_accuracy(input: torch.Tensor, target: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """The fraction of samples (or positions) whose integer label is among the `k` highest scores on `dim`."""
    return _mean_of(_top_k_hits(input, target, k, dim))


def _top_k_hits(input: torch.Tensor, target: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    _check_k(k)
    input, target = _check_tensor(input, "input"), check_class_labels(target)
    d = _check_dim(dim, input.dim())
    if input.dim() != target.dim() + 1 or input.shape[:d] + input.shape[d + 1 :] != target.shape:
        raise ValueError(
            f"`input` must be scores with classes on dim {dim} and otherwise the shape of `target`. "
            f"Received: input.shape={tuple(input.shape)}, target.shape={tuple(target.shape)}"
        )
    if k > input.shape[d]:
        raise ValueError(f"`k` must be at most the number of classes ({input.shape[d]}). Received: k={k}")
    top = input.topk(k, dim=d).indices
    return top.eq(target.unsqueeze(d).long()).any(d)


class _HitRate(Metric):
    """A metric whose batch value is the fraction of hits (`hits(input, target)`, a bool tensor): the accuracy family.

    Its state is the count of hits and of the elements judged (samples, or tokens and pixels when
    a sample has several), so the epoch value is the fraction of hits over all the data, however
    long each batch's samples are, whichever loop runs it: a call (`update`, which returns the batch
    value) and `update_state` (what a loop that never reads the batch value calls, which skips
    making it) add the same counts. A subclass replacing `forward` makes the epoch value the
    sample-weighted mean of its values (see `Metric`); one replacing `update` or `__call__` runs on
    every batch (`update_state` calls it). Which of these holds is decided once, per class.
    """

    _own_forward = False  # a subclass replaces `forward`: the epoch value is the mean of its values
    _counts_directly = True  # `update_state` may count without calling the metric (nothing it calls is replaced)
    _holds_masks = True  # its `hits` are ours: fresh masks, which may wait to be counted with the others

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._own_forward = cls.forward is not _HitRate.forward
        cls._counts_directly = not any(getattr(cls, name) is not getattr(_HitRate, name) for name in _COUNTING_PATH)
        cls._holds_masks = cls.hits.__module__ == __name__  # another `hits` may return a tensor that changes later

    def hits(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Which elements (or samples) of a batch are right, as a bool tensor."""
        raise NotImplementedError(f"{type(self).__name__} must define `hits(input, target)`.")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _mean_of(self.hits(input, target))

    def update(self, input: Any, target: Any) -> torch.Tensor:
        """Add the batch's hits and elements to the counts; its fraction of hits."""
        if self._own_forward:
            return super().update(input, target)
        hits = self.hits(input, target)
        correct, n = hits.count_nonzero(), hits.numel()
        self.add_batch_sum(correct, n)
        return correct / n

    def update_state(self, input: Any, target: Any = None) -> None:
        if not self._counts_directly or self._target is not None or self._hooked or any(GLOBAL_MODULE_HOOKS):
            self(input, target)  # the replacement, the key picked or the hooks run as in a call
            return
        hits = self.hits(input, target)
        n = hits.numel()
        if n > HELD_ELEMENTS or not self._holds_masks:  # counted now, as in `update`
            self.add_batch_sum(hits.count_nonzero(), n)
            return
        waiting = self._waiting  # the mask waits, its hits counted with the others' (the same counts as `update`'s)
        waiting.hits.append(hits)
        waiting.samples += n
        if len(waiting.hits) >= PENDING_BATCHES:
            self.materialize()


_COUNTING_PATH = ("forward", "update", "__call__")
"""The methods `update_state` stands in for: a subclass replacing one of them is called instead."""


class Accuracy(_HitRate):
    """Elementwise accuracy: the fraction of `input` elements equal to `target`."""

    def hits(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _hits(input, target)


class SparseCategoricalAccuracy(Accuracy):
    """Accuracy of the argmax over `dim` of scores against integer labels.

    Args:
        dim: The class dimension of the input; negative values count from the end (the default
            `-1` fits `(batch, classes)` logits, use `1` for `(batch, classes, H, W)`).
        target: Optional key picking one entry of dict outputs and labels.
    """

    def __init__(self, dim: int = -1, *, target: str | None = None) -> None:
        super().__init__(target=target)
        self.dim = check_dim_arg(dim)
        self._checked: tuple[Any, ...] | None = None  # the layout of the last batch whose argmax passed the checks

    def hits(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        layout = (input.shape, target.shape)  # argmax does not care for the scores' dtype, nor `eq` for the labels'
        if layout == self._checked:  # the same shapes as the last batch: the same checks, passed
            return input.argmax(self.dim).eq(target)
        hits = _sparse_categorical_hits(input, target, self.dim)
        scores = input.dim() == target.dim() + 1 and input.shape[self.dim] > 1 and not target.is_floating_point()
        self.__dict__["_checked"] = layout if scores else None  # only argmax scores take the short way
        return hits

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class CategoricalAccuracy(SparseCategoricalAccuracy):
    """Accuracy of the argmax over `dim` of scores against one-hot or probability labels."""

    def hits(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _categorical_hits(input, target, self.dim)


class BinaryAccuracy(_HitRate):
    """Accuracy of thresholded probabilities (or logits) against 0/1 labels of the same shape.

    Args:
        threshold: The probability in [0, 1] above which a prediction is positive.
        from_logits: Whether the input is logits (a sigmoid is applied) rather than probabilities.
        target: Optional key picking one entry of dict outputs and labels.
    """

    def __init__(self, threshold: float = 0.5, *, from_logits: bool = False, target: str | None = None) -> None:
        super().__init__(target=target)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ValueError(f"`threshold` must be a probability in [0, 1]. Received: threshold={threshold!r}")
        self.threshold = float(threshold)
        self.from_logits = from_logits

    def hits(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _binary_hits(input, target, self.threshold, self.from_logits)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, from_logits={self.from_logits}"


class TopKAccuracy(_HitRate):
    """Top-k accuracy: the integer label is among the `k` highest scores on `dim`, per sample or position.

    Args:
        k: How many of the highest-scoring classes count as a hit (a positive int).
        dim: The class dimension of the input.
        target: Optional key picking one entry of dict outputs and labels.
    """

    def __init__(self, k: int, dim: int = -1, *, target: str | None = None) -> None:
        super().__init__(target=target)
        self.k = _check_k(k)
        self.dim = check_dim_arg(dim)

    def hits(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _top_k_hits(input, target, self.k, self.dim)

    def extra_repr(self) -> str:
        return f"k={self.k}, dim={self.dim}"
