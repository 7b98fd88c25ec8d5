"""Upstream torchmanager 1.5's module path `torchmanager.losses.loss`."""

from torchmanager_losses import BaseLoss, Loss, MultiLosses, ParallelLoss, loss, loss_fn

__all__ = ["BaseLoss", "Loss", "MultiLosses", "ParallelLoss", "loss", "loss_fn"]
