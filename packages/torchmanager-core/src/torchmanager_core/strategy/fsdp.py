"""FSDP2 (`torch.distributed.fsdp.fully_shard`): each process holds a shard of the model, for models larger than one device.

Who owns what: this strategy shards the model (the units a policy names, then the root), allocates a
model built on the meta device (`meta_init` initialises its shards), maps a precision name to a `MixedPrecisionPolicy`,
turns gradient reduction off inside an accumulation window, clips over DTensors and gives the state
dicts a sharded checkpoint (`checkpoint.sharded`) writes. Evaluation runs on the sharded model, every
process in step (`strategy.lockstep`). The loop never names FSDP: it calls the `Strategy` interface.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from .. import distributed
from . import is_fully_sharded  # one definition, which imports neither FSDP2 nor this module
from .base import OptimizerLike, Strategy, unwrap
from .meta_init import initialise_shards

__all__ = ["PRECISIONS", "FSDP2Strategy", "UnitPolicy", "is_fully_sharded"]

UnitPolicy: TypeAlias = Sequence[type[torch.nn.Module]] | Callable[[torch.nn.Module], bool] | None
"""Which submodules become FSDP units: module classes (a transformer's block), a predicate, or None (the root only)."""

PRECISIONS: dict[str, str] = {
    "32": "32",
    "32-true": "32",
    "bf16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "bf16-true": "bf16-true",
    "16": "16-mixed",
    "16-mixed": "16-mixed",
}
"""Accepted precision names (Lightning's spellings too) and the mode each means under FSDP2."""


_SHARDED_WITH = "_torchmanager_sharded_with"
"""The attribute naming the precision a model was sharded with by this strategy."""


class FSDP2Strategy(Strategy):
    """Shard the model over every process with FSDP2; evaluate it in lockstep; checkpoint it as shards.

    Args:
        units: The submodules sharded as units of their own, before the root (their parameters are
            gathered one unit at a time): module classes, a predicate, or None for the root alone.
        reshard_after_forward: Free each unit's gathered parameters after its forward (less memory,
            a second gather in backward); an int reshards to that many processes. The root follows
            FSDP's default (kept until backward).
        precision: The run's precision name (see `PRECISIONS`; `mixed_precision` says what each means).
        init_weights: For a model built on the meta device: called on each submodule (children
            first, as `model.apply` does) with its own parameters and buffers materialised whole;
            default `module.reset_parameters()`. It must touch only the module's own tensors.
        mesh: The device mesh to shard over (default: every process, on the run's device type).
    Raises:
        TypeError: `units` is neither None, module classes nor a callable.
        ValueError: An unknown `precision`.
    """

    sharded = True
    lockstep_evaluation = True
    applies_precision = True

    def __init__(
        self,
        units: UnitPolicy = None,
        *,
        reshard_after_forward: bool | int = True,
        precision: str = "32",
        init_weights: Callable[[torch.nn.Module], None] | None = None,
        mesh: DeviceMesh | None = None,
    ) -> None:
        super().__init__()
        self.units = _check_units(units)
        self.reshard_after_forward = reshard_after_forward
        self.precision = precision
        self.init_weights = init_weights
        self.mesh = mesh
        self._names: dict[int, str] = {}  # id of each parameter before sharding -> its name

    @property
    def precision(self) -> str:
        """The run's precision name, normalised (set it before `setup`)."""
        return self._precision

    @precision.setter
    def precision(self, precision: str) -> None:
        self.mixed_precision(precision)
        self._precision = PRECISIONS[precision]

    def use_precision(self, precision: str) -> None:
        """Take the manager's `precision=` (its name decides the policy; see `mixed_precision`)."""
        self.precision = precision

    def mixed_precision(self, precision: str) -> MixedPrecisionPolicy:
        """The `MixedPrecisionPolicy` FSDP2 applies for `precision`.

        "32": none. "bf16-mixed": parameters gathered and computed in bfloat16, float32 shards and
        gradient reduction (`setup` has the root give its output in float32, for the loss, as autocast does). "bf16-true": parameters stored in bfloat16 (`setup` casts the model),
        gradients reduced in float32. "16-mixed": as bf16-mixed with float16; the precision's
        `torch.amp.GradScaler` works as it is (DTensor's unscale agrees over every process on a skip).

        Raises:
            ValueError: An unknown name.
        """
        mode = PRECISIONS.get(precision) if isinstance(precision, str) else None
        if mode is None:
            raise ValueError(
                f"`precision` must be one of {sorted(PRECISIONS)} with FSDP2: '32', 'bf16-mixed' (bfloat16 compute, "
                f"float32 weights), 'bf16-true' (bfloat16 weights) or '16-mixed' (float16 compute with gradient "
                f"scaling). Received: precision={precision!r}"
            )
        if mode == "bf16-mixed":
            return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mode == "16-mixed":
            return MixedPrecisionPolicy(param_dtype=torch.float16, reduce_dtype=torch.float32)
        if mode == "bf16-true":
            return MixedPrecisionPolicy(reduce_dtype=torch.float32)
        return MixedPrecisionPolicy()

    def setup(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """Shard `model` over every process on `device` and return it (sharded in place).

        A model the user sharded with `fully_shard` is used as it is. A model on the meta device is
        sharded there, then each process allocates its shards on `device` and initialises them
        (`init_weights`) so that the whole model equals what one process would initialise from rank
        0's random state. Otherwise every process takes rank 0's weights (as DDP does) before sharding.

        Raises:
            RuntimeError: No process group can be started (the script was not launched by torchrun).
            ValueError: The model is partly on the meta device, sharded below its root only, sharded
                by the user with a precision other than "32", bfloat16 is asked for on a device
                without it, or the policy names classes the model does not contain.
        """
        if not distributed.init_from_environment():
            raise RuntimeError(
                "FSDP2 shards the model over the processes torchrun starts, and this process is not one of them; "
                "launch the script with `torchrun --nproc_per_node=N script.py` (N=1 works). "
                f"Received: strategy={type(self).__name__}"
            )
        self.device = device
        model = unwrap(model)
        if is_fully_sharded(model):
            self._check_user_sharded(model, device)
            return model
        _check_not_partly_sharded(model)
        self._check_device_precision(device)
        self._names = {id(parameter): name for name, parameter in model.named_parameters(remove_duplicate=False)}
        on_meta = _meta_state(model)
        if self.precision == "bf16-true":
            model.to(torch.bfloat16)
        if not on_meta:
            model.to(device)
            _take_rank0_weights(model)
        self._shard(model, device)
        setattr(model, _SHARDED_WITH, self.precision)  # a later run (a `test` after `fit`) takes it as it is
        if on_meta:
            model.to_empty(device=device)
            initialise_shards(model, device, self.init_weights)
        return model

    def _check_user_sharded(self, model: torch.nn.Module, device: torch.device) -> None:
        sharded_with = getattr(model, _SHARDED_WITH, None)  # sharded by an earlier run: its policy is the precision's
        if self.precision != "32" and sharded_with != self.precision:
            raise ValueError(
                "The model was sharded with `fully_shard` before it was given, so its mixed precision is the "
                "`mp_policy` given to `fully_shard`; pass precision='32' (or give the model unsharded). "
                f"Received: precision={self.precision!r}"
            )
        wrong = next((p for p in model.parameters() if p.device.type != device.type), None)
        if wrong is not None:
            raise ValueError(
                f"The model sharded with `fully_shard` is on {wrong.device.type} and the run on {device}; shard it "
                f"over a mesh of the run's device type. Received: device={device}"
            )

    def _check_device_precision(self, device: torch.device) -> None:
        if self.precision.startswith("bf16") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"`precision` {self.precision!r} needs bfloat16, which {torch.cuda.get_device_name(device)} does not "
                f"support; use '16-mixed' or '32'. Received: precision={self.precision!r}, device={device}"
            )

    def _shard(self, model: torch.nn.Module, device: torch.device) -> None:
        """`fully_shard` each unit (deepest first), then the root."""
        mesh = self.mesh or init_device_mesh(device.type, (dist.get_world_size(),))
        policy = self.mixed_precision(self.precision)
        units = [module for module in model.modules() if module is not model and self._is_unit(module)]
        if isinstance(self.units, tuple) and self.units and not units:
            names = ", ".join(unit.__name__ for unit in self.units)
            raise ValueError(
                f"The sharding policy names module classes the model does not contain ({names}); name classes of "
                f"its submodules (e.g. a transformer block). Received: units=({names})"
            )
        for module in reversed(units):  # every descendant before its ancestors
            fully_shard(module, mesh=mesh, reshard_after_forward=self.reshard_after_forward, mp_policy=policy)
        if policy.param_dtype is not None:  # the model's output in float32, as autocast gives it to the loss
            policy = dataclasses.replace(policy, output_dtype=torch.float32)
        fully_shard(model, mesh=mesh, mp_policy=policy)

    def _is_unit(self, module: torch.nn.Module) -> bool:
        if self.units is None:
            return False
        if isinstance(self.units, tuple):
            return isinstance(module, self.units)
        return bool(self.units(module))

    def teardown(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model stays sharded (FSDP2 shards in place): later runs use it as it is."""
        return unwrap(model)

    def gradient_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager[None]:
        """Inside an accumulation window (`sync=False`) the backward keeps whole gradients on each process, unreduced."""
        if sync:
            return contextlib.nullcontext()
        return _without_gradient_sync(unwrap(model))

    def clip_grad_norm(self, parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """Clip the gradients' total L2 norm over every shard to `max_norm`; the norm, a plain tensor on the device.

        One collective (the norm's sum over the shards); no host sync.
        """
        norm = torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)
        return norm.full_tensor() if isinstance(norm, DTensor) else norm

    def model_state_dict(self, model: torch.nn.Module) -> dict[str, Any]:
        """This process's shards (DTensors) under the plain module's keys."""
        return get_model_state_dict(unwrap(model))

    def load_model_state_dict(self, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
        set_model_state_dict(unwrap(model), dict(state))

    def optimizer_state_dict(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, stepped: bool | None = None
    ) -> dict[str, Any]:
        """This process's shards of the optimizer's state, keyed by parameter names (not indices).

        An optimizer that has no state yet (it never stepped, or keeps none: plain SGD) gives its
        hyperparameters alone: DCP would lay its state out with a step of its own (at learning rate 0,
        which would count as an update, and give Adam one step more). `stepped=True` asks for the
        layout of a stepped optimizer's state (to load one into it: made without counting a step).
        """
        if not (optimizer.state if stepped is None else stepped):
            return {
                "param_groups": [
                    {key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups
                ]
            }
        with _uncounted(optimizer):
            return get_optimizer_state_dict(unwrap(model), optimizer)

    def load_optimizer_state_dict(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]
    ) -> None:
        if "state" not in state:  # hyperparameters alone (see `optimizer_state_dict`)
            for group, saved in zip(optimizer.param_groups, state["param_groups"]):
                group.update((key, value) for key, value in saved.items() if key != "params")
            return
        with _uncounted(optimizer):
            set_optimizer_state_dict(unwrap(model), optimizer, dict(state))

    def prepare_optimizer(self, model: torch.nn.Module, optimizer: OptimizerLike) -> torch.optim.Optimizer:
        """The optimizer over the sharded parameters.

        A factory is called with the sharded parameters. An optimizer built over them (after the
        user's `fully_shard`) is used as it is. An optimizer built over the model before `setup`
        sharded it, and never stepped, is pointed at the sharded parameters (by name); one that has
        state cannot be (its state is not sharded) and is refused.

        Raises:
            ValueError: An optimizer with parameters that are not the model's, or with state over
                parameters that sharding replaced.
        """
        sharded_model = unwrap(model)
        if isinstance(sharded_model, FSDPModule):
            sharded_model.reshard()  # the root keeps its gathered weights registered after a forward
        built = super().prepare_optimizer(model, optimizer)
        current = {id(parameter) for parameter in model.parameters()}
        stale = [p for group in built.param_groups for p in group["params"] if id(p) not in current]
        if not stale:
            return built
        unknown = [p for p in stale if id(p) not in self._names]
        if unknown or built.state:
            reason = "parameters that are not the model's" if unknown else "state over the parameters sharding replaced"
            raise ValueError(
                f"The optimizer holds {reason}: `fully_shard` replaces each parameter by its shard. Build the "
                "optimizer after sharding, or give a factory such as `lambda params: torch.optim.AdamW(params, "
                f"lr=1e-3)`. Received: optimizer={type(built).__name__} with {len(stale)} such parameter(s)"
            )
        sharded = dict(sharded_model.named_parameters(remove_duplicate=False))
        for group in built.param_groups:
            group["params"] = [sharded[self._names[id(p)]] if id(p) not in current else p for p in group["params"]]
        return built


def _check_units(units: UnitPolicy) -> tuple[type[torch.nn.Module], ...] | Callable[[torch.nn.Module], bool] | None:
    if units is None:
        return None
    if isinstance(units, type):
        units = (units,)
    if isinstance(units, Sequence):
        classes = tuple(units)
        if all(isinstance(unit, type) and issubclass(unit, torch.nn.Module) for unit in classes):
            return classes
    elif callable(units):
        return units
    raise TypeError(
        "`units` must be torch.nn.Module classes (e.g. the model's block class), a function of a module returning "
        f"whether it is a unit, or None for the root alone. Received: units={units!r}"
    )


def _check_not_partly_sharded(model: torch.nn.Module) -> None:
    sharded = [name for name, module in model.named_modules() if isinstance(module, FSDPModule)]
    if sharded:
        raise ValueError(
            "Submodules of the model were sharded with `fully_shard` but not its root, so the root's parameters "
            "would not be reduced over the processes; call `fully_shard(model)` too, or give the model unsharded. "
            f"Received: sharded submodules {sharded[:3]}"
        )


def _meta_state(model: torch.nn.Module) -> bool:
    """Whether the model's parameters and buffers are all on the meta device (none: False)."""
    tensors = [*model.parameters(), *model.buffers()]
    meta = [tensor.is_meta for tensor in tensors]
    if any(meta) and not all(meta):
        raise ValueError(
            "The model is partly on the meta device; build it wholly under `torch.device('meta')` (every process "
            "then initialises its shards), or load every weight first. "
            f"Received: {sum(meta)} of {len(meta)} parameters and buffers on meta"
        )
    return bool(meta) and all(meta)


def _take_rank0_weights(model: torch.nn.Module) -> None:
    """Every process gets rank 0's parameters and buffers, as DDP does when it wraps a model."""
    distributed.broadcast_tensors([*model.parameters(), *model.buffers()])


@contextlib.contextmanager
def _uncounted(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """No step hook of `optimizer` sees the steps in the body (DCP's own step laying out the optimizer's state)."""
    hooks: dict[Any, Any] = getattr(optimizer, "_optimizer_step_post_hooks", {})
    kept = dict(hooks)
    hooks.clear()
    try:
        yield
    finally:
        hooks.update(kept)


@contextlib.contextmanager
def _without_gradient_sync(model: torch.nn.Module) -> Iterator[None]:
    if not isinstance(model, FSDPModule):
        yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
