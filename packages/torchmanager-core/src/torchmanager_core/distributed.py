"""The distributed runtime: `torchrun` detection, the process group, collectives and state reduction.

Who owns what: this module answers "am I rank 0?", starts the default process group when the
script was launched by `torchrun` (gloo on CPU, nccl on CUDA), makes the collectives the loop and
the callbacks agree through, and combines metric states over the ranks; the managers decide when.
Training data is shared out by `training_shards`, evaluation data by `evaluation_shards` (each
sample once). Without a process group every function behaves as a
single process would.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import logging
import os
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

__all__ = [
    "TIMEOUT_ENV",
    "agree_on",
    "all_flags",
    "all_reduce_sum",
    "any_process",
    "barrier",
    "broadcast_buffers",
    "broadcast_tensors",
    "from_main_process",
    "gather_objects",
    "get_rank",
    "get_world_size",
    "init_from_environment",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "local_device",
    "max_over_processes",
    "on_main_process",
    "start_max_over_processes",
    "rebuilt_loader",
    "reduce_states",
]

TIMEOUT_ENV = "TORCHMANAGER_DIST_TIMEOUT"
"""Seconds a collective may wait before the run fails instead of hanging (default 1800)."""

_logger = logging.getLogger("torchmanager")


def is_distributed() -> bool:
    """Whether a default process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank: the process group's, else torchrun's `RANK` (0 in a single process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))  # a rank before `fit` started the group


def get_world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this process writes files, logs and progress: rank 0, or the only process."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes in place and return it (unchanged in a single process)."""
    if is_distributed():
        total = _handed_over(tensor.detach().clone())
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        tensor.copy_(total)
    return tensor


_flag_groups: dict[Any, Any] = {}


def _flag_group() -> Any:
    """A gloo group over every process for host flags (None: the default group is gloo already).

    Agreeing on a flag through nccl would read a CUDA tensor back, a device sync; through gloo the
    flag stays on the host. Made once per default group (every process makes it at the same call).
    """
    if dist.get_backend() == "gloo":
        return None
    default = dist.group.WORLD
    if default not in _flag_groups:
        _flag_groups.clear()
        _flag_groups[default] = dist.new_group(backend="gloo")
    return _flag_groups[default]


_USERS: Callable[[torch.Tensor], int] | None = getattr(torch.Tensor, "_use_count", None)
_handed: list[tuple[torch.Tensor, int]] = []
"""Tensors given to a collective, each with its count of C++ users before it, until the backend let go of them."""

HAND_BACK_TIMEOUT_S = 5.0
"""Seconds the exit waits for the backend's threads to let go of the collectives' tensors (a dead peer's never do)."""


def _handed_over(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, noted as given to a collective until the thread running the collective has let go of it.

    Why: that thread (gloo's worker, nccl's watchdog) drops its reference after the call returned, and
    for a tensor Python made that takes the GIL. If the interpreter is finalizing by then, Python ends
    the thread inside a C++ destructor and the process aborts after a run that ended well ("terminate
    called without an active exception", SIGABRT). `_wait_for_hand_backs` waits for them at exit.
    Hand over tensors made for the one collective (a copy of a lasting tensor): the count of their C++
    users is then back where it was exactly when the thread has let go.
    """
    if _USERS is None:  # a torch without `Tensor._use_count`: not followed
        return tensor
    _handed[:] = [(held, users) for held, users in _handed if _USERS(held) > users]
    _handed.append((tensor, _USERS(tensor)))
    return tensor


@atexit.register
def _wait_for_hand_backs() -> int:
    """At exit, before the interpreter finalizes: wait (the GIL free) until the collectives' threads let go.

    Returns the number of tensors still held when `HAND_BACK_TIMEOUT_S` ran out (0: all were let go).
    """
    users_of, deadline = _USERS, time.monotonic() + HAND_BACK_TIMEOUT_S
    held = len(_handed)
    while users_of is not None and held and time.monotonic() < deadline:
        held = sum(users_of(tensor) > users for tensor, users in _handed)
        if held:
            time.sleep(0.001)
    _handed.clear()
    return held


def max_over_processes(values: Sequence[int]) -> list[int]:
    """Each of `values` at its largest over all processes (one host-side collective; `values` in a single process).

    Every process must call it at the same point with as many values: the loop agrees on its stop
    flag and on a preemption signal's number in one call.
    """
    if not is_distributed():
        return list(values)
    tensor = _handed_over(torch.tensor(list(values), dtype=torch.int64))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=_flag_group())
    return [int(value) for value in tensor.tolist()]


def start_max_over_processes(values: Sequence[int]) -> Callable[[], list[int]]:
    """Start `max_over_processes(values)` without waiting for it; the function returned waits for it and reads it.

    Every process must start it at the same point; reading it later (a batch later) lets the reduction run
    while the process goes on. In a single process the values are read back as they are.
    """
    if not is_distributed():
        return lambda: list(values)
    tensor = _handed_over(torch.tensor(list(values), dtype=torch.int64))
    work = dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=_flag_group(), async_op=True)

    def read() -> list[int]:
        work.wait()
        return [int(value) for value in tensor.tolist()]

    return read


def any_process(flag: bool) -> bool:
    """Whether `flag` is true in any process (one host-side collective; `flag` itself in a single process)."""
    return bool(max_over_processes([int(flag)])[0])


def on_main_process(action: Callable[[], None]) -> Exception | None:
    """Run `action` on the main process only; every process gets the exception it raised, or None.

    One host-side collective after the action (in place of a barrier), so that when the main
    process fails to write a file every process learns it at the same point and can act alike.
    In a single process it is `action()` with its exception returned.
    """
    error: Exception | None = None
    if is_main_process():
        try:
            action()
        except Exception as caught:  # handed to every process; BaseExceptions (Ctrl-C, exit) go on as they are
            error = caught
    if not is_distributed():
        return error
    shared: Exception | None = _broadcast_object(_picklable(error))
    return error if is_main_process() else shared


def _picklable(error: Exception | None) -> Exception | None:
    """`error`, or a RuntimeError with its text when it cannot be sent to the other processes."""
    try:
        pickle.dumps(error)
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def from_main_process(value: Any) -> Any:
    """Rank 0's `value` on every process (a picklable object; `value` itself in a single process)."""
    if not is_distributed():
        return value
    return _broadcast_object(value)


def _broadcast_object(value: Any) -> Any:
    """Rank 0's picklable `value` on every process, through the host (also under nccl): its size, then its bytes.

    `dist.broadcast_object_list` does the same with tensors of its own, which `_handed_over` cannot keep.
    """
    group = _flag_group()
    payload = torch.frombuffer(bytearray(pickle.dumps(value)), dtype=torch.uint8) if is_main_process() else None
    size = _handed_over(torch.tensor([0 if payload is None else payload.numel()], dtype=torch.int64))
    dist.broadcast(size, src=0, group=group)
    if payload is None:
        payload = torch.empty(int(size.item()), dtype=torch.uint8)
    dist.broadcast(_handed_over(payload), src=0, group=group)
    return value if is_main_process() else pickle.loads(payload.numpy().tobytes())


def broadcast_tensors(tensors: Sequence[torch.Tensor]) -> None:
    """Copy rank 0's values into `tensors` on every process, in place (a no-op in a single process).

    Every process calls it with tensors of the same shapes and dtypes, in the same order.
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in tensors:
            value = _handed_over(tensor.detach().clone())
            dist.broadcast(value, src=0)
            tensor.copy_(value)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics) of `module` (a no-op in a single process)."""
    broadcast_tensors(list(module.buffers()))


def launched_by_torchrun() -> bool:
    """Whether `torchrun` (or another launcher setting RANK, WORLD_SIZE, LOCAL_RANK) started this process."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def local_device() -> torch.device:
    """This process's device under torchrun: `cuda:LOCAL_RANK` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_from_environment() -> bool:
    """Start the default process group from torchrun's environment, once; whether one is running.

    A group the user initialised is used as it is. The backend is nccl when CUDA is available,
    else gloo; collectives time out after `TORCHMANAGER_DIST_TIMEOUT` seconds, so a rank that
    died ends the others with an error instead of a hang. After a restart by torchrun on one node,
    the group meets in the agent's store under this attempt's own keys (`_attempt_store`).
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if not launched_by_torchrun():
        return False
    device = local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
    backend = "nccl" if device.type == "cuda" else "gloo"
    store = _attempt_store(timeout)
    if store is None:
        dist.init_process_group(backend, timeout=timeout)
    else:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    atexit.register(_destroy)
    if is_main_process():
        _logger.info(f"Distributed training: {get_world_size()} processes ({dist.get_backend()} backend).")
    return True


def _attempt_store(timeout: datetime.timedelta) -> Any:
    """torchrun's store with keys of this attempt only, when torchrun restarts a group on one node; else None.

    torchrun (torch 2.4 and later) keeps one store in its agent across the restarts of a group, so
    a restarted process can read the address a process of the previous attempt published and fail
    to connect (pytorch/pytorch#135712; seen here in 1 of 4 restarts of a two-process gloo group
    with plain torch). On one node one agent counts the restarts, so `TORCHELASTIC_RESTART_COUNT`
    names the attempt for every process; across nodes the counts may differ, and the store is left
    as it is (set `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1` for torchrun instead).
    """
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or env.get("GROUP_WORLD_SIZE", "1") != "1":
        return None
    from torch.distributed import PrefixStore, TCPStore  # type: ignore[attr-defined]  # not in its stubs' exports

    store = TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False, timeout=timeout)
    return PrefixStore(f"torchmanager/attempt_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rebuilt_loader(loader: DataLoader[Any], **options: Any) -> DataLoader[Any]:
    """A `DataLoader` over `loader`'s data set with its loading options (workers, collate, pinning,
    generator, ...) and the given order options (`sampler`, `batch_sampler`, `batch_size`, `drop_last`);
    a loading option given here replaces the loader's."""
    kept: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "prefetch_factor": loader.prefetch_factor if loader.num_workers else None,
        "persistent_workers": loader.persistent_workers,
    }
    if hasattr(loader, "in_order"):  # torch 2.6 and later: whether workers' batches keep their order
        kept["in_order"] = loader.in_order
    return DataLoader(loader.dataset, **{**kept, **options})


_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN} if dist.is_available() else {}


def reduce_states(module: torch.nn.Module, *, counted: bool = True) -> None:
    """Combine a metric's declared states over all ranks, in place, by their `reductions`.

    The metrics inside `module` (the parts of a `MultiLosses`, a wrapped metric) are combined too.
    After it every rank holds the states of the whole data set; call it once, just before reading,
    on every rank. The reductions: "sum", "max" and "min" over the ranks; "cat" concatenates the
    ranks' states along dim 0 in rank order; "mean" averages them over the ranks that counted.

    Args:
        module: A metric (or a module holding metrics) whose submodules may declare `reductions`,
            a mapping of state names to one of the reductions above.
        counted: False on a rank that counted no batch (its share of an evaluation was empty): it
            takes part in every collective but adds nothing, whatever its states hold (0 to a sum,
            the lowest value to a max and the highest to a min, no rows to a "cat", and it is left
            out of a "mean"); its states must have the other ranks' shapes (`evaluation_shards.join`).
    Raises:
        ValueError: A reduction that is none of the above.
    """
    if not is_distributed():
        return
    contributors: int | None = None  # ranks that counted, known once a "mean" state needs it
    for submodule in module.modules():
        materialize = getattr(submodule, "materialize", None)
        if callable(materialize):
            materialize()  # counters a metric keeps on the host between reads
        reductions: Mapping[str, str] = getattr(submodule, "reductions", {})
        for name, reduction in reductions.items():
            state = getattr(submodule, name)
            if reduction == "cat":
                setattr(submodule, name, _concatenated(state, counted))
            elif reduction == "mean":
                contributors = contributors if contributors is not None else sum(all_flags(counted))
                total = _handed_over(
                    state.double().clone()
                    if counted
                    else torch.zeros(state.shape, dtype=torch.float64, device=state.device)
                )
                dist.all_reduce(total, op=dist.ReduceOp.SUM)
                mean = total / max(contributors, 1)
                setattr(submodule, name, mean.to(state.dtype) if state.is_floating_point() else mean)
            elif reduction in _OPS:
                reduced = _handed_over(state.detach().clone())
                if not counted:
                    reduced.fill_(_identity(reduction, state.dtype))
                dist.all_reduce(reduced, op=_OPS[reduction])
                state.copy_(reduced)
            else:
                raise ValueError(
                    "A metric state's reduction must be 'sum', 'mean', 'max', 'min' or 'cat'. "
                    f"Received: {type(submodule).__name__}.reductions[{name!r}]={reduction!r}"
                )


def _concatenated(state: torch.Tensor, counted: bool) -> torch.Tensor:
    """Every rank's `state` (nothing from a rank that did not count), concatenated along dim 0 in rank order."""
    mine = state.detach().cpu()
    if not counted:
        mine = mine.new_empty((0, *mine.shape[1:]))
    return torch.cat([part.to(state.device) for part in gather_objects(mine)])


def _identity(reduction: str, dtype: torch.dtype) -> float | int | bool:
    """The value a `reduction` ("sum", "max", "min") leaves the others' unchanged with, in `dtype`."""
    if reduction == "sum":
        return 0
    if dtype is torch.bool:
        return reduction == "min"
    if dtype.is_floating_point:
        return float("-inf") if reduction == "max" else float("inf")
    info = torch.iinfo(dtype)
    return info.min if reduction == "max" else info.max


def all_flags(flag: bool) -> list[bool]:
    """Every rank's `flag`, in rank order (one host-side collective; `[flag]` in a single process)."""
    if not is_distributed():
        return [flag]
    tensor = _handed_over(torch.zeros(get_world_size(), dtype=torch.int64))
    tensor[get_rank()] = int(flag)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=_flag_group())
    return [bool(value) for value in tensor.tolist()]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value` (picklable), in rank order, through the host (`[value]` in a single process)."""
    if not is_distributed():
        return [value]
    group, rank, world_size = _flag_group(), get_rank(), get_world_size()
    payload = torch.frombuffer(bytearray(pickle.dumps(value)), dtype=torch.uint8)
    sizes = _handed_over(torch.zeros(world_size, dtype=torch.int64))
    sizes[rank] = payload.numel()
    dist.all_reduce(sizes, op=dist.ReduceOp.SUM, group=group)  # every rank's size, to pad to the largest
    padded = _handed_over(torch.zeros(int(sizes.max().item()), dtype=torch.uint8))
    padded[: payload.numel()] = payload
    parts = [_handed_over(torch.empty_like(padded)) for _ in range(world_size)]
    dist.all_gather(parts, padded, group=group)  # `dist.all_gather_object` would keep tensors of its own
    return [pickle.loads(part[:size].numpy().tobytes()) for part, size in zip(parts, sizes.tolist(), strict=True)]


def agree_on(value: Any) -> Any:
    """Rank 0's `value` (picklable) on every rank: digests are compared, and it is sent only when they differ.

    For what every rank computes alike unless its random state differs (a shuffled order): one
    host-side collective when they agree, a broadcast too when they do not.
    """
    if not is_distributed():
        return value
    digest = int.from_bytes(hashlib.blake2b(pickle.dumps(value), digest_size=7).digest(), "big")
    extremes = _handed_over(torch.tensor([digest, -digest], dtype=torch.int64))
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX, group=_flag_group())
    if int(extremes[0]) == -int(extremes[1]):  # the largest digest is the smallest: all alike
        return value
    return _broadcast_object(value)
