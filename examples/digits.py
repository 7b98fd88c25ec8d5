"""The main job: train a small MLP on scikit-learn's digits with torchmanager, then test it.

The 1,797 8x8 digit images ship with scikit-learn (no download). They are split 60/20/20 into
training, validation and test sets; the model trains with `Manager.fit` and reports the test
accuracy, which should be above 0.95.

Usage: hatch run demo [--epochs 30] [--lr 0.05] [--batch-size 64] [--quiet]
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import torchmanager
from torchmanager.data import Dataset


class DigitsDataset(Dataset):
    """Digit images as flat 64-vectors scaled to [0, 1], with their labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = False) -> None:
        super().__init__(batch_size, shuffle=shuffle, num_workers=0)
        self.images, self.labels = images, labels

    @property
    def unbatched_len(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def make_datasets(batch_size: int, seed: int = 0) -> tuple[DigitsDataset, DigitsDataset, DigitsDataset]:
    digits = load_digits()
    x = torch.as_tensor(digits.data, dtype=torch.float32) / 16
    y = torch.as_tensor(digits.target)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)
    return (
        DigitsDataset(x_train, y_train, batch_size, shuffle=True),
        DigitsDataset(x_val, y_val, batch_size),
        DigitsDataset(x_test, y_test, batch_size),
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="Train an MLP on scikit-learn's digits with torchmanager.")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="one summary line per epoch instead of progress bars")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    training_dataset, val_dataset, testing_dataset = make_datasets(args.batch_size, args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = torchmanager.losses.CrossEntropy()
    metrics = {"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()}
    manager = torchmanager.Manager(model, optimizer, loss_fn=loss_fn, metrics=metrics)

    manager.fit(training_dataset, epochs=args.epochs, val_dataset=val_dataset, show_verbose=not args.quiet)
    summary = manager.test(testing_dataset, show_verbose=not args.quiet)
    print(f"test loss {summary['loss']:.4f}, test accuracy {summary['accuracy']:.4f}")
    return summary


if __name__ == "__main__":
    main()
