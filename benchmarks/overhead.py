"""Overhead of `Manager.fit` against a hand-written PyTorch loop doing the same work.

Both sides train the same model from the same initial weights on the same batches in the same
order, with SGD, cross-entropy and an accuracy accumulated as a tensor, reading Python floats once
per epoch. Rounds run every contender of a row once, in rotating order, in one process with one
thread, after an untimed warm-up round; medians are compared (ratio ours/raw, and ours minus raw
per step). Rows (pick them with --rows):

  A           a 64-256-10 MLP, batch 128: per-step overhead dominates
  B           a small CNN: compute dominates (its steps cost ~30x more: a quarter as many by default)
  callbacks   A with a per-epoch LastCheckpoint and a TensorBoard (the raw loop saves nothing)
  bf16        A with precision="bf16" against the raw loop under torch.autocast("cpu", bfloat16)
  ckpt-steps  A with LastCheckpoint(save_every_n_steps=N) (the raw loop saves nothing)
  dist        A inside a gloo process group of world size 1, and raw DDP(model) beside it
  import      the time `import torchmanager` adds to `import torch`, in fresh processes

The epoch summary lines of the "torchmanager" logger are silenced so the table stays readable.
Timings depend on what else the machine runs: the load average is printed before and after.

Usage: hatch run bench [--rows A B ...] [--rounds 9] [--epochs 2] [--steps 200] [--steps-b 50] [--ckpt-every 50]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
from bench_rows import ROWS, RowResult, Settings
from bench_timing import import_time, load_line, machine_facts

ALL_ROWS = [*ROWS, "import"]
LABEL_WIDTH = 42


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every count is >= 1 except `--warmup`."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", nargs="+", default=ALL_ROWS, choices=ALL_ROWS, help="rows to run (default: all)")
    parser.add_argument("--rounds", type=_positive, default=9, help="timed rounds per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before them")
    parser.add_argument("--epochs", type=_positive, default=2, help="epochs per run")
    parser.add_argument("--steps", type=_positive, default=200, help="batches per epoch")
    parser.add_argument(
        "--steps-b", type=_positive, default=None, help="batches per epoch of row B (default: steps / 4)"
    )
    parser.add_argument("--ckpt-every", type=_positive, default=50, help="N of the ckpt-steps row")
    parser.add_argument("--import-runs", type=_positive, default=5, help="fresh processes per import timing")
    return parser.parse_args(argv)


def format_row(result: RowResult) -> list[str]:
    """The table line of one row, then its notes indented."""
    line = (
        f"{result.label:<{LABEL_WIDTH}} {result.raw_s * 1e3:>9.1f} {result.ours_s * 1e3:>9.1f} {result.ratio:>7.3f} "
        f"{result.overhead_us:>10.1f} us"
    )
    return [line, *(f"    {note}" for note in result.notes)]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("torchmanager").setLevel(logging.WARNING)
    steps_b = args.steps_b or max(1, args.steps // 4)
    settings = Settings(args.rounds, args.warmup, args.epochs, args.steps, steps_b, args.ckpt_every)
    start = time.perf_counter()

    for line in machine_facts():
        print(line)
    print(
        f"{args.rounds} timed rounds (+{args.warmup} warm-up) x {args.epochs} epochs x {args.steps} steps (B: {steps_b}) of batch 128; "
        "times: median of one whole run; overhead = (ours - raw) / steps"
    )
    print(f"{'row':<{LABEL_WIDTH}} {'raw (ms)':>9} {'ours (ms)':>9} {'ratio':>7} {'overhead/step':>13}", flush=True)
    for key in ROWS:
        if key in args.rows:
            print("\n".join(format_row(ROWS[key](settings))), flush=True)
    if "import" in args.rows:
        base = import_time("import torch", args.import_runs)
        full = import_time("import torch, torchmanager", args.import_runs)
        print(
            f"import torchmanager over import torch: {(full - base) * 1e3:.0f} ms (median of {args.import_runs} fresh processes)"
        )
    print(f"{load_line()} (at end); {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
