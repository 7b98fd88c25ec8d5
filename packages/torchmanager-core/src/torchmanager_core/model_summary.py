"""A model's table, as Keras's `model.summary()`: its modules, their output and parameter shapes, their counts.

`model_summary(model)` needs no data; given an example input it also runs one forward pass (no
gradients, every module in eval mode, random state kept) to read each module's output shape, and
leaves the model as it was. A run's log holds the table from `fit`'s start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["model_summary"]

_HEADER = ("Module (type)", "Output shape", "Own parameters", "Parameters")


def model_summary(model: torch.nn.Module, example_input: Any = None, *, depth: int | None = None) -> str:
    """The table of `model`: a row per module (its name indented by depth, its class, its output shape,
    its own parameters' shapes, and the parameters it holds with its children), then the totals.

    Args:
        model: Any module; the row of a module used twice is its first call's.
        example_input: A batch the model takes (a tensor, or a tuple of its positional arguments):
            when given, one forward pass reads each module's output shape (from the first call).
        depth: Show modules nested at most this deep (1: the model's children); None: all.
    Returns:
        The table, one line a row; totals count a parameter shared by modules once.
    Raises:
        ValueError: `depth` is not a positive int.
    """
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"`depth` must be a positive int or None (every module). Received: depth={depth!r}")
    outputs = _output_shapes(model, example_input) if example_input is not None else {}
    rows = [_HEADER]
    for name, module in model.named_modules():
        level = name.count(".") + 1 if name else 0
        own = [f"{n} {list(p.shape)}" for n, p in module.named_parameters(recurse=False)]
        if level == 0 and not own and name not in outputs:
            continue  # the model itself: its row would repeat the totals
        if depth is not None and level > depth:
            continue
        label = "  " * max(level - 1, 0) + f"{name or '(model)'} ({type(module).__name__})"
        count = sum(p.numel() for p in _unique(module.parameters()))
        rows.append((label, outputs.get(name, ""), ", ".join(own), f"{count:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = [f"Model: {type(model).__name__}"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, row[-1].rjust(widths[-1])]).rstrip())
    parameters = list(_unique(model.parameters()))
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    size = sum(p.numel() * p.element_size() for p in parameters)
    lines.append(f"Total: {total:,} parameters ({_bytes(size)}): {trainable:,} trainable, {total - trainable:,} frozen")
    return "\n".join(lines)


def _unique(parameters: Any) -> Any:
    seen: set[int] = set()
    for parameter in parameters:
        if id(parameter) not in seen:
            seen.add(id(parameter))
            yield parameter


def _bytes(size: int) -> str:
    """`780 B`, `37.5 KB`, `1.2 MB`, `3.4 GB` (units of 1024)."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _shape(value: Any) -> str:
    """`[2, 3]` for a tensor; the shapes of a tuple, list or dict of them; the type's name otherwise."""
    if isinstance(value, torch.Tensor):
        return str(list(value.shape))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {_shape(item)}" for key, item in value.items()) + "}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "(" + ", ".join(_shape(item) for item in value) + ")"
    return type(value).__name__


def _output_shapes(model: torch.nn.Module, example_input: Any) -> dict[str, str]:
    """Each module's output shape in one forward pass of `example_input`; the model is left as it was."""
    shapes: dict[str, str] = {}
    modes = {module: module.training for module in model.modules()}

    def recorder(name: str) -> Any:
        def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            shapes.setdefault(name, _shape(output))

        return record

    hooks = [module.register_forward_hook(recorder(name)) for name, module in model.named_modules()]
    devices = list({p.device for p in model.parameters() if p.device.type == "cuda"})  # their generators kept too
    arguments = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.eval()
            model(*arguments)
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.train(training)
    return shapes
