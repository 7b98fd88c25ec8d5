"""Upstream torchmanager 1.5's module path `torchmanager.data.dataset`."""

from torchmanager_data import Dataset, PreprocessedDataset, batched, distribute

__all__ = ["Dataset", "PreprocessedDataset", "batched", "distribute"]
