"""torchmanager: a generic deep learning training/testing framework for PyTorch."""

from .__about__ import __version__

__all__ = ["__version__"]
