"""Where and how a model runs: one `Strategy` class per way (one device, DataParallel, DDP, FSDP2).

`base` holds the interface the loop calls; `fsdp` the FSDP2 strategy (imported when used: it loads
torch.distributed's FSDP and DTensor modules) and `meta_init` its initialisation of a meta model;
`lockstep` the evaluation pass a sharded model needs.
"""

from .base import OptimizerLike, Strategy, unwrap

__all__ = ["OptimizerLike", "Strategy", "unwrap"]
