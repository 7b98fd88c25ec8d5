"""Launched by `tests/test_low_precision_sums.py` under `torchrun --nproc_per_node=2`: sums and counts across ranks.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 sum_counts.py OUT

Each rank feeds a `MeanTracker` a zero over 2**24 samples (a count a float32 all-reduce would
round) and 301 bfloat16 ones, and a `Metric` 512 float16 batches of exactly 1000.0; it
reduces both across the ranks as the managers do before reading, and writes what it reads
to `OUT/rank{RANK}.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from torchmanager.metrics import Metric
from torchmanager_core import distributed
from torchmanager_core.tracking import MeanTracker

distributed.init_from_environment()
tracker = MeanTracker()
tracker.update("x", torch.tensor(0.0, dtype=torch.bfloat16), 2**24)
for _ in range(301):
    tracker.update("x", torch.tensor(1.0, dtype=torch.bfloat16))
tracker.all_reduce()
metric = Metric(lambda y, t: y.mean())
for _ in range(512):
    metric(torch.full((1,), 1000.0, dtype=torch.float16), None)
distributed.reduce_states(metric)
values = {
    "tracker_mean": tracker.means()["x"].item(),
    "tracker_count": tracker.state_dict()["counts"]["x"],
    "metric_result": metric.result.item(),
    "metric_count": metric.count.item(),
}
Path(sys.argv[1], f"rank{distributed.get_rank()}.json").write_text(json.dumps(values))
