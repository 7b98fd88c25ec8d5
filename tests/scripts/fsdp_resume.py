"""Launched by `tests/test_fsdp.py` under torchrun (1 or 3 CPU processes): resume checkpoints written by 2 processes.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=M fsdp_resume.py OUT

`OUT` holds `fsdp_train.py`'s output. The processes load `resume.ckpt` (written by FSDP2 on 2
processes) into an FSDP2 model and `ddp.ckpt` (written under DDP) into a DDP model, check that the run
may continue on M processes (`check_new_world`), take their random state (`rank_random_state`), train
the rest of epoch 0 from the global position with batches of 12 / M and epoch 1, and write the whole
weights (`resumed{M}_{name}_at_load.pt`, `resumed{M}_{name}_end.pt`). Each process writes
`resumed{M}_rank{RANK}.pt`: the sample ids it trained, the run values read, and the lockstep evaluation
of 5 batches (shares 2, 2, 1 on 3 processes), of 2 batches (a process without any) and of 2 unsized.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from fsdp_common import GLOBAL_BATCH, Block, Net, data, share, train
from fsdp_train import Unsized, evaluate
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from torchmanager_core import distributed, evaluation_shards, random
from torchmanager_core.checkpoint.reshard import check_new_world, rank_random_state
from torchmanager_core.checkpoint.sharded import load_sharded, save_full_state_dict
from torchmanager_core.strategy.fsdp import FSDP2Strategy

CPU = torch.device("cpu")


def resume(out: Path, name: str, record: dict[str, Any]) -> torch.nn.Module:
    world, rank = dist.get_world_size(), dist.get_rank()
    torch.manual_seed(1000 + rank)  # other weights than the saved run's: the checkpoint must replace them
    if name == "ddp":
        model: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(Net())
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        tensors = dict(zip(("model", "optimizer"), get_state_dict(model, optimizer)))
    else:
        strategy = FSDP2Strategy(units=(Block,))
        model = strategy.setup(Net(), CPU)
        optimizer = strategy.prepare_optimizer(model, lambda params: torch.optim.Adam(params, lr=0.01))
        tensors = {
            "model": strategy.model_state_dict(model),
            "optimizer": strategy.optimizer_state_dict(model, optimizer, stepped=True),  # a stepped state's layout
        }
    loaded = load_sharded(out / f"{name}.ckpt", tensors)
    set_state_dict(model, optimizer, model_state_dict=tensors["model"], optim_state_dict=tensors["optimizer"])
    states = [own["random"] for own in loaded.ranks]
    check_new_world(
        loaded.world_size, world, random_states=states, samples_per_update=(GLOBAL_BATCH, GLOBAL_BATCH), model=model
    )
    state = rank_random_state(states, rank)
    assert state is not None
    random.set_rng_state(state)
    save_full_state_dict(model, out / f"resumed{world}_{name}_at_load.pt")
    position = loaded.run["position"]
    rest, next_epoch = share(0, position, world, rank), share(1, 0, world, rank)
    train(model, rest, optimizer)
    train(model, next_epoch, optimizer)
    record[f"{name}_run"] = loaded.run
    record[f"{name}_saved_world"] = loaded.world_size
    record[f"{name}_trained"] = [torch.cat(rest).tolist(), torch.cat(next_epoch).tolist()]
    save_full_state_dict(model, out / f"resumed{world}_{name}_end.pt")
    return model


def main() -> None:
    out = Path(sys.argv[1])
    distributed.init_from_environment()
    record: dict[str, Any] = {}
    model = resume(out, "resume", record)
    resume(out, "ddp", record)
    x, y = data()
    five = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 20, 4)]
    evaluate(model, evaluation_shards.split(five), record, "eval5")
    evaluate(model, evaluation_shards.split(five[:2]), record, "eval2")
    two = evaluation_shards.split(five[:2])
    evaluate(model, evaluation_shards.Share(Unsized(list(two))), record, "eval2_unsized")  # type: ignore[arg-type]
    torch.save(record, out / f"resumed{dist.get_world_size()}_rank{dist.get_rank()}.pt")


if __name__ == "__main__":
    main()
