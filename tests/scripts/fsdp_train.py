"""Launched by `tests/test_fsdp.py` under torchrun (2 CPU processes, gloo): FSDP2 training, evaluation, checkpoints.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 fsdp_train.py OUT

Every case shares one launch (a torchrun start costs seconds). Each process writes `OUT/rank{RANK}.pt`
(what it recorded) and the processes together write whole state dicts (`save_full_state_dict`) and
sharded checkpoints under OUT, for the test's single-process references:
- `fp32`: 3 epochs, units = Block, accumulation over 2 batches, clipping at 0.5, Adam built by a
  factory; `bf16`: 2 epochs, bf16-mixed policy, accumulation 2, SGD built before sharding (re-pointed).
- `meta`: a model built on the meta device (with BatchNorm) while the processes' random states differ.
- `user`: a model the user sharded, an optimizer built after it, and the refusals; `sixteen`: 16-mixed
  with an infinite gradient in one process's shard.
- `eval`: lockstep evaluation of 5 batches (shares of 3 and 2) and of an unsized iterable.
- `resume`: 2 epochs, a sharded checkpoint after step 2 of epoch 0 (and its whole weights), and the
  uninterrupted run's end; `ddp`: the same run under DDP with a checkpoint by the same layer.
- `async`: 40 steps with an asynchronous save every 10; the whole weights at the last save; a save whose
  small file rank 1 cannot write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from fsdp_common import GLOBAL_BATCH, Block, Net, data, share, train
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.fsdp import fully_shard

from torchmanager_core import checkpoint, distributed, evaluation_shards, random
from torchmanager_core.checkpoint import sharded
from torchmanager_core.checkpoint.sharded import ShardedCheckpointer, save_full_state_dict
from torchmanager_core.strategy.fsdp import FSDP2Strategy, is_fully_sharded
from torchmanager_core.strategy.lockstep import lockstep

CPU = torch.device("cpu")


def error_of(action: Any) -> str:
    try:
        action()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return "no error"


def fp32(out: Path, record: dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(0)
    strategy = FSDP2Strategy(units=(Block,))
    model = strategy.setup(Net(), CPU)
    optimizer = strategy.prepare_optimizer(model, lambda params: torch.optim.Adam(params, lr=0.01))
    record["fp32_units"] = [name for name, module in model.named_modules() if is_fully_sharded(module)]
    norms = []
    for epoch in range(3):
        batches = share(epoch, 0, dist.get_world_size(), dist.get_rank())
        norms += train(
            model,
            batches,
            optimizer,
            window=2,
            clip=lambda: strategy.clip_grad_norm(model.parameters(), 0.5),
            sync=lambda flag: strategy.gradient_sync(model, flag),
        )
    record["fp32_norms"] = torch.stack(norms)
    save_full_state_dict(model, out / "fp32.pt")
    return model


def bf16(out: Path, record: dict[str, Any]) -> None:
    torch.manual_seed(1)
    raw = Net()
    optimizer = torch.optim.SGD(raw.parameters(), lr=0.2, momentum=0.9)  # built before sharding, never stepped
    strategy = FSDP2Strategy(units=(Block,), precision="bf16-mixed", reshard_after_forward=False)
    model = strategy.setup(raw, CPU)
    optimizer = strategy.prepare_optimizer(model, optimizer)
    record["bf16_output_dtype"] = str(model(data()[0][:2]).dtype)
    for epoch in range(2):
        batches = share(epoch, 0, dist.get_world_size(), dist.get_rank())
        train(model, batches, optimizer, window=2, sync=lambda flag: strategy.gradient_sync(model, flag))
    save_full_state_dict(model, out / "bf16.pt")


def meta(out: Path, record: dict[str, Any]) -> None:
    torch.manual_seed(3 + dist.get_rank())  # the processes' random states differ: rank 0's is used
    with torch.device("meta"):
        raw = Net(norm=True)
    model = FSDP2Strategy(units=(Block,)).setup(raw, CPU)
    record["meta_next_draw"] = torch.rand(3)  # rank 0: advanced as one process's; rank 1: its own, untouched
    save_full_state_dict(model, out / "meta.pt")


def user(record: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = Net()
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    strategy = FSDP2Strategy()
    record["user_detected"] = is_fully_sharded(model)
    record["user_same_model"] = strategy.setup(model, CPU) is model
    record["user_same_optimizer"] = strategy.prepare_optimizer(model, optimizer) is optimizer
    record["user_precision"] = error_of(lambda: FSDP2Strategy(precision="bf16-mixed").setup(model, CPU))
    partial = Net()
    fully_shard(partial.blocks[0])
    record["user_partial"] = error_of(lambda: FSDP2Strategy().setup(partial, CPU))
    stepped = Net()
    stale = torch.optim.Adam(stepped.parameters())
    stepped(torch.ones(1, 6)).sum().backward()
    stale.step()
    fresh = FSDP2Strategy()
    sharded = fresh.setup(stepped, CPU)
    record["user_stale"] = error_of(lambda: fresh.prepare_optimizer(sharded, stale))
    record["user_foreign"] = error_of(lambda: fresh.prepare_optimizer(sharded, torch.optim.SGD(Net().parameters())))
    record["user_typo"] = error_of(lambda: FSDP2Strategy(units=(torch.nn.Conv2d,)).setup(Net(), CPU))
    half = Net()
    half.head.to_empty(device="meta")
    record["user_half_meta"] = error_of(lambda: FSDP2Strategy().setup(half, CPU))


def sixteen(record: dict[str, Any]) -> None:
    """16-mixed: an infinite gradient in rank 1's shard only makes both ranks skip the step and halve the scale."""
    torch.manual_seed(0)
    strategy = FSDP2Strategy(precision="16-mixed")
    model = strategy.setup(Net(), CPU)
    optimizer = strategy.prepare_optimizer(model, lambda params: torch.optim.SGD(params, lr=0.1))
    scaler = torch.amp.GradScaler("cpu")  # the one the precision object makes for any strategy
    x, y = data()
    dtype = str(model(x[:1]).dtype)
    for poisoned in (False, True):
        model.reshard()  # the root keeps its gathered weights after a forward: read the shards
        before = model.head.weight.to_local().clone()
        scale = scaler.get_scale()
        loss = F.cross_entropy(model(x[:4]).float(), y[:4])
        scaler.scale(loss).backward()
        if poisoned and dist.get_rank() == 1:
            model.head.weight.grad.to_local()[0, 0] = float("inf")  # this process's shard alone
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        stepped = not torch.equal(before, model.head.weight.to_local())
        record[f"sixteen_{poisoned}"] = (stepped, scaler.get_scale() / scale, dtype)


def evaluate(model: torch.nn.Module, batches: Any, record: dict[str, Any], name: str) -> None:
    """One lockstep pass: outputs in the data set's order, samples counted, stand-ins run."""
    stand_ins = []
    outputs, counted = [], torch.zeros((), dtype=torch.int64)
    with torch.no_grad():
        for x, _ in lockstep(batches, lambda batch: stand_ins.append(model(batch[0]))):
            outputs.append(model(x))
            counted += len(x)
    record[f"{name}_outputs"] = evaluation_shards.gather(outputs, batches)
    record[f"{name}_counted"] = int(distributed.all_reduce_sum(counted))
    record[f"{name}_stand_ins"] = len(stand_ins)


class Unsized:
    """An iterable without a length (a generator's kind): lockstep agrees round by round."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __iter__(self) -> Any:
        return iter(self.items)


def eval_cases(model: torch.nn.Module, record: dict[str, Any]) -> None:
    x, y = data()
    five = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 20, 4)]
    evaluate(model, evaluation_shards.split(five), record, "eval5")
    mine = evaluation_shards.split(five)
    evaluate(model, evaluation_shards.Share(Unsized(list(mine))), record, "eval5_unsized")  # type: ignore[arg-type]


def resume_run(out: Path, record: dict[str, Any], *, ddp: bool) -> None:
    """2 epochs; a sharded checkpoint after step 2 of epoch 0 (global position 24); the uninterrupted end."""
    name = "ddp" if ddp else "resume"
    torch.manual_seed(7)
    strategy = FSDP2Strategy(units=(Block,))
    if ddp:
        model: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(Net())
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    else:
        model = strategy.setup(Net(), CPU)
        optimizer = strategy.prepare_optimizer(model, lambda params: torch.optim.Adam(params, lr=0.01))
    world, rank = dist.get_world_size(), dist.get_rank()
    batches = share(0, 0, world, rank)
    train(model, batches[:2], optimizer)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    run = {"epoch": 0, "position": 2 * GLOBAL_BATCH, "global_step": 2, "history": [{"loss": 1.5}]}
    own = {"random": random.get_rng_state(), "rank": torch.tensor(rank)}
    ShardedCheckpointer().save(
        out / f"{name}.ckpt", {"model": model_state, "optimizer": optimizer_state}, run=run, rank=own
    )
    save_full_state_dict(model, out / f"{name}_at_save.pt")
    train(model, batches[2:], optimizer)
    train(model, share(1, 0, world, rank), optimizer)
    save_full_state_dict(model, out / f"{name}_end.pt")


def async_saves(out: Path, record: dict[str, Any]) -> None:
    torch.manual_seed(9)
    strategy = FSDP2Strategy(units=(Block,))
    model = strategy.setup(Net(), CPU)
    optimizer = strategy.prepare_optimizer(model, lambda params: torch.optim.SGD(params, lr=0.05))
    saver = ShardedCheckpointer(async_save=True)
    batches = [ids for epoch in range(7) for ids in share(epoch, 0, dist.get_world_size(), dist.get_rank())]
    for step, ids in enumerate(batches[:40], start=1):
        train(model, [ids], optimizer)
        if step % 10 == 0:
            tensors = {
                "model": strategy.model_state_dict(model),
                "optimizer": strategy.optimizer_state_dict(model, optimizer),
            }
            saver.save(out / "async.ckpt", tensors, run={"global_step": step})
            if step == 40:
                save_full_state_dict(model, out / "async_at_40.pt")  # before training changes them again
    train(model, batches[40:42], optimizer)  # goes on while the last save is written
    saver.wait()
    if dist.get_rank() == 1:  # one process's disk refuses its part: every process fails the save, none waits
        sharded.save = full_disk  # type: ignore[assignment]
    tensors = {"model": strategy.model_state_dict(model), "optimizer": strategy.optimizer_state_dict(model, optimizer)}
    saver.save(out / "async.ckpt", tensors, run={"global_step": 42})
    record["async_failed"] = error_of(saver.wait)
    sharded.save = checkpoint.save
    saver.close()


def full_disk(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def main() -> None:
    out = Path(sys.argv[1])
    distributed.init_from_environment()
    record: dict[str, Any] = {}
    model = fp32(out, record)
    bf16(out, record)
    meta(out, record)
    user(record)
    sixteen(record)
    eval_cases(model, record)
    resume_run(out, record, ddp=False)
    resume_run(out, record, ddp=True)
    async_saves(out, record)
    torch.save(record, out / f"rank{dist.get_rank()}.pt")
    with contextlib.suppress(Exception):
        os.sync()


if __name__ == "__main__":
    main()
