"""One run of the digits job for tests/test_kill_and_resume.py: train, or die by SIGKILL at a step, or resume.

The job: an MLP with dropout, shuffled batches (a torchmanager `Dataset` or a torch `DataLoader`),
SGD with momentum or Adam, a `LastCheckpoint` every `--every` steps and at each epoch end, and a
validation set. It prints `step <n>` (n counted from 1 across epochs) after every training step,
kills itself with SIGKILL after step `--kill-at` (a real kill: no handler, no flush, no cleanup)
or waits to be killed after step `--hold-after` (so a kill from outside always comes before the end),
and writes the final model, optimizer and summary to `--out` when training ends.

Usage: python resume_digits.py DATA CKPT OUT [--kill-at N] [--resume] [--loader dataset|dataloader]
    [--optimizer sgd|adam] [--every K] [--epochs E] [--seed S] [--step-delay SECONDS]
    [--hold-after N] [--reseed S]
DATA is a `torch.save`d dict of `x_train`, `y_train`, `x_val`, `y_val` (made by the test, so that
this process does not import scikit-learn).

`python resume_digits.py --serve` runs the job in children of a fork server (see fork_server.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch

import torchmanager
from torchmanager.callbacks import Callback, LastCheckpoint
from torchmanager.data import Dataset

BATCH_SIZE = 64


class StepLine(Callback):
    """Prints `step <n>` after each training step; SIGKILLs this process after step `kill_at`, or
    waits there after step `hold_after` until something else kills it."""

    def __init__(
        self,
        manager: torchmanager.Manager,
        steps_per_epoch: int,
        kill_at: int | None,
        delay: float,
        hold_after: int | None = None,
    ) -> None:
        self.manager, self.steps_per_epoch, self.kill_at, self.delay = manager, steps_per_epoch, kill_at, delay
        self.hold_after = hold_after

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        step = self.manager.current_epoch * self.steps_per_epoch + batch + 1
        sys.stdout.write(f"step {step}\n")  # one write: a kill cannot cut the line (print makes two unbuffered)
        sys.stdout.flush()
        if step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        while step == self.hold_after:
            signal.pause()
        if self.delay:
            time.sleep(self.delay)


def main(argv: list[str]) -> None:
    """One run of the job (see the module)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("ckpt")
    parser.add_argument("out")
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--loader", choices=("dataset", "dataloader"), default="dataset")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--hold-after", type=int)
    parser.add_argument(
        "--reseed", type=int, help="re-seed after building the model: same weights, other data order and dropout"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # the same kernels in every run, whatever the machine's load
    torch.manual_seed(args.seed)  # a resumed run uses another seed: its states must all come from the checkpoint
    data = torch.load(args.data, weights_only=True)
    if args.loader == "dataset":
        train: Any = Dataset.from_tensor_slices((data["x_train"], data["y_train"]), BATCH_SIZE, shuffle=True)
        val: Any = Dataset.from_tensor_slices((data["x_val"], data["y_val"]), BATCH_SIZE)
    else:
        train = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(data["x_train"], data["y_train"]), batch_size=BATCH_SIZE, shuffle=True
        )
        val = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(data["x_val"], data["y_val"]), batch_size=BATCH_SIZE
        )
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 10)
    )
    if args.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    manager = torchmanager.Manager(
        model,
        optimizer,
        loss_fn=torchmanager.losses.CrossEntropy(),
        metrics={"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()},
    )
    if args.reseed is not None:
        torch.manual_seed(args.reseed)
    callbacks = [
        LastCheckpoint(manager, args.ckpt, save_every_n_steps=args.every),
        StepLine(
            manager,
            train.batched_len if isinstance(train, Dataset) else len(train),
            args.kill_at,
            args.step_delay,
            args.hold_after,
        ),  # after the checkpoint: a kill at step 5k finds it written
    ]
    model, summary = manager.fit(
        train,
        epochs=args.epochs,
        val_dataset=val,
        callbacks_list=callbacks,
        resume_from=args.ckpt if args.resume else None,
        return_summary=True,
    )
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "summary": summary}, args.out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        import torch._dynamo  # the first optimizer imports it: once in the server, not in every child
        from fork_server import serve  # beside this script

        serve(main)
    else:
        main(sys.argv[1:])
