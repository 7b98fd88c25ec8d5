"""Upstream torchmanager 1.5's module path `torchmanager.losses.cross_entropy`."""

from torchmanager_losses import CrossEntropy, DiceCE, FocalCrossEntropy, KLDiv

__all__ = ["CrossEntropy", "DiceCE", "FocalCrossEntropy", "KLDiv"]
