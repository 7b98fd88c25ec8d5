"""Upstream torchmanager 1.5's module path `torchmanager.metrics.extractor` (SciPy is imported when FID is computed)."""

from torchmanager_metrics import FID, KID, AccumulativeFeatureMetric, ExtractorScore, FeatureMetric

__all__ = ["FID", "KID", "AccumulativeFeatureMetric", "ExtractorScore", "FeatureMetric"]
