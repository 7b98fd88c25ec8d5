"""Random seeds: freeze or re-randomise every generator a training run draws from, and capture their states.

`freeze_seed`/`unfreeze_seed` keep upstream torchmanager's names and return values; `get_rng_state` and
`set_rng_state` give a checkpoint-safe (weights_only-loadable) snapshot for an exact resume. NumPy is
optional: it is seeded and captured only when installed.
"""

from __future__ import annotations

import os
import random as _python_random
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import torch
from torch import rand, rand_like, randint, randint_like, randn, randn_like, randperm

__all__ = [
    "RawRngState",
    "capture_rng_state",
    "data_generators",
    "freeze_seed",
    "get_data_rng_state",
    "get_rng_state",
    "rand",
    "rand_like",
    "randbool",
    "randbool_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "randperm",
    "pack_rng_state",
    "restore_rng_state",
    "set_data_rng_state",
    "set_rng_state",
    "unfreeze_seed",
]

_CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
_STATE_KEYS = ("python", "torch", "cuda", "numpy")
# Deterministic-mode settings in force before `freeze_seed(..., deterministic=True)`, restored by `unfreeze_seed`.
_saved_flags: dict[str, Any] | None = None


def _numpy() -> ModuleType | None:
    """NumPy when installed, else None (it is optional)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _set_deterministic() -> None:
    """Turn on deterministic algorithms, remembering the previous settings once."""
    global _saved_flags
    if _saved_flags is None:
        _saved_flags = {
            "algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cublas": os.environ.get(_CUBLAS_ENV),
        }
    os.environ.setdefault(_CUBLAS_ENV, ":4096:8")  # cuBLAS needs it for deterministic results on CUDA >= 10.2
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _restore_deterministic() -> None:
    """Put back the settings saved by `_set_deterministic`, if any."""
    global _saved_flags
    if _saved_flags is None:
        return
    flags, _saved_flags = _saved_flags, None
    torch.use_deterministic_algorithms(flags["algorithms"], warn_only=flags["warn_only"])
    torch.backends.cudnn.deterministic = flags["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]
    if flags["cublas"] is None:
        os.environ.pop(_CUBLAS_ENV, None)
    else:
        os.environ[_CUBLAS_ENV] = flags["cublas"]


def freeze_seed(seed: int, /, *, deterministic: bool = False) -> None:
    """Seed Python `random`, NumPy (when installed) and torch on CPU and every CUDA device.

    Args:
        seed: An int in [0, 2**32), the range every generator accepts.
        deterministic: Also make torch and cuDNN pick deterministic algorithms (slower); undone by `unfreeze_seed`.
    Raises:
        TypeError: `seed` is not an int.
        ValueError: `seed` is outside [0, 2**32).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"`seed` must be an int. Received: seed={seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be in [0, 2**32) so that NumPy accepts it. Received: seed={seed}")
    _python_random.seed(seed)
    numpy = _numpy()
    if numpy is not None:
        numpy.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too
    if deterministic:
        _set_deterministic()


def unfreeze_seed() -> int:
    """Re-seed every generator from a non-deterministic seed and undo `deterministic=True`.

    Returns:
        The 64-bit seed torch drew; Python `random` gets the same, NumPy its low 32 bits.
    """
    seed = torch.seed()  # also seeds every CUDA device
    _python_random.seed(seed)
    numpy = _numpy()
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    _restore_deterministic()
    return seed


class RawRngState(NamedTuple):
    """Every generator's state as its library gives it (cheap to take; `pack_rng_state` makes it checkpoint-safe)."""

    python: tuple[Any, ...]
    torch: torch.Tensor
    cuda: list[torch.Tensor] | None
    numpy: dict[str, Any] | None


def capture_rng_state() -> RawRngState:
    """Every generator's state now, in memory (no conversion: `fit` takes one per epoch)."""
    numpy = _numpy()
    return RawRngState(
        _python_random.getstate(),
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        numpy.random.get_state(legacy=False) if numpy is not None else None,  # a dict: faster than the legacy tuple
    )


def restore_rng_state(raw: RawRngState) -> None:
    """Put back the states `capture_rng_state` took."""
    _python_random.setstate(raw.python)
    torch.set_rng_state(raw.torch)
    if raw.cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(raw.cuda[: torch.cuda.device_count()])
    numpy = _numpy()
    if raw.numpy is not None and numpy is not None:
        numpy.random.set_state(raw.numpy)


def pack_rng_state(raw: RawRngState) -> dict[str, Any]:
    """`raw` as tensors, ints and floats only, so `checkpoint.load` can read it back (`get_rng_state`'s layout)."""
    version, internal, gauss_next = raw.python
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "torch": raw.torch,
    }
    if raw.cuda is not None:
        state["cuda"] = raw.cuda
    if raw.numpy is not None:
        mt19937 = raw.numpy["state"]
        state["numpy"] = {
            "keys": torch.from_numpy(mt19937["key"].astype("int64")),
            "pos": int(mt19937["pos"]),
            "has_gauss": int(raw.numpy["has_gauss"]),
            "cached_gaussian": float(raw.numpy["gauss"]),
        }
    return state


def get_rng_state() -> dict[str, Any]:
    """Snapshot every generator, as tensors, ints and floats only, so `checkpoint.load` can read it back.

    Returns:
        A dict with "python" and "torch", plus "cuda" when CUDA is available and "numpy" when installed.
    """
    return pack_rng_state(capture_rng_state())


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore generators from `get_rng_state`'s snapshot, so the next draws repeat exactly.

    Parts for a generator missing here (no CUDA, no NumPy) are skipped; surplus CUDA states are ignored.

    Raises:
        TypeError: `state` is not a mapping.
        KeyError: `state` has a key `get_rng_state` never writes.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"`state` must be the dict returned by `get_rng_state`. Received: state={type(state).__name__}")
    unknown = sorted(set(state) - set(_STATE_KEYS))
    if unknown:
        raise KeyError(f"`state` keys must be among {list(_STATE_KEYS)}. Received: keys={unknown}")
    if "python" in state:
        python = state["python"]
        internal = tuple(int(value) for value in python["state"].tolist())
        _python_random.setstate((python["version"], internal, python["gauss_next"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in cuda_states])
    numpy = _numpy()
    if "numpy" in state and numpy is not None:
        saved = state["numpy"]
        keys = numpy.asarray(saved["keys"].cpu().numpy(), dtype=numpy.uint32)
        numpy.random.set_state(("MT19937", keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))


def randbool(size: Sequence[int], /, p: float = 0.5, *, device: torch.device | str | None = None) -> torch.Tensor:
    """A bool tensor of shape `size` whose elements are True with probability `p` in [0, 1].

    Raises:
        ValueError: `p` is outside [0, 1].
    """
    if not 0 <= p <= 1:
        raise ValueError(f"`p` must be a probability in [0, 1]. Received: p={p}")
    return rand(tuple(size), device=device) < p


def randbool_like(t: torch.Tensor, /, p: float = 0.5) -> torch.Tensor:
    """`randbool` with the shape and device of `t`."""
    return randbool(t.shape, p=p, device=t.device)


def data_generators(data: object) -> list[torch.Generator]:
    """The `torch.Generator`s a data source draws its order or items from, each once, in a fixed order.

    Looked for on the source and, recursively, on its `sampler`, `batch_sampler` and `dataset`: a
    `DataLoader`'s or a torchmanager `Dataset`'s `generator=`, a sampler's generator, a generator a
    data set keeps for its own random draws. The order is the same for data built the same way, so
    states saved from one run restore into another.
    """
    found: dict[int, torch.Generator] = {}
    pending: list[object] = [data]
    seen: set[int] = set()
    while pending:
        item = pending.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        generator = getattr(item, "generator", None)
        if isinstance(generator, torch.Generator):
            found.setdefault(id(generator), generator)
        pending.extend(_attribute(item, name) for name in ("sampler", "batch_sampler", "dataset"))
    return list(found.values())


def _attribute(item: object, name: str) -> object:
    """`item.name` without letting a failing property (or a lazy loader) break the search."""
    try:
        return getattr(item, name, None)
    except Exception:
        return None


def get_data_rng_state(data: object) -> list[torch.Tensor]:
    """The states of `data_generators(data)`, in their order (tensors: a weights-only checkpoint reads them)."""
    return [generator.get_state() for generator in data_generators(data)]


def set_data_rng_state(data: object, states: Sequence[torch.Tensor]) -> None:
    """Restore `get_data_rng_state`'s states into the generators of `data`.

    Raises:
        ValueError: `data` has another number of generators than the states were taken from.
    """
    generators = data_generators(data)
    if len(generators) != len(states):
        raise ValueError(
            f"The data draws from {len(generators)} torch.Generator(s) and the saved run from {len(states)}; resume "
            "with data built the same way (the same `generator=` arguments). "
            f"Received: {len(generators)} generators for {len(states)} saved states"
        )
    for generator, state in zip(generators, states):
        generator.set_state(state.cpu())
