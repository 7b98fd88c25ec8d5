"""Device selection and moves: CUDA > MPS > CPU, `device=`/`devices=` parsing, DataParallel.

Who owns what: this module decides where things run and moves batches and optimizer state;
the managers decide when (before and after `fit`/`test`). Upstream torchmanager 1.5's names
(`search`, `set_default`, `data_parallel`, `GPU`, `GPUS`, `DEFAULT`) are here with upstream's
signatures; `GPU`, `GPUS` and `DEFAULT` are looked up when first read, since asking CUDA at import
would start it in every process that merely imports torchmanager.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch

__all__ = [
    "CPU",
    "DEFAULT",
    "GPU",
    "GPUS",
    "DeviceLike",
    "data_parallel",
    "default_device",
    "empty_cache",
    "move_optimizer_state",
    "move_to_device",
    "search",
    "select",
    "set_default",
    "use_data_parallel",
]

CPU = torch.device("cpu")
"""The CPU, where managers keep their model between runs."""

if TYPE_CHECKING:
    GPU: torch.device
    """`torch.device("cuda")`, or `NotImplemented` without CUDA (upstream's constant)."""
    GPUS: list[torch.device]
    """Every visible CUDA device (empty without CUDA)."""
    DEFAULT: torch.device
    """The current CUDA device, else the CPU (upstream's constant: MPS is not its default)."""
else:

    def __getattr__(name: str) -> Any:
        """Upstream's device constants, read from torch when asked for."""
        cuda = torch.cuda.is_available()
        if name == "GPU":
            return torch.device("cuda") if cuda else NotImplemented
        if name == "GPUS":
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if cuda else []
        if name == "DEFAULT":
            return torch.device("cuda", torch.cuda.current_device()) if cuda else CPU
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DeviceLike = torch.device | str | int
"""A device, its name (`"cuda:1"`, `"cpu"`) or a CUDA index."""

T = TypeVar("T")
_logger = logging.getLogger("torchmanager")
_warned: set[str] = set()


def default_device() -> torch.device:
    """The best available device: the current CUDA device, else MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return CPU


def _parse(value: object, name: str) -> torch.device:
    if isinstance(value, torch.device):
        device = value
    elif isinstance(value, int) and not isinstance(value, bool):
        device = torch.device("cuda", value)
    elif isinstance(value, str):
        try:
            device = torch.device(value)
        except RuntimeError:
            raise ValueError(
                f"`{name}` must name a device such as 'cpu', 'cuda', 'cuda:1' or 'mps'. Received: {name}={value!r}"
            ) from None
    else:
        raise TypeError(f"`{name}` must be a torch.device, a device name or a CUDA index. Received: {name}={value!r}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"`{name}` must be a device that runs models: 'cpu', 'cuda[:index]' or 'mps' ('{device.type}' holds no data). "
            f"Received: {name}={value!r}"
        )
    _check_available(device, name)
    return device


def _check_available(device: torch.device, name: str) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise ValueError(
                f"`{name}` asks for {device} but {count} CUDA device(s) are visible. Received: {name}={device}"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"`{name}` asks for MPS but MPS is not available here. Received: {name}={device}")


def select(
    device: DeviceLike | Sequence[DeviceLike] | None = None, devices: DeviceLike | Sequence[DeviceLike] | None = None
) -> tuple[torch.device, list[torch.device]]:
    """Resolve the `device=` (upstream) / `devices=` (README) arguments of `fit`, `test` and `predict`.

    Returns:
        The main device (where the model, losses, metrics and batches go) and all target devices
        (several only for DataParallel).
    Raises:
        ValueError: Both arguments given, an empty list, unknown or unavailable devices, or a list
            mixing device types.
    """
    if device is not None and devices is not None:
        raise ValueError(
            f"Pass either `device` (upstream name) or `devices` (README name), not both. Received: device={device!r}, devices={devices!r}"
        )
    name, spec = ("devices", devices) if devices is not None else ("device", device)
    if spec is None:
        main = default_device()
        if main.type == "cuda":
            return main, [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        return main, [main]
    if isinstance(spec, (list, tuple)):
        if len(spec) == 0:
            raise ValueError(f"`{name}` must not be an empty list. Received: {name}={spec!r}")
        targets = [_parse(d, name) for d in spec]
        if len({d.type for d in targets}) > 1:
            raise ValueError(f"All `{name}` must be of one type (all CUDA, or one CPU/MPS). Received: {name}={targets}")
        return targets[0], targets
    main = _parse(spec, name)
    return main, [main]


def use_data_parallel(targets: Sequence[torch.device], use_multi_gpus: bool) -> bool:
    """Whether to wrap the model in DataParallel: asked for and several CUDA devices at hand.

    Asked for without them, logs once per process that the single device is used.
    """
    if not use_multi_gpus:
        return False
    cuda = [d for d in targets if d.type == "cuda"]
    if len(cuda) >= 2:
        _say_once(
            f"DataParallel over {len(cuda)} GPUs in one process; `torchrun --nproc_per_node={len(cuda)} script.py` "
            "(one process per GPU, DistributedDataParallel) is faster and needs no change to the script."
        )
        return True
    message = (
        f"`use_multi_gpus=True` needs several CUDA devices; found {len(cuda)}, so training runs on "
        f"{targets[0] if targets else CPU} alone. For multi-GPU or multi-node runs, launch with torchrun."
    )
    _say_once(message)
    return False


def _say_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        _logger.warning(message)


def data_parallel(
    raw_model: torch.nn.Module,
    /,
    devices: Sequence[torch.device] | None = None,
    *,
    output_device: torch.device | None = None,
    parallel_type: type[torch.nn.DataParallel[Any]] = torch.nn.DataParallel,
) -> tuple[torch.nn.Module, bool]:
    """Wrap `raw_model` in `parallel_type` over the CUDA `devices` (upstream's signature and return value).

    Args:
        raw_model: The model, already on the first device; returned as it is if already wrapped.
        devices: The CUDA devices; default every visible one.
        output_device: Where outputs are gathered; default the first device.
        parallel_type: `torch.nn.DataParallel` or a subclass.
    Returns:
        The wrapped model and True, or, without CUDA, `raw_model` and False (said once in the log).
    """
    if isinstance(raw_model, parallel_type):
        return raw_model, True
    if not torch.cuda.is_available():
        _say_once("`data_parallel` needs CUDA, which is not available here, so the model is left unwrapped.")
        return raw_model, False
    targets = (
        list(devices) if devices is not None else [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    )
    ids = [d.index if d.index is not None else i for i, d in enumerate(targets)]
    output = ids[0] if output_device is None else output_device
    return parallel_type(raw_model, device_ids=ids, output_device=output), True


def search(
    specified: DeviceLike | Sequence[DeviceLike] | None = None,
) -> tuple[torch.device, torch.device, list[torch.device]]:
    """Upstream's device search: the CPU, the main device and all target devices (see `select`)."""
    main, targets = select(specified)
    return CPU, main, targets


def set_default(device: torch.device) -> None:
    """Make an indexed CUDA device the current one; other devices need nothing."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def move_to_device(target: T, /, device: torch.device, recursive: bool = True) -> T:
    """Move the tensors in `target` (nested in dicts, lists, tuples) to `device`, non-blocking.

    Tensors already there are returned as they are: the CPU path copies nothing. Other objects
    with `.to(device)` (upstream's `DeviceMovable`, such as a batch class) are moved with it.
    With `recursive=False` only the top level of a container is moved (upstream's flag; it is not
    keyword-only here, since a keyword-only default costs every call of this per-batch function).
    """
    if isinstance(target, torch.Tensor):
        return target if target.device == device else target.to(device, non_blocking=True)  # type: ignore[return-value]
    move = move_to_device if recursive else _move_unless_container
    if isinstance(target, Mapping):
        return type(target)({k: move(v, device) for k, v in target.items()})  # type: ignore[call-arg]
    if isinstance(target, tuple) and hasattr(target, "_fields"):
        return type(target)(*(move(v, device) for v in target))
    if isinstance(target, (list, tuple)):
        return type(target)(move(v, device) for v in target)
    if not isinstance(target, type) and callable(getattr(target, "to", None)):  # `DeviceMovable`, cheaply
        return target.to(device)  # type: ignore[attr-defined, no-any-return]
    return target


def _move_unless_container(item: Any, device: torch.device) -> Any:
    """An item of the top level, for `recursive=False`: containers in it stay where they are."""
    return item if isinstance(item, (Mapping, list, tuple)) else move_to_device(item, device)


def move_optimizer_state(optimizer: torch.optim.Optimizer | None, device: torch.device) -> None:
    """Move an optimizer's state tensors (momentum buffers...) next to the parameters on `device`."""
    if optimizer is None:
        return
    for state in optimizer.state.values():
        for key, value in state.items():
            # Adam's `step` counters stay on the CPU unless the optimizer is capturable/fused
            if isinstance(value, torch.Tensor) and value.device != device and not (key == "step" and value.dim() == 0):
                state[key] = value.to(device, non_blocking=True)


def empty_cache() -> None:
    """Release cached CUDA memory after a run (a no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
