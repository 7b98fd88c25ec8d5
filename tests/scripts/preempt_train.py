"""One start of a small training job for the preemption and restart tests: it may be signalled, killed or refused
its checkpoints at a chosen moment, and the same command run again continues it.

Used by tests/test_preemption_processes.py (one process, each start a fresh interpreter or a fork-server child),
tests/test_torchrun_restarts.py (under `torchrun --nproc_per_node=2`, each restart a new start) and
tests/test_checkpoint_disk_errors.py.

The job: 96 samples `[id, 6 features]`, 3 classes, an MLP with dropout, a shuffled torchmanager `Dataset`
(8 samples a batch and process), SGD with momentum, validation on 32 samples, `--epochs` epochs, optionally
`--accumulate` batches a window. Checkpoints: `--checkpoint experiment` is `Experiment("run", resume="auto")`
with a `LastCheckpoint` of its `last.model` every `--every` optimizer updates; `--checkpoint last` is a
`LastCheckpoint` of `OUT/checkpoints/last.model` (every `--every` updates and each epoch) and
`fit(resume_from=...)` when it exists; `--checkpoint none` has no checkpoint. So the same command resumes,
whichever start this is.

Each start draws other random numbers before `fit` (seed `--seed` + the start's number: `--launch`, the
command's launch, plus torchrun's restart count), so an exact resume must take every random state from the
checkpoint. No option's name begins a torchrun option's (torchrun's parser takes `--signal` or `--start` for
prefixes of its own, even after the script).

Output, in OUT: `seen-rank{R}-start{S}.txt`, a line `epoch batch global_step id...` per training batch (what
this process trained, in order); `files-rank{R}-start{S}.txt`, the checkpoint folder's files when this start
began; `final-rank{R}.pt` (weights, optimizer, global step, the summary) when `fit` returned. Stdout gets a
line `step <n>` after each batch (n counted from 1 over the whole run).

Faults (each on rank `R` of start 0 only, after batch B (1-based within the epoch) of epoch E, written `R:E:B`):
  --send-signal NAME@R:E:B send this process SIGTERM or SIGUSR1 (also `NAME@R:validation:E`: when epoch E's
                           validation starts, and `NAME@R:write:E:B`: while the checkpoint of that batch is saved)
  --kill R:E:B             SIGKILL this process
  --kill-in-write R:E:B    let the kernel end this process (SIGXFSZ) in the middle of the checkpoint written then
  --fsize R:E:B            until training ends, the kernel refuses (EFBIG) file writes beyond half a checkpoint's size
  --read-only R:E:B        make the checkpoint folder read-only from then on (needs a process without
                           CAP_DAC_OVERRIDE when it runs as root)
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ddp_train import DropId, make_data  # beside this script: the data and model head of ddp_train.py

import torchmanager
from torchmanager.callbacks import Callback, Experiment, LastCheckpoint
from torchmanager.data import Dataset

BATCH = 8
SIZES = {"train": 96, "val": 32}


class RecordingManager(torchmanager.Manager):
    """The default manager that writes the sample ids of each training batch to a file, as it trains them."""

    record: Any = None

    def train_step(self, x_train: torch.Tensor, y_train: torch.Tensor) -> dict[str, Any]:
        ids = " ".join(str(int(i)) for i in x_train[:, 0])
        self.record.write(f"{self.current_epoch} {self.batch_index} {self.global_step} {ids}\n")
        self.record.flush()
        return super().train_step(x_train, y_train)


def moment(text: str | None) -> tuple[int, ...] | None:
    """`R:E:B` as (rank, epoch index, batch index), or None."""
    if text is None:
        return None
    rank, epoch, batch = (int(part) for part in text.split(":"))
    return rank, epoch - 1, batch - 1


class Faults(Callback):
    """Prints `step <n>` after each batch and brings about the faults the command line asks for (see the module)."""

    def __init__(self, args: argparse.Namespace, rank: int, steps: int, folder: Path) -> None:
        self.rank, self.steps, self.folder, self.delay = rank, steps, folder, args.step_delay
        self.first = args.launch == 0 and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0
        self.signal: signal.Signals | None = None
        self.signal_at: tuple[int, str, tuple[int, ...]] | None = None
        if args.send_signal:  # NAME@R:E:B, NAME@R:validation:E or NAME@R:write:E:B
            name, where = args.send_signal.split("@")
            rank_text, *parts = where.split(":")
            kind = "batch" if parts[0].isdigit() else parts.pop(0)
            self.signal = getattr(signal, f"SIG{name}")
            self.signal_at = (int(rank_text), kind, tuple(int(part) for part in parts))
        self.kill = moment(args.kill)
        self.kill_in_write = moment(args.kill_in_write)
        self.fsize = moment(args.fsize)
        self.read_only = moment(args.read_only)

    def _now(self, at: tuple[int, ...] | None, batch: int) -> bool:
        return self.first and at is not None and at == (self.rank, self.manager.current_epoch, batch)

    def _signal_at(self, kind: str, *where: int) -> None:
        if self.first and self.signal is not None and self.signal_at == (self.rank, kind, where):
            os.kill(os.getpid(), self.signal)
            self.signal = None  # once

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        sys.stdout.write(
            f"step {self.manager.current_epoch * self.steps + batch + 1}\n"
        )  # one write: a kill cannot cut it
        sys.stdout.flush()
        epoch = self.manager.current_epoch
        self._signal_at("batch", epoch + 1, batch + 1)
        if self._now(self.kill, batch):
            os.kill(os.getpid(), signal.SIGKILL)
        if self._now(self.kill_in_write, batch) or self._now(self.fsize, batch):
            size = os.path.getsize(self.folder / "last.model")  # a checkpoint written earlier
            resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, resource.RLIM_INFINITY))
            if self._now(self.kill_in_write, batch):
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it: the write would fail instead
        if self._now(self.read_only, batch):
            os.chmod(self.folder, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
        if self.delay:
            time.sleep(self.delay)

    def on_validation_start(self, epoch: int) -> None:
        self._signal_at("validation", epoch + 1)

    def on_train_end(self, model: torch.nn.Module) -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the job's own output may be written again

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        epoch, batch = self.manager.current_epoch, self.manager.batch_index
        self._signal_at("write", epoch + 1, batch)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", choices=("experiment", "last", "none"), default="experiment")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--launch", type=int, default=0)
    parser.add_argument("--on-checkpoint-error", default="raise")
    parser.add_argument("--step-delay", type=float, default=0.0)
    for fault in ("--send-signal", "--kill", "--kill-in-write", "--fsize", "--read-only"):
        parser.add_argument(fault)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    start = args.launch + int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        DropId(), torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 3)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    manager = RecordingManager(
        model,
        optimizer,
        loss_fn=torchmanager.losses.CrossEntropy(),
        metrics={"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()},
        accumulate_grad_batches=args.accumulate,
    )
    train = Dataset.from_tensor_slices(make_data(SIZES["train"], 0), BATCH, shuffle=True)
    val = Dataset.from_tensor_slices(make_data(SIZES["val"], 1), BATCH)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps = SIZES["train"] // BATCH // world

    callbacks: list[Callback] = []
    resume_from = None
    folder = args.out
    if args.checkpoint == "experiment":
        experiment = Experiment("run", manager, resume="auto", root=str(args.out / "experiments"))
        folder = Path(experiment.last_ckpt_path).parent
        callbacks += [experiment, LastCheckpoint(manager, experiment.last_ckpt_path, save_every_n_steps=args.every)]
    elif args.checkpoint == "last":
        path = args.out / "checkpoints" / "last.model"
        folder = path.parent
        callbacks.append(LastCheckpoint(manager, str(path), save_every_n_steps=args.every))
        resume_from = path if path.exists() else None
    callbacks.append(Faults(args, rank, steps, folder))
    files = sorted(os.listdir(folder)) if folder.is_dir() else []
    (args.out / f"files-rank{rank}-start{start}.txt").write_text("".join(f"{name}\n" for name in files))

    torch.manual_seed(args.seed + start)  # other draws at each start: the resumed run's must come from the checkpoint
    with (args.out / f"seen-rank{rank}-start{start}.txt").open("w") as record:
        manager.record = record
        model, summary = manager.fit(
            train,
            epochs=args.epochs,
            val_dataset=val,
            callbacks_list=callbacks,
            resume_from=resume_from,
            on_checkpoint_error=args.on_checkpoint_error,
            return_summary=True,
        )
    final = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "global_step": manager.global_step,
        "summary": summary,
    }
    torch.save(final, args.out / f"final-rank{rank}.pt")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        import torch._dynamo  # the first optimizer imports it: once in the server, not in every child
        from fork_server import serve  # beside this script

        serve(main)
    else:
        main(sys.argv[1:])
