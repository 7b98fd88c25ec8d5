"""Where a training step's instructions go: each function's share, for `Manager.fit` and the hand loop.

Usage: hatch run python benchmarks/profile_step.py [--row S] [--steps 10]   (about 10 minutes)

Python 3.11 has no perf trampolines, so callgrind alone sees the interpreter's C functions, not
which Python function runs. The instructions are attributed in two passes instead:

1. Which functions run (natively, with cProfile): the torchmanager functions called more often
   in a 2-epoch run than in a 1-epoch run, five torch entry points that both loops call (the
   model, `cross_entropy`, `Tensor.backward`, `SGD.step`, `zero_grad`), and which calls which.
2. What each costs (under callgrind, in one process, instrumented once): for one function at a
   time, its code object is swapped for a probe that switches collection on at its outermost
   call and off at its return (for a generator: around each resume), and three runs are
   counted: 1 epoch of n steps, 1 epoch of 2n, 2 epochs of n. Per step = (1x2n - 1xn) / n, the
   steady cost of a step; per epoch = (2xn - 1xn) - n x per step, what an epoch adds besides
   its steps (resets, the first batch after a reset, reading the floats, the summary line). The
   probe's own cost per call (ctypes calls, the extra frame; measured on an empty function) is
   subtracted. Only one function is probed per run, so probes never nest.

The tree puts each function under its main probed caller; `own` is its inclusive cost minus that
of its probed callees (by the share of their calls made from it): its Python code and the torch
calls it makes itself. Values within a few hundred instructions of zero are noise (malloc's
state differs between runs). Both loops' totals are counted the same way in the same process.

Who owns what: `bench_callgrind` talks to valgrind, `bench_loops` says what a run trains, this
module finds, probes and tabulates functions.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import functools
import gc
import inspect
import json
import logging
import os
import pstats
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_callgrind as callgrind

FunctionKey = tuple[str, int, str]  # cProfile's (file, first line, name)
SHARED = {  # the torch entry points both loops call, by the attribute path that reaches them
    "torch.nn.Module._wrapped_call_impl": "the model (outermost module call)",
    "torch.nn.functional.cross_entropy": "F.cross_entropy",
    "torch.Tensor.backward": "Tensor.backward",
    "torch.optim.SGD.step": "SGD.step (with its profiling hook)",
    "torch.optim.Optimizer.zero_grad": "Optimizer.zero_grad",
}
OURS_PACKAGES = ("torchmanager_core", "torchmanager_metrics", "torchmanager_losses", "torchmanager_data")
_PROBE = "__callgrind_probe__"


@dataclass
class Target:
    """One function to probe: where cProfile saw it, how often it runs per step, who calls it."""

    contender: str
    file: str
    line: int
    name: str
    label: str
    generator: bool
    callers: dict[str, float] = field(default_factory=dict)  # nearest probed caller's label -> share of the calls


def _package_path(file: str) -> str:
    for package in (*OURS_PACKAGES, "torch"):
        marker = f"/{package}/"
        if marker in file:
            return package + "/" + file.split(marker, 1)[1]
    return os.path.basename(file)


def _is_ours(file: str) -> bool:
    return any(f"/{package}/" in file for package in OURS_PACKAGES)


# -- pass 1: which functions run per step (cProfile, natively) ---------------------------------


def _profiled_calls(fit: Callable[[int], object], epochs: int) -> dict[FunctionKey, Any]:
    profile = cProfile.Profile()
    profile.enable()
    fit(epochs)
    profile.disable()
    return pstats.Stats(profile).stats  # type: ignore[attr-defined, no-any-return]


def _shared_keys() -> dict[FunctionKey, str]:
    """cProfile's key of each shared torch entry point (after an optimizer exists: `SGD.step` is hooked then)."""
    keys = {}
    for path, label in SHARED.items():
        code = _unwrap_function(_resolve(path)).__code__
        keys[(code.co_filename, code.co_firstlineno, code.co_name)] = label
    return keys


def discover(key: str, steps: int) -> list[Target]:
    """The functions to probe: ours' torchmanager functions that run per step or per epoch, and the shared torch ones."""
    from bench_loops import WORKLOADS, ours_fit, raw_fit, seeded_start

    initial, batches = seeded_start(WORKLOADS[key], steps)
    fits: dict[str, Callable[[int], object]] = {
        "raw": lambda epochs: raw_fit(copy.deepcopy(initial), batches, epochs),
        "ours": lambda epochs: ours_fit(
            copy.deepcopy(initial), batches, epochs, copied_step=WORKLOADS[key].copied_step
        ),
    }
    targets = []
    for contender, fit in fits.items():
        fit(1)  # warm-up: lazy imports, and `SGD.step` hooked
        shared = _shared_keys()
        one, two = _profiled_calls(fit, 1), _profiled_calls(fit, 2)
        per_step = {
            k: (two[k][1] - one.get(k, (0, 0))[1]) / steps
            for k in two
            if k in shared or (contender == "ours" and _is_ours(k[0]) and not k[2].startswith("<"))
        }
        chosen = {k: n for k, n in per_step.items() if n > 0 or (contender == "ours" and k[2] == "fit")}
        functions = {k: _find_function(*k) for k in chosen}
        labels = {
            k: f"{shared.get(k) or getattr(f.__code__, 'co_qualname', k[2])} ({_package_path(k[0])}:{k[1]})"
            for k, f in functions.items()
            if f is not None
        }
        for k, function in functions.items():
            if function is None:
                continue  # not reachable from its module's namespace: counted in its caller's own cost
            callers = _nearest_callers(k, two, set(labels))
            targets.append(
                Target(
                    contender,
                    *k,
                    labels[k],
                    bool(function.__code__.co_flags & inspect.CO_GENERATOR),
                    {labels[c]: share for c, share in callers.items()},
                )
            )
    return targets


def _nearest_callers(
    key: FunctionKey, stats: dict[FunctionKey, Any], chosen: set[FunctionKey]
) -> dict[FunctionKey, float]:
    """The share of `key`'s outermost calls made by each nearest chosen caller, walking up through callers not chosen.

    Calls of `key` from within itself (a module calling its submodules) are not outermost: their
    share is left out and the rest scaled up.
    """
    found: dict[FunctionKey, float] = {}
    frontier = {key: 1.0}
    seen = {key}
    recursive = 0.0
    for _ in range(8):
        upper: dict[FunctionKey, float] = {}
        for current, share in frontier.items():
            callers = stats[current][4]
            total = sum(counts[1] for counts in callers.values()) or 1
            for caller, counts in callers.items():
                part = share * counts[1] / total
                if caller == key:
                    recursive += part
                elif caller in chosen:
                    found[caller] = found.get(caller, 0.0) + part
                elif caller not in seen and caller in stats:
                    seen.add(caller)
                    upper[caller] = upper.get(caller, 0.0) + part
        frontier = upper
    return {caller: share / (1 - recursive) for caller, share in found.items()} if recursive < 1 else found


# -- finding and swapping functions ------------------------------------------------------------


def _resolve(path: str) -> Any:
    module, _, rest = path.partition(".")
    value: Any = __import__(module)
    for part in rest.split("."):
        value = getattr(value, part)
    return value


def _unwrap_function(value: Any) -> types.FunctionType:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    if not isinstance(value, types.FunctionType):
        raise TypeError(f"Not a Python function: {value!r}")
    return value


def _find_function(file: str, line: int, name: str) -> types.FunctionType | None:
    """The function defined at `file:line` named `name`, from the namespaces of its module and its classes."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) != file:
            continue
        spaces = [vars(module)]
        spaces += [vars(value) for value in vars(module).values() if isinstance(value, type)]
        for space in spaces:
            for value in list(space.values()):
                values = [value.fget, value.fset] if isinstance(value, property) else [value]
                for candidate in values:
                    if isinstance(candidate, (staticmethod, classmethod)):
                        candidate = candidate.__func__
                    code = getattr(candidate, "__code__", None)
                    if (
                        code is not None
                        and code.co_filename == file
                        and code.co_firstlineno == line
                        and code.co_name == name
                    ):
                        return candidate  # type: ignore[no-any-return]
    for path in SHARED:  # torch's hooked `SGD.step` lives in no namespace of its module
        function = _unwrap_function(_resolve(path))
        code = function.__code__
        if (code.co_filename, code.co_firstlineno, code.co_name) == (file, line, name):
            return function
    return None


class _Probe:
    """Collects the instructions of the function it stands in for, from its outermost call to its return."""

    def __init__(self, original: types.FunctionType, generator: bool) -> None:
        self.original = original
        self.generator = generator
        self.calls = 0
        self.depth = 0

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.generator:
            return self._resumes(args, kwargs)
        if self.depth:
            return self.original(*args, **kwargs)
        self.calls += 1
        self.depth = 1
        callgrind.toggle_collect()
        try:
            return self.original(*args, **kwargs)
        finally:
            callgrind.toggle_collect()
            self.depth = 0

    def _resumes(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
        end = object()
        iterator = self.original(*args, **kwargs)
        while True:
            self.calls += 1
            callgrind.toggle_collect()
            try:
                item = next(iterator, end)
            finally:
                callgrind.toggle_collect()
            if item is end:
                return
            yield item


@contextmanager
def probed(function: types.FunctionType) -> Iterator[_Probe]:
    """Within the block, every call of `function` (however it was reached) goes through a `_Probe`."""
    code = function.__code__
    original = types.FunctionType(
        code, function.__globals__, function.__name__, function.__defaults__, function.__closure__
    )
    original.__kwdefaults__ = function.__kwdefaults__
    probe = _Probe(original, bool(code.co_flags & inspect.CO_GENERATOR))
    cells = code.co_freevars  # the swapped-in code must take the same closure cells
    source = (
        f"def _outer({', '.join(cells)}):\n"
        f"    def _probed(*args, **kwargs):\n"
        f"        {'; '.join(cells) or 'pass'}\n"
        f"        return {_PROBE}(args, kwargs)\n"
        f"    return _probed\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    function.__globals__[_PROBE] = probe
    function.__code__ = namespace["_outer"](*([None] * len(cells))).__code__
    function.__wrapped__ = original  # type: ignore[attr-defined]  # `inspect.signature` still sees the real one
    try:
        yield probe
    finally:
        function.__code__ = code
        del function.__wrapped__  # type: ignore[attr-defined]
        del function.__globals__[_PROBE]


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _noop_items(n: int) -> Iterator[int]:
    yield from range(n)


# -- pass 2: what each costs (under callgrind) ----------------------------------------------------


@contextmanager
def _collected() -> Iterator[None]:
    callgrind.toggle_collect()
    try:
        yield
    finally:
        callgrind.toggle_collect()


RUNS = ((1, 1), (1, 2), (2, 1))
"""(epochs, steps per epoch in units of `--steps`) of the runs counted for each function and in total."""


def _child(key: str, steps: int, targets_file: str, calls_file: str) -> None:
    """Under callgrind: warm up both loops, then count the totals, the probe's cost, and each target's runs."""
    import torch
    from bench_loops import WORKLOADS, ours_fit, raw_fit, seeded_start

    if not callgrind.running_on_valgrind():
        raise SystemExit("`--child` counts instructions: run it under valgrind --tool=callgrind (see `profile`).")
    torch.set_num_threads(1)
    logging.getLogger("torchmanager").setLevel(logging.WARNING)
    initial, batches = seeded_start(WORKLOADS[key], 2 * steps)
    fits: dict[str, Callable[..., object]] = {
        "raw": raw_fit,
        "ours": functools.partial(ours_fit, copied_step=WORKLOADS[key].copied_step),
    }
    for fit in fits.values():
        fit(copy.deepcopy(initial), batches, 1)  # uncounted warm-up
    gc.collect()
    gc.freeze()  # the collections before each run then skip the imported modules' objects (minutes under callgrind)
    targets = json.loads(Path(targets_file).read_text())
    calls: dict[str, int] = {}
    callgrind.start_instrumentation()  # once: switching it re-translates all code; collection is toggled instead

    def run(contender: str, epochs: int, length: int, label: str, measure: Callable[[], Any] = nullcontext) -> None:
        model = copy.deepcopy(initial)
        gc.collect()
        fits[contender](model, batches[: length * steps], epochs, measure=measure)
        callgrind.dump_stats(label)

    for contender in fits:
        for epochs, length in RUNS:
            run(contender, epochs, length, f"total {contender} {epochs} {length}", _collected)
    for name, function, count in (("call", _noop, 1000), ("generator", _noop_items, 1000)):
        with probed(function) as probe:  # type: ignore[arg-type]
            if name == "call":
                for _ in range(count):
                    function(1, 2)
            else:
                for _ in function(count):
                    pass
        callgrind.dump_stats(f"calibrate {name}")
        calls[f"calibrate {name}"] = probe.calls
    for index, target in enumerate(targets):
        function = _find_function(target["file"], target["line"], target["name"])
        if function is None:
            continue
        for epochs, length in RUNS:
            label = f"target {index} {epochs} {length}"
            with probed(function) as probe:
                run(target["contender"], epochs, length, label)
            calls[label] = probe.calls
    Path(calls_file).write_text(json.dumps(calls))


# -- the parent: run the child, tabulate --------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """Instructions (or calls) per step in a long epoch, and per epoch besides."""

    step: float
    epoch: float

    @staticmethod
    def of(counts: Callable[[int, int], float], steps: int) -> Cost:
        """From the counts of `RUNS`: (1 epoch of 2n - 1 epoch of n) / n per step; the rest of a second epoch per epoch."""
        step = (counts(1, 2) - counts(1, 1)) / steps
        return Cost(step, counts(2, 1) - counts(1, 1) - step * steps)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.step - other.step, self.epoch - other.epoch)

    def __mul__(self, factor: float) -> Cost:
        return Cost(self.step * factor, self.epoch * factor)

    def at(self, steps: int) -> float:
        """Per step in epochs of `steps` steps."""
        return self.step + self.epoch / steps


@dataclass
class Row:
    """A probed function's inclusive cost (probe's cost removed) and calls, and its probed callees."""

    target: Target
    cost: Cost
    calls: Cost
    children: list[Row] = field(default_factory=list)

    def own(self) -> Cost:
        """The inclusive cost minus that of the probed callees (their share of calls made from here)."""
        own = self.cost
        for child in self.children:
            own = own - child.cost * child.target.callers.get(self.target.label, 0.0)
        return own


def profile(key: str, steps: int) -> None:
    """Discover, probe under callgrind, print the tables."""
    targets = discover(key, steps)
    with tempfile.TemporaryDirectory() as folder:
        targets_file, calls_file = Path(folder) / "targets.json", Path(folder) / "calls.json"
        out_file = Path(folder) / "callgrind.out"
        targets_file.write_text(json.dumps([vars(t) for t in targets]))
        command = [
            *callgrind.callgrind_command(out_file, collect_at_start=False),
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            key,
            str(steps),
            str(targets_file),
            str(calls_file),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise SystemExit(f"The callgrind run failed ({result.returncode}):\n{result.stdout}{result.stderr[-4000:]}")
        dumps = callgrind.read_dumps(out_file)
        calls = json.loads(calls_file.read_text())
    overhead = {name: dumps[f"calibrate {name}"] / calls[f"calibrate {name}"] for name in ("call", "generator")}
    totals = {c: Cost.of(lambda e, n, c=c: dumps[f"total {c} {e} {n}"], steps) for c in ("raw", "ours")}
    rows: dict[str, dict[str, Row]] = {"raw": {}, "ours": {}}
    for index, target in enumerate(targets):
        if f"target {index} 1 1" not in dumps:
            continue
        probe = overhead["generator" if target.generator else "call"]
        label = f"target {index} {{}} {{}}"
        rows[target.contender][target.label] = Row(
            target,
            Cost.of(lambda e, n, k=label, p=probe: dumps[k.format(e, n)] - calls[k.format(e, n)] * p, steps),
            Cost.of(lambda e, n, k=label: calls[k.format(e, n)], steps),
        )
    long = 200
    print(
        f"row {key}; {callgrind.valgrind_version()}; per step: (1 epoch of {2 * steps} steps - 1 epoch of {steps}) / {steps};"
    )
    print(f"per epoch: (2 epochs of {steps} steps - 1 epoch of {steps}) - {steps} x per step")
    print(
        f"probe cost removed: {overhead['call']:.0f} instructions per call, {overhead['generator']:.0f} per generator resume"
    )
    for name, contender in (("hand loop", "raw"), ("ours", "ours")):
        total = totals[contender]
        print(f"total, {name}: {total.step:,.0f} per step + {total.epoch:,.0f} per epoch")
    print(
        f"at {long} steps per epoch (the bench's default): ratio {totals['ours'].at(long) / totals['raw'].at(long):.3f}, "
        f"framework {totals['ours'].at(long) - totals['raw'].at(long):,.0f} per step"
    )
    print("\nshared torch work per step (the same calls in both loops):")
    print(f"{'':<42} {'hand loop':>12} {'ours':>12}")
    shared_sum = {"raw": 0.0, "ours": 0.0}
    for name in SHARED.values():
        values = {
            c: next((r.cost.step for r in rows[c].values() if r.target.label.startswith(name)), 0.0) for c in rows
        }
        for c in values:
            shared_sum[c] += values[c]
        print(f"{name:<42} {values['raw']:>12,.0f} {values['ours']:>12,.0f}")
    print(f"{'sum':<42} {shared_sum['raw']:>12,.0f} {shared_sum['ours']:>12,.0f}")
    print(
        f"{'the rest (loop, accumulation, framework)':<42} {totals['raw'].step - shared_sum['raw']:>12,.0f} "
        f"{totals['ours'].step - shared_sum['ours']:>12,.0f}"
    )
    _print_tree(rows["ours"])


def _print_tree(rows: dict[str, Row]) -> None:
    """Each function under its main probed caller (the others named after it)."""
    primary: dict[str, Row] = {}
    for row in rows.values():
        callers = {c: share for c, share in row.target.callers.items() if c in rows and c != row.target.label}
        for caller in callers:
            rows[caller].children.append(row)
        if callers:
            primary[row.target.label] = rows[max(callers, key=lambda c: callers[c])]
    width = 88
    print("\nours as a call tree: calls, inclusive and own instructions, per step and per epoch besides")
    print(
        f"{'function (file:line)':<{width}} {'calls':>5} {'incl/step':>10} {'own/step':>9} {'calls':>6} {'incl/epoch':>11} {'own/epoch':>10}"
    )

    def show(row: Row, depth: int) -> None:
        main = primary.get(row.target.label)
        others = [
            c.split(" (")[0] for c in row.target.callers if c in rows and main is not None and c != main.target.label
        ]
        own = row.own()
        print(
            f"{'  ' * depth + row.target.label:<{width}} {row.calls.step:>5.2f} {row.cost.step:>10,.0f} {own.step:>9,.0f} "
            f"{row.calls.epoch:>6.2f} {row.cost.epoch:>11,.0f} {own.epoch:>10,.0f}"
            + (f"  (also from {', '.join(others)})" if others else "")
        )
        children = [child for child in row.children if primary.get(child.target.label) is row]
        for child in sorted(children, key=lambda r: (-r.cost.step, -r.cost.epoch)):
            show(child, depth + 1)

    for root in sorted((r for r in rows.values() if r.target.label not in primary), key=lambda r: -r.cost.epoch):
        show(root, 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--row", default="S", choices=["A", "B", "S", "P"], help="the workload (bench_loops.WORKLOADS)")
    parser.add_argument(
        "--steps", type=int, default=10, help="batches of the short epoch (the long one has twice as many)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        _child(arguments.child[0], int(arguments.child[1]), arguments.child[2], arguments.child[3])
    else:
        import torch

        torch.set_num_threads(1)
        logging.getLogger("torchmanager").setLevel(logging.WARNING)
        profile(arguments.row, arguments.steps)
