"""torchmanager-losses: weighted, targetable losses for PyTorch, usable alone or with torchmanager.

Every loss is a `torch.nn.Module` called on batches as `loss(input, target)`: it returns the
weighted scalar loss (gradient attached) and records it, so `result` is the epoch mean. Each
class has a pure function beside it (`focal_loss`, `dice_loss`, ...) for use without state.
"""

from .__about__ import __version__
from .cross_entropy import BCEWithLogits, CrossEntropy, FocalCrossEntropy, focal_loss
from .dice import Dice, DiceCE, dice_ce_loss, dice_loss
from .kl_div import KLDiv, kl_div_loss
from .loss import BaseLoss, Loss, LossFn, loss, loss_fn
from .multi import MultiLosses, ParallelLoss
from .reduction import Reduction
from .regression import MAE, MSE, Identity

__all__ = [
    "BCEWithLogits",
    "BaseLoss",
    "CrossEntropy",
    "Dice",
    "DiceCE",
    "FocalCrossEntropy",
    "Identity",
    "KLDiv",
    "Loss",
    "LossFn",
    "MAE",
    "MSE",
    "MultiLosses",
    "ParallelLoss",
    "Reduction",
    "__version__",
    "dice_ce_loss",
    "dice_loss",
    "focal_loss",
    "kl_div_loss",
    "loss",
    "loss_fn",
]
