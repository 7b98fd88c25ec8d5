"""Initialising a model built on the meta device once it is sharded, as one process would initialise it whole.

Who owns what: `FSDP2Strategy.setup` shards a meta model and allocates each process's shards
(`to_empty`); this module fills them. DTensor's own random initialisation draws each shard from the
process's generator (on the CPU, every process would draw the same rows), so each submodule in turn
gets its own weights whole, is initialised from rank 0's random state, and each process keeps its part.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import cast

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from .. import distributed

__all__ = ["initialise_shards"]


def initialise_shards(
    model: torch.nn.Module, device: torch.device, init_weights: Callable[[torch.nn.Module], None] | None
) -> None:
    """Initialise the shards of a model just allocated (`to_empty`) as one process would initialise it whole.

    Each submodule in turn (children first) gets its own parameters whole on `device`, is initialised
    from rank 0's random state, and each process keeps its shard. Peak memory: one submodule whole.

    Raises:
        ValueError: A submodule with weights has no `reset_parameters` and no `init_weights` was given.
    """
    owners: dict[int, int] = {}
    for module in model.modules():
        for tensor in module.parameters(recurse=False):
            owners[id(tensor)] = owners.get(id(tensor), 0) + 1
    tied: dict[int, torch.Tensor] = {}  # parameters of several modules: kept whole until the last is initialised
    with _random_state_of_rank0(device):
        for module in _children_first(model):
            has_tensors = any(t is not None for t in [*module._parameters.values(), *module._buffers.values()])
            if init_weights is None and not has_tensors:
                continue
            init = init_weights or _reset_parameters(module)
            originals = {name: p for name, p in module._parameters.items() if p is not None and _is_dtensor(p)}
            wholes = {name: tied.get(id(p)) for name, p in originals.items()}
            for name, sharded in originals.items():
                whole = wholes[name]
                if whole is None:
                    whole = wholes[name] = torch.empty(sharded.shape, dtype=sharded.dtype, device=device)
                module._parameters[name] = torch.nn.Parameter(whole, requires_grad=sharded.requires_grad)
            try:
                with torch.no_grad():
                    init(module)
            finally:
                module._parameters.update(originals)
            for name, sharded in originals.items():
                _fill_shard(cast(DTensor, sharded), cast(torch.Tensor, wholes[name]))
                owners[id(sharded)] -= 1
                if owners[id(sharded)]:
                    tied[id(sharded)] = cast(torch.Tensor, wholes[name])
                else:
                    tied.pop(id(sharded), None)


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, DTensor)


@torch.no_grad()
def _fill_shard(sharded: DTensor, whole: torch.Tensor) -> None:
    """Copy this process's part of `whole` into the shard `sharded` (no communication: every process has `whole`)."""
    placed = distribute_tensor(whole, sharded.device_mesh, sharded.placements, src_data_rank=None)
    sharded.to_local().copy_(placed.to_local())


def _children_first(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The submodules in the order `model.apply` visits them (each child before its parent), each once."""
    seen: set[int] = set()

    def visit(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        for child in module.children():
            yield from visit(child)
        if id(module) not in seen:
            seen.add(id(module))
            yield module

    return visit(model)


def _reset_parameters(module: torch.nn.Module) -> Callable[[torch.nn.Module], None]:
    reset = getattr(module, "reset_parameters", None)
    if not callable(reset):
        raise ValueError(
            f"The submodule {type(module).__name__} of a model built on the meta device has weights but no "
            "`reset_parameters`, so its weights cannot be initialised; give `init_weights=fn`, a function of a "
            f"module initialising its own parameters and buffers. Received: module={type(module).__name__}"
        )
    return lambda _: reset()


@contextlib.contextmanager
def _random_state_of_rank0(device: torch.device) -> Iterator[None]:
    """Draw from rank 0's random state (CPU, and `device`'s when it is a GPU) in the body, on every process.

    A process whose state was rank 0's ends with it advanced as one process's would be; another gets
    its own state back.
    """
    own = _generator_states(device)
    agreed = distributed.agree_on(own)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        _set_generator_states(agreed, device)
        yield
        after = _generator_states(device)
    if all(torch.equal(mine, theirs) for mine, theirs in zip(own, agreed)):
        _set_generator_states(after, device)


def _generator_states(device: torch.device) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_generator_states(states: Sequence[torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)
