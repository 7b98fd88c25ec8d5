"""Upstream torchmanager 1.5's module path `torchmanager.metrics.lpips`."""

from torchmanager_metrics import LPIPS, LPIPSNetType

__all__ = ["LPIPS", "LPIPSNetType"]
