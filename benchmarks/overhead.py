"""Overhead of `Manager.fit` against a hand-written PyTorch loop doing the same work.

Both sides train the same model from the same initial weights on the same batches in the same
order, with SGD, cross-entropy and an accuracy accumulated as a tensor, reading Python floats once
per epoch. Rounds run every contender of a row once, in rotating order, in one process with one
thread, after an untimed warm-up round; medians are compared (ratio ours/raw, and ours minus raw
per step). Rows (pick them with --rows):

  A                a 64-256-10 MLP, batch 128: per-step overhead dominates
  B                a small CNN: compute dominates (its steps cost ~30x more: a quarter as many by default)
  S                a 64-64-10 MLP, batch 32: the smallest step (issue 15's workload)
  P                S through a subclass whose `train_step` is a copy of the default one (a custom step)
  callbacks        A with a per-epoch LastCheckpoint and a TensorBoard (the raw loop saves nothing)
  bf16             A with precision="bf16" against the raw loop under torch.autocast("cpu", bfloat16)
  ckpt-steps       A with LastCheckpoint(save_every_n_steps=N) in the background; its notes give the
                   synchronous save and no save, timed in the same rounds (`bench_checkpoint`)
  fsdp-async       FSDP2 on 2 processes (torchrun): asynchronous sharded checkpoints against none
  torchrun         A on 2 processes (torchrun) with a batch callback, against raw DDP; its notes give
                   the run with the processes' agreement on stopping switched off (`bench_torchrun`)
  dist             A inside a gloo process group of world size 1, and raw DDP(model) beside it
  resume           seconds to the first new batch of a pass resumed at 5% and 95% of an epoch, against
                   a fresh start and a replay (`bench_data`)
  import           the time `import torchmanager` adds to `import torch`, in fresh processes

The epoch summary lines of the "torchmanager" logger are silenced so the table stays readable.
Timings depend on what else the machine runs: the load average is printed before and after.

A second table counts the instructions per training step of the rows S, A and P (those of A, B, S
and P among `--rows`) under callgrind, where valgrind is installed (`--no-instructions` skips it;
`--instructions` insists): the same runs (`--steps` batches per epoch) for 1 and 2 epochs
(`--instr-epochs`), per step = the difference over the extra steps, which does not move with the
machine's load; the wall-time ratio of the same row stands beside it. `profile_step.py`
attributes ours' per-step instructions to the functions that spend them.

Usage: hatch run bench [--rows A B ...] [--rounds 9] [--epochs 2] [--steps 200] [--steps-b 50] [--ckpt-every 50]
                       [--instructions | --no-instructions] [--instr-epochs 1 2]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time

import torch
from bench_callgrind import valgrind_missing, valgrind_version
from bench_checkpoint import background_row, fsdp_async_row
from bench_data import resume_rows
from bench_instructions import InstructionCounts, count_row
from bench_loops import WORKLOADS
from bench_rows import ROWS, RowResult, Settings
from bench_timing import import_time, load_line, machine_facts
from bench_torchrun import torchrun_row

ROWS = {
    **{key: row for key, row in ROWS.items() if key != "dist"},
    "ckpt-steps": background_row,
    "fsdp-async": fsdp_async_row,
    "torchrun": torchrun_row,
    "dist": ROWS["dist"],
}
"""The rows of the wall-time table, in table order."""
ALL_ROWS = [*ROWS, "resume", "import"]
INSTRUCTION_ROWS = ["S", "A", "P"]
"""The rows whose instructions are counted when `--rows` is not given."""
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
    parser.add_argument("--rows", nargs="+", choices=ALL_ROWS, help="rows to run (default: all)")
    parser.add_argument("--rounds", type=_positive, default=9, help="timed rounds per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before them")
    parser.add_argument("--epochs", type=_positive, default=2, help="epochs per run")
    parser.add_argument("--steps", type=_positive, default=200, help="batches per epoch")
    parser.add_argument(
        "--steps-b", type=_positive, default=None, help="batches per epoch of row B (default: steps / 4)"
    )
    parser.add_argument("--ckpt-every", type=_positive, default=50, help="N of the ckpt-steps row")
    parser.add_argument("--import-runs", type=_positive, default=5, help="fresh processes per import timing")
    counting = parser.add_mutually_exclusive_group()
    counting.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per step under callgrind (rows A, B, S, P), or fail where valgrind is missing",
    )
    counting.add_argument(
        "--no-instructions", action="store_true", help="skip the instruction counts (default: count where possible)"
    )
    parser.add_argument(
        "--instr-epochs",
        type=_positive,
        nargs="+",
        default=[1, 2],
        help="epoch counts of the counted runs (per step from the first to the last)",
    )
    args = parser.parse_args(argv)
    args.counted_rows = [key for key in (args.rows or INSTRUCTION_ROWS) if key in WORKLOADS]
    args.rows = args.rows or ALL_ROWS
    args.skip_counting = None  # why no instructions are counted, where they are not
    if len(set(args.instr_epochs)) < 2:
        parser.error(f"--instr-epochs needs two different epoch counts, got {args.instr_epochs}")
    if args.instructions and not args.counted_rows:
        parser.error(f"--instructions counts the rows {', '.join(WORKLOADS)}; pick one with --rows")
    reason = valgrind_missing()
    if args.instructions and reason:
        parser.error(f"--instructions cannot count here: {reason}")
    if args.no_instructions:
        args.skip_counting = "--no-instructions"
    elif not args.counted_rows:
        args.skip_counting = f"none of the rows {', '.join(WORKLOADS)} was picked"
    elif reason:
        args.skip_counting = reason
    return args


def format_row(result: RowResult) -> list[str]:
    """The table line of one row, then its notes indented."""
    line = (
        f"{result.label:<{LABEL_WIDTH}} {result.raw_s * 1e3:>9.1f} {result.ours_s * 1e3:>9.1f} {result.ratio:>7.3f} "
        f"{result.overhead_us:>10.1f} us"
    )
    return [line, *(f"    {note}" for note in result.notes)]


def format_instructions(counts: InstructionCounts, wall_ratio: float | None) -> list[str]:
    """The instruction table line of one row (thousands of instructions per step), then per-pair notes."""
    wall = f"{wall_ratio:>10.3f}" if wall_ratio is not None else f"{'-':>10}"
    line = (
        f"{WORKLOADS[counts.key].name:<{LABEL_WIDTH}} {counts.per_step('raw') / 1e3:>9.1f} "
        f"{counts.per_step('ours') / 1e3:>9.1f} {counts.ratio:>7.3f} {counts.framework / 1e3:>12.1f} k {wall}"
    )
    epochs = sorted(counts.counts["raw"])
    if len(epochs) < 3:
        return [line]
    pairs = [
        f"{a}->{b}: raw {counts.per_step('raw', a, b) / 1e3:.1f} k, ours {counts.per_step('ours', a, b) / 1e3:.1f} k"
        for a, b in itertools.pairwise(epochs)
    ]
    return [line, f"    per step between epoch counts {'; '.join(pairs)}"]


def print_instructions(args: argparse.Namespace, steps_b: int, wall_ratios: dict[str, float]) -> None:
    """Count and print the instructions per step of the rows among `args.rows` that have a workload."""
    first, last = min(args.instr_epochs), max(args.instr_epochs)
    print(
        f"instructions per training step under callgrind ({valgrind_version()}): "
        f"(count({last} epochs) - count({first} epoch{'s' if first > 1 else ''})) / extra steps, "
        f"{args.steps} steps per epoch (B: {steps_b}), each run counted around the hand loop's epochs or `fit`"
    )
    print(
        f"{'row':<{LABEL_WIDTH}} {'raw (k)':>9} {'ours (k)':>9} {'ratio':>7} {'framework/step':>14} {'wall ratio':>10}",
        flush=True,
    )
    for key in WORKLOADS:
        if key in args.counted_rows:
            counts = count_row(key, steps_b if key == "B" else args.steps, args.instr_epochs)
            print("\n".join(format_instructions(counts, wall_ratios.get(key))), flush=True)


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
        f"{args.rounds} timed rounds (+{args.warmup} warm-up) x {args.epochs} epochs x {args.steps} steps (B: {steps_b}) "
        "of batch 128 (S: 32); times: median of one whole run; overhead = (ours - raw) / steps"
    )
    print(f"{'row':<{LABEL_WIDTH}} {'raw (ms)':>9} {'ours (ms)':>9} {'ratio':>7} {'overhead/step':>13}", flush=True)
    wall_ratios = {}
    for key in ROWS:
        if key in args.rows:
            result = ROWS[key](settings)
            wall_ratios[key] = result.ratio
            print("\n".join(format_row(result)), flush=True)
    if "resume" in args.rows:
        print("\n".join(resume_rows(args.rounds)), flush=True)
    if "import" in args.rows:
        base = import_time("import torch", args.import_runs)
        full = import_time("import torch, torchmanager", args.import_runs)
        print(
            f"import torchmanager over import torch: {(full - base) * 1e3:.0f} ms (median of {args.import_runs} fresh processes)"
        )
    if args.skip_counting is None:
        print_instructions(args, steps_b, wall_ratios)
    else:
        print(f"instructions per training step: not counted ({args.skip_counting})")
    print(f"{load_line()} (at end); {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
