"""LPIPS: the learned perceptual image patch similarity between generated and real images.

Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR
2018, eq. 1: the images go through a feature network; at each of its layers `l` the features
are unit-normalised along channels, their squared difference is weighted per channel by `w_l`
(learned 1x1 convolutions; without them every weight is 1), averaged over positions, and the
layers are summed. Nothing is downloaded: pass the network's `features` (for instance
`torchvision.models.alexnet(weights=...).features`) with its `LPIPSNetType`, and the learned
layers if you have them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from enum import Enum

import torch
import torch.nn.functional as F

from .features import FeatureMetric
from .metric import at_least_float32

__all__ = ["LPIPS", "LPIPSFeatures", "LPIPSNetType"]


class LPIPSNetType(Enum):
    """The feature networks of LPIPS; each cuts the network's `features` into its slices."""

    ALEX = "alex"
    SQUEEZE = "squeeze"
    VGG16 = "vgg16"

    @property
    def slice_ends(self) -> tuple[int, ...]:
        """The index after the last layer of each slice in the network's `features` (the paper's layers)."""
        return _SLICE_ENDS[self]

    def load(self, feature_extractor: torch.nn.Sequential) -> torch.nn.ModuleList:
        """The slices of `feature_extractor` (layers keep their indices as names), with frozen parameters.

        Raises:
            ValueError: `feature_extractor` has fewer layers than the slices need.
        """
        ends = self.slice_ends
        if len(feature_extractor) < ends[-1]:
            raise ValueError(
                f"`feature_extractor` must have at least {ends[-1]} layers for {self}, as the network's "
                f"`features` has. Received: {len(feature_extractor)} layers"
            )
        starts = (0, *ends[:-1])
        slices = torch.nn.ModuleList(
            torch.nn.Sequential(OrderedDict((str(i), feature_extractor[i]) for i in range(start, end)))
            for start, end in zip(starts, ends)
        )
        slices.requires_grad_(False)
        return slices


_SLICE_ENDS = {
    LPIPSNetType.ALEX: (2, 5, 8, 10, 12),
    LPIPSNetType.SQUEEZE: (2, 5, 8, 10, 11, 12, 13),
    LPIPSNetType.VGG16: (4, 9, 16, 23, 30),
}


class LPIPSFeatures(torch.nn.Module):
    """Images in [-1, 1] `(N, 3, H, W)`, rescaled as LPIPS does, through each slice: one feature map per slice."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, slices: torch.nn.ModuleList) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.slices = slices

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        features = []
        for piece in self.slices:
            x = piece(x)
            features.append(x)
        return features


class LPIPS(FeatureMetric):
    """LPIPS between generated images (`input`) and real ones (`target`), averaged over samples.

    Args:
        feature_extractor: The feature network's `features` (a `Sequential`); without it, inputs
            and targets are already lists of feature maps `(N, C_l, ...)`, one per layer.
        net_type: Which network `feature_extractor` is (how to slice it); given with it, or not at all.
        lin_layers: Optional learned 1x1 convolutions, one per layer (`C_l -> 1`); without them,
            channels are summed (every weight 1).
        target: Optional key of dict outputs and labels.
    Raises:
        TypeError: Only one of `feature_extractor` and `net_type` is given.
    """

    def __init__(
        self,
        feature_extractor: torch.nn.Sequential | None = None,
        net_type: LPIPSNetType | None = None,
        lin_layers: torch.nn.ModuleList | None = None,
        *,
        target: str | None = None,
    ) -> None:
        if (feature_extractor is None) != (net_type is None):
            raise TypeError(
                "`feature_extractor` and `net_type` go together: give the network's `features` and which network it is, "
                f"or neither. Received: feature_extractor={type(feature_extractor).__name__}, net_type={net_type}"
            )
        features = (
            None if feature_extractor is None or net_type is None else LPIPSFeatures(net_type.load(feature_extractor))
        )
        super().__init__(feature_extractor=features, target=target)
        self.lins = lin_layers

    def forward(self, input: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
        """The batch mean of the per-sample distances, from one feature map per layer on each side.

        Raises:
            ValueError: The two sides, or the learned layers, have another number of layers.
        """
        layers = len(input)
        if len(target) != layers or (self.lins is not None and len(self.lins) != layers):
            raise ValueError(
                "LPIPS needs one feature map per layer on both sides and one learned layer per feature map. "
                f"Received: {layers} input and {len(target)} target feature maps, "
                f"{'no' if self.lins is None else len(self.lins)} learned layers"
            )
        per_layer = []
        for index, (fake, real) in enumerate(zip(input, target)):
            fake, real = at_least_float32(fake), at_least_float32(real)  # bfloat16 norms and sums drift
            difference = (F.normalize(fake, dim=1) - F.normalize(real, dim=1)) ** 2
            weighted = difference.sum(1) if self.lins is None else self.lins[index](difference)
            per_layer.append(weighted.reshape(len(weighted), -1).mean(1))
        return torch.stack(per_layer, 1).sum(1).mean()
