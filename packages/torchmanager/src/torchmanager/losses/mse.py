"""Upstream torchmanager 1.5's module path `torchmanager.losses.mse`."""

from torchmanager_losses import MAE, MSE, Identity

__all__ = ["MAE", "MSE", "Identity"]
