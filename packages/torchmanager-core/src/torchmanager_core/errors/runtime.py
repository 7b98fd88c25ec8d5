"""Upstream torchmanager 1.5's module path `torchmanager_core.errors.runtime` (its `TransformError` is
`torchmanager.data.TransformError`: core does not depend on the data distribution)."""

from . import PredictionError, TestingError

__all__ = ["PredictionError", "TestingError"]
