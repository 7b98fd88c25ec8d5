"""The main job: train a small MLP on scikit-learn's digits with torchmanager, then test it.

The 1,797 8x8 digit images ship with scikit-learn (no download). They are split 60/20/20 into
training, validation and test sets; the model trains with `Manager.fit`, an `Experiment` callback
keeps the run in `experiments/<name>.exp/` (TensorBoard data, best and last checkpoints, the log
and the configs), and the test accuracy, which should be above 0.95, is printed.

It runs in a few seconds on two CPU cores: one torch thread (`--num_threads 1`, the default)
trains this 9,610-parameter MLP fastest, since its matrix products are too small to share
between threads and extra threads only wait for one another (on a busy machine, for seconds).
On a larger machine with a larger model, raise `--num_threads` towards the number of cores.

The same command run again continues a run that did not finish (stopped by SIGTERM, SIGUSR1, a
crash or a kill) from its last checkpoint, and after a finished run starts a new numbered folder
(`experiments/digits-2.exp`, ...): the rule of `torchmanager_core.configs.experiment_folder`.

Usage:
    hatch run demo [--epochs 30] [--lr 0.05] [--batch_size 64] [--num_threads 1] [--experiment NAME] [--quiet]
    hatch run demo --experiment NAME --resume_experiment --epochs 40   # train a finished run for more epochs
    torchmanager-run --nproc_per_node=2 examples/digits.py --quiet   # the same script, data parallel (torchrun)
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import torchmanager
from torchmanager.configs import Configs
from torchmanager.data import Dataset

logger = logging.getLogger("torchmanager")


class DigitsConfigs(Configs):
    """The settings of a run, from the terminal (`--experiment`, `--resume_experiment` and `--replace_experiment`
    come with `Configs`, which also decides whether the run continues an unfinished one)."""

    epochs: int
    lr: float
    batch_size: int
    num_threads: int
    seed: int
    quiet: bool

    @staticmethod
    def get_arguments(
        parser: argparse.ArgumentParser | argparse._ArgumentGroup | None = None,
    ) -> argparse.ArgumentParser | argparse._ArgumentGroup:
        parser = (
            argparse.ArgumentParser(description="Train an MLP on scikit-learn's digits.") if parser is None else parser
        )
        parser.add_argument("--epochs", type=int, default=30)
        parser.add_argument("--lr", type=float, default=0.05)
        parser.add_argument("--batch_size", "--batch-size", type=int, default=64)
        parser.add_argument(
            "--num_threads", type=int, default=1, help="torch's intra-op threads (1 suits this small model)"
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--quiet", action="store_true", help="one summary line per epoch instead of progress bars")
        return Configs.get_arguments(parser)

    def format_arguments(self) -> None:
        super().format_arguments()
        if self.epochs <= 0 or self.batch_size <= 0 or self.lr <= 0 or self.num_threads <= 0:
            raise ValueError(
                f"`epochs`, `batch_size`, `lr` and `num_threads` must be positive. Received: epochs={self.epochs}, "
                f"batch_size={self.batch_size}, lr={self.lr}, num_threads={self.num_threads}"
            )

    def show_settings(self) -> None:
        logger.info(
            f"Digits: epochs={self.epochs}, lr={self.lr}, batch_size={self.batch_size}, "
            f"num_threads={self.num_threads}, seed={self.seed}"
        )


def make_datasets(batch_size: int, seed: int = 0) -> tuple[Dataset[Any], Dataset[Any], Dataset[Any]]:
    """Training, validation and test sets: flat 64-vectors scaled to [0, 1], with their labels."""
    digits = load_digits()
    x = torch.as_tensor(digits.data, dtype=torch.float32) / 16
    y = torch.as_tensor(digits.target)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)
    return (
        Dataset.from_tensor_slices((x_train, y_train), batch_size, shuffle=True),
        Dataset.from_tensor_slices((x_val, y_val), batch_size),
        Dataset.from_tensor_slices((x_test, y_test), batch_size),
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    # one name for the same command: run again, it continues an unfinished run or starts digits-2.exp, ...
    configs = DigitsConfigs.from_arguments(["--experiment", "digits", *(argv if argv is not None else _terminal())])

    torch.set_num_threads(configs.num_threads)
    torch.manual_seed(configs.seed)
    training_dataset, val_dataset, testing_dataset = make_datasets(configs.batch_size, configs.seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(128, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=configs.lr, momentum=0.9)
    loss_fn = torchmanager.losses.CrossEntropy()
    metrics = {"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()}
    manager = torchmanager.Manager(model, optimizer, loss_fn=loss_fn, metrics=metrics)

    experiment = torchmanager.callbacks.Experiment(
        configs.experiment, manager, monitors=["accuracy"], configs=configs, resume=configs.resume_experiment
    )
    manager.fit(
        training_dataset,
        epochs=configs.epochs,
        val_dataset=val_dataset,
        callbacks_list=[experiment],
        show_verbose=not configs.quiet,
    )
    summary = manager.test(testing_dataset, show_verbose=not configs.quiet)
    if torchmanager.distributed.is_main_process():
        print(f"test loss {summary['loss']:.4f}, test accuracy {summary['accuracy']:.4f}")
        print(f"experiment saved in {experiment.experiment_dir}")
    return summary


def _terminal() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
