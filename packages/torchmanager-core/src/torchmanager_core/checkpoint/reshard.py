"""Resuming on another number of processes: whether the run can go on as it was, and each process's random state.

Who owns what: a checkpoint's tensors load on any number of processes (`sharded`: DCP reshards;
a replicated model is whole everywhere), and the data position is global (a sample index in the
epoch's order, `data_position`), so M processes resume at the sample where N stopped. What cannot
carry over is what belonged to one process: its random stream. On the same number of processes each
takes its own back and the run continues bit-identically; on another number this module says whether
the continuation is the same run (within float tolerance: sums are added in another order) and refuses
one that would silently differ, unless the user allows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .. import distributed

__all__ = ["check_new_world", "continue_layout", "own_values", "random_layers", "rank_random_state"]


def random_layers(model: torch.nn.Module) -> list[str]:
    """The names of `model`'s submodules that draw random numbers in training (dropout with p > 0, RReLU)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            found.append(name)
        elif isinstance(module, torch.nn.MultiheadAttention) and module.dropout > 0:
            found.append(name)
        elif isinstance(module, torch.nn.RReLU):
            found.append(name)
    return found


_TORCH_STREAMS = ("torch", "cuda")
"""The generators of `random.get_rng_state()` that a training step draws from (dropout, noise): compared.

Python's and NumPy's are seeded per process at start-up unless the script seeds them, and a step rarely
draws from them (a loader's workers draw per item, `data`), so they do not make processes differ."""


def _identical(states: Sequence[Mapping[str, Any]]) -> bool:
    streams = [{key: state[key] for key in _TORCH_STREAMS if key in state} or state for state in states]
    return all(_equal(streams[0], other) for other in streams[1:])


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


def check_new_world(
    saved_world: int,
    world: int,
    *,
    random_states: Sequence[Mapping[str, Any]],
    samples_per_update: tuple[int | None, int | None] = (None, None),
    model: torch.nn.Module | None = None,
    allow_divergence: bool = False,
) -> None:
    """Refuse to resume on `world` processes a run saved by `saved_world` when it would not be the same run.

    Nothing is checked on as many processes (each takes its own random state: bit-identical). On
    another number the run is the same within float tolerance only when each update sees as many
    samples and training draws no random numbers: the draws of N processes have no counterpart on
    M (they would fall on other samples). Every process reaches the same decision.

    Args:
        saved_world: The processes that wrote the checkpoint.
        world: The processes resuming it.
        random_states: Each writing process's random state (`random.get_rng_state()`), in rank order;
            their torch generators (CPU and CUDA) are compared.
        samples_per_update: The samples one optimizer update saw (processes x batch x accumulation),
            saved and now; None where unknown (not checked).
        model: The model, to find layers that draw random numbers in training (dropout).
        allow_divergence: Continue anyway (statistically alike, not the same numbers).
    Raises:
        ValueError: The run would not continue as it was, and `allow_divergence` is False.
    """
    if saved_world == world or allow_divergence:
        return
    reasons = []
    saved_samples, samples = samples_per_update
    if saved_samples is not None and samples is not None and saved_samples != samples:
        reasons.append(
            f"each update would see {samples} samples instead of {saved_samples} (processes x batch x accumulation "
            f"steps): give each process a batch of {saved_samples / world:g} samples"
            if saved_samples % world == 0
            else f"each update would see {samples} samples instead of {saved_samples}, which {world} processes cannot "
            "share evenly"
        )
    if len(random_states) > 1 and not _identical(random_states):
        reasons.append(
            f"the {saved_world} processes drew from torch random states of their own (seeded per process), which "
            f"have no counterpart on {world} (seed every process alike to avoid it)"
        )
    drawing = random_layers(model) if model is not None else []
    if drawing:
        shown = ", ".join(f"`{name}`" for name in drawing[:3]) + (", ..." if len(drawing) > 3 else "")
        reasons.append(
            f"the model draws random numbers in training ({shown}), and on {world} process{'es' if world != 1 else ''} the draws fall on "
            "other samples"
        )
    if reasons:
        raise ValueError(
            f"A checkpoint written by {saved_world} processes cannot continue the same run on {world}: "
            + "; ".join(reasons)
            + f". Resume on {saved_world} processes for a bit-identical run, or pass `allow_divergence=True` to "
            f"continue with other numbers. Received: saved_world_size={saved_world}, world_size={world}"
        )


def rank_random_state(random_states: Sequence[Mapping[str, Any]], rank: int) -> Mapping[str, Any] | None:
    """The random state process `rank` resumes with: its own when it wrote one; else, when every writing process
    had the same, that one; else None (a new process, whose generators the script seeded, keeps them)."""
    if rank < len(random_states):
        return random_states[rank]
    if random_states and _identical(random_states):
        return random_states[0]
    return None


def own_values(
    ranks: Sequence[Mapping[str, Any]], rank: int, world: int, whole_values: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The values process `rank` of `world` resumes with (`checkpointing.OWN_KEYS`), from each writing process's
    own values `ranks` and the running values of all of them together, `whole_values`.

    On as many processes, each takes its own. On another number, the running values of the epoch go
    to process 0 whole (the others start empty: the epoch's values come out as one process's), no
    accumulation gradients carry over, and random states are taken as `rank_random_state` says.
    """
    if world == len(ranks):
        own = ranks[rank]
        return {key: own.get(key) for key in ("rng", "epoch_rng", "values", "gradients")}
    randoms = [own.get("rng") or {} for own in ranks]
    state = rank_random_state([random.get("generators", random) for random in randoms], rank)
    take = ranks[rank] if rank < len(ranks) else (ranks[0] if state is not None else {})
    return {
        "rng": take.get("rng"),
        "epoch_rng": take.get("epoch_rng"),
        "values": whole_values if rank == 0 else None,
        "gradients": None,
    }


def continue_layout(
    layout: Mapping[str, Any],
    batch: int,
    batch_size: int | None,
    accumulate: int,
    model: torch.nn.Module,
    allow_divergence: bool = False,
) -> int:
    """The batches done in the epoch, in this run's batches, for a run resumed from a checkpoint laid out as `layout`
    (`world_size`, `random_states`, `samples_done`: the global position, `samples_per_update`; `checkpointing`
    writes them), whose position was `batch` of its own batches.

    Raises:
        ValueError: The run would not be the same run on this number of processes (`check_new_world`), unless
            `allow_divergence`; or the global position is unknown (data without indices) or falls inside a batch.
    """
    saved, world = int(layout["world_size"]), distributed.get_world_size()
    per_update = world * batch_size * accumulate if batch_size is not None else None
    check_new_world(
        saved,
        world,
        random_states=layout["random_states"],
        samples_per_update=(layout["samples_per_update"], per_update),
        model=model,
        allow_divergence=allow_divergence,
    )
    if saved == world or batch == 0:
        return batch
    position = layout["samples_done"]
    if position is None or batch_size is None or position % (batch_size * world):
        raise ValueError(
            f"A checkpoint written by {saved} processes inside an epoch resumes on {world} at its global sample, "
            f"which this data cannot give in whole batches of {batch_size} per process (a data set with indices, a "
            f"DataLoader or a torchmanager Dataset, whose {world} x batch size divides the position); resume on "
            f"{saved} processes, or from an epoch's end. Received: samples_done={position}, batch_size={batch_size}"
        )
    return int(position // (batch_size * world))
