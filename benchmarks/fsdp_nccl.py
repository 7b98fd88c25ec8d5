"""FSDP2 training with sharded checkpoints: what a save every N steps costs, asynchronous and not, in one run.

Written for nccl on 2 or more GPUs of one machine; with `--device cpu` it runs on gloo (the CPU rows
in the issue 24 report come from that). Each process trains a stack of residual MLP blocks sharded by
`FSDP2Strategy(units=(Block,))`; every round times `--steps` steps of each row, in rotating order:

  none    no checkpoint
  async   `ShardedCheckpointer(async_save=True).save` every `--every` steps (the write goes on in a thread)
  sync    the same save, waited for

and prints the median milliseconds per step of each row, its ratio to `none`, and how long the
training loop stood in `save` (the copy to host memory, for async). A row's time includes waiting
for its last write. The checkpoints go to `--folder` (default: a temporary folder, removed).

Usage: torchrun --standalone --nproc_per_node=2 benchmarks/fsdp_nccl.py [--device cuda|cpu]
           [--width 2048] [--blocks 8] [--batch 16] [--steps 60] [--every 10] [--rounds 3]
           [--precision bf16-mixed] [--folder PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from torchmanager_core import distributed
from torchmanager_core.checkpoint.sharded import ShardedCheckpointer
from torchmanager_core.strategy.fsdp import FSDP2Strategy


class Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = torch.nn.Linear(width, 4 * width)
        self.down = torch.nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(x)))


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16, help="samples per process and step")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default=None, help="default: bf16-mixed on CUDA, 32 on the CPU")
    parser.add_argument("--folder", default=None)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if not distributed.init_from_environment():
        raise SystemExit("Launch with torchrun: torchrun --standalone --nproc_per_node=2 benchmarks/fsdp_nccl.py")
    device = distributed.local_device() if args.device == "cuda" else torch.device("cpu")
    precision = args.precision or ("bf16-mixed" if device.type == "cuda" else "32")
    torch.manual_seed(0)
    with torch.device("meta"):
        model = torch.nn.Sequential(*[Block(args.width) for _ in range(args.blocks)])
    strategy = FSDP2Strategy(units=(Block,), precision=precision)
    model = strategy.setup(model, device)
    optimizer = strategy.prepare_optimizer(model, lambda params: torch.optim.AdamW(params, lr=1e-4))
    x = torch.randn(args.batch, args.width, device=device)
    folder = args.folder or distributed.from_main_process(tempfile.mkdtemp(prefix="fsdp_bench_"))
    saver = ShardedCheckpointer(async_save=True)
    blocking = ShardedCheckpointer()

    def step() -> None:
        loss = model(x).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def run(row: str) -> tuple[float, float]:
        """Seconds per step of `row`, and seconds the loop stood in `save` per save."""
        in_save = 0.0
        synchronize(device)
        start = time.perf_counter()
        for index in range(1, args.steps + 1):
            step()
            if row != "none" and index % args.every == 0:
                tensors = {
                    "model": strategy.model_state_dict(model),
                    "optimizer": strategy.optimizer_state_dict(model, optimizer),
                }
                entered = time.perf_counter()
                (saver if row == "async" else blocking).save(os.path.join(folder, row), tensors, run={"step": index})
                in_save += time.perf_counter() - entered
        saver.wait()
        synchronize(device)
        saves = max(1, args.steps // args.every) if row != "none" else 1
        return (time.perf_counter() - start) / args.steps, in_save / saves

    rows = ["none", "async", "sync"]
    for _ in range(3):
        step()  # warm-up: lazy init, allocator
    run("async")
    times: dict[str, list[tuple[float, float]]] = {row: [] for row in rows}
    for round_ in range(args.rounds):
        for row in rows[round_ % 3 :] + rows[: round_ % 3]:
            times[row].append(run(row))
    saver.close()
    blocking.close()
    parameters = sum(p.numel() for p in model.parameters())
    if distributed.is_main_process():
        world = dist.get_world_size()
        print(
            f"{world} processes on {device.type} ({dist.get_backend()}), {parameters / 1e6:.1f}M parameters, "
            f"{precision}, batch {args.batch} per process, a save every {args.every} of {args.steps} steps, "
            f"median of {args.rounds} rounds"
        )
        base = statistics.median(t for t, _ in times["none"])
        print(f"{'row':8} {'ms/step':>9} {'ratio':>7} {'ms in save':>11}")
        for row in rows:
            per_step = statistics.median(t for t, _ in times[row])
            stood = statistics.median(s for _, s in times[row]) if row != "none" else 0.0
            print(f"{row:8} {per_step * 1e3:9.2f} {per_step / base:7.3f} {stood * 1e3:11.1f}")
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
