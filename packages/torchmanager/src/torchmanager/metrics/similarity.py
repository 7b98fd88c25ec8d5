"""Upstream torchmanager 1.5's module path `torchmanager.metrics.similarity`."""

from torchmanager_metrics import MS_SSIM, PSNR, SSIM, CosineSimilarity

__all__ = ["MS_SSIM", "PSNR", "SSIM", "CosineSimilarity"]
