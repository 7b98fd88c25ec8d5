"""State dicts under the plain module's keys, whatever wraps the model or its submodules.

Who owns what: `base.unwrap` sees through wrappers at the model's top; this module drops the
wrappers' own key segments anywhere inside it (`block._orig_mod.weight` of a submodule the user
compiled, `encoder.module.weight` of one wrapped in DataParallel or DDP), so that a checkpoint of a
wrapped model loads into the plain one and back. Checkpoints (`checkpointing`) and the strategies'
state dicts use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .base import inner_name

__all__ = [
    "load_plain_gradients",
    "load_plain_state_dict",
    "plain_gradients",
    "plain_keys",
    "plain_state_dict",
    "state_mismatch",
]


def plain_keys(model: torch.nn.Module) -> dict[str, str]:
    """Each key of `model.state_dict()` mapped to the plain module's key (the same key when nothing wraps)."""
    return {key: _plain(model, key) for key in model.state_dict(keep_vars=True)}


def _plain(model: torch.nn.Module, key: str) -> str:
    module: torch.nn.Module | None = model
    kept = []
    for part in key.split("."):
        inner = inner_name(module) if module is not None else None
        if inner is not None and part == inner:
            module = getattr(module, inner)
            continue
        kept.append(part)
        module = module._modules.get(part) if module is not None else None
    return ".".join(kept)


def plain_state_dict(model: torch.nn.Module) -> dict[str, Any]:
    """`model.state_dict()` under the plain module's keys (tensors shared with the model, as `state_dict` gives)."""
    state = model.state_dict()
    names = plain_keys(model)
    return {names.get(key, key): value for key, value in state.items()}


def load_plain_state_dict(model: torch.nn.Module, state: Mapping[str, Any], *, strict: bool = True) -> Any:
    """Load a state dict under the plain module's keys (or under `model`'s own) into `model`, wrapped or not.

    Returns:
        `load_state_dict`'s result (missing and unexpected keys, in `model`'s own keys).
    Raises:
        RuntimeError: As `load_state_dict` with `strict`, for keys or shapes that do not fit.
    """
    names = plain_keys(model)
    wrapped = {plain: key for key, plain in names.items()}
    return model.load_state_dict({wrapped.get(key, key): value for key, value in state.items()}, strict=strict)


def plain_gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters' gradients (copies) under the plain module's keys; parameters without one are left out."""
    names = plain_keys(model)
    return {
        names.get(name, name): parameter.grad.detach().clone()
        for name, parameter in model.named_parameters()
        if parameter.grad is not None
    }


def load_plain_gradients(model: torch.nn.Module, gradients: Mapping[str, torch.Tensor]) -> None:
    """Give `model`'s parameters the gradients `plain_gradients` took (each on its parameter's device and dtype)."""
    names = plain_keys(model)
    for name, parameter in model.named_parameters():
        saved = gradients.get(names.get(name, name))
        if saved is not None:
            parameter.grad = saved.to(parameter.device, parameter.dtype).clone()


def state_mismatch(current: Mapping[str, Any], saved: Mapping[str, Any]) -> str:
    """What differs between two model state dicts (missing and unexpected keys, shapes), or ''."""
    problems = []
    missing, unexpected = sorted(current.keys() - saved.keys()), sorted(saved.keys() - current.keys())
    if missing:
        problems.append(f"missing key(s) {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected key(s) {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    for key in sorted(current.keys() & saved.keys()):
        mine, theirs = current[key], saved[key]
        if isinstance(mine, torch.Tensor) and isinstance(theirs, torch.Tensor) and mine.shape != theirs.shape:
            problems.append(
                f"size mismatch for {key}: {tuple(theirs.shape)} in the checkpoint, {tuple(mine.shape)} in the model"
            )
    return "; ".join(problems)
