"""Several optimizers as one (a GAN's generator and discriminator, a teacher and a student): `Optimizers`.

Who owns what: a manager given a dict of optimizers holds them as one `Optimizers`, a
`torch.optim.Optimizer` whose parameter groups are its members' own (a schedule changing a member's
learning rate is seen here too), whose `step`/`zero_grad` step and clear every member, and whose
`state_dict` holds every member's state by name, so a checkpoint keeps all of them. A step of the
user's reaches one member as `manager.optimizer["gen"]`. The loop counts one optimizer update per
batch (or accumulation window) in which any member stepped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["Optimizers"]


class Optimizers(torch.optim.Optimizer, Mapping[str, torch.optim.Optimizer]):
    """Named optimizers as one optimizer.

    Args:
        optimizers: The optimizers by name; each parameter belongs to one of them at most.
    Raises:
        TypeError: A member is not a `torch.optim.Optimizer`, or a name is not a str.
        ValueError: No optimizer, or a parameter in two of them.
    """

    def __init__(self, optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("`optimizer` as a dict needs at least one optimizer. Received: optimizer={}")
        for name, optimizer in optimizers.items():
            if not isinstance(name, str) or not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError(
                    "`optimizer` as a dict must map str names to torch.optim.Optimizer objects, e.g. "
                    "{'gen': Adam(gen.parameters()), 'disc': Adam(disc.parameters())}. "
                    f"Received: optimizer[{name!r}]={type(optimizer).__name__}"
                )
        self.members = dict(optimizers)
        groups = [
            {"params": list(group["params"])} for optimizer in self.members.values() for group in optimizer.param_groups
        ]
        super().__init__(groups, {})  # torch checks that no parameter is in two of them (the groups are read from
        self._ready = True  # the members from now on: a member's `load_state_dict` replaces its group dicts)

    # -- as a mapping of the members ------------------------------------------------------------

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        return self.members[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    __hash__ = object.__hash__  # an optimizer is itself, not equal to another mapping of the same members

    def __eq__(self, other: object) -> bool:
        return other is self

    # -- as one optimizer ---------------------------------------------------------------------------

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every member's parameter groups, as the member holds them now (changing one changes the member's)."""
        if not self.__dict__.get("_ready"):
            return self.__dict__.setdefault("_building", [])  # type: ignore[no-any-return]
        return [group for optimizer in self.members.values() for group in optimizer.param_groups]

    @param_groups.setter
    def param_groups(self, value: Any) -> None:
        pass  # `Optimizer.__init__` sets it; the members keep theirs

    @property  # type: ignore[override]
    def state(self) -> dict[Any, Any]:
        """Every member's state, by parameter."""
        return {key: value for optimizer in self.members.values() for key, value in optimizer.state.items()}

    @state.setter
    def state(self, value: Any) -> None:
        pass  # `Optimizer.__init__` sets it; the members keep theirs

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Step every member (a step of the user's usually steps one at a time: `optimizer["gen"].step()`)."""
        loss = None
        for optimizer in self.members.values():
            loss = optimizer.step(closure) if closure is not None else optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.members.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """Every member's state dict, by name (under "optimizers"; "param_groups" lists every group's size, as a
        torch optimizer's state dict does, so that a checkpoint check reads it alike)."""
        states = {name: optimizer.state_dict() for name, optimizer in self.members.items()}
        groups = [{"params": group["params"]} for state in states.values() for group in state["param_groups"]]
        return {"optimizers": states, "state": {}, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load `state_dict()`'s layout (each member its own).

        Raises:
            ValueError: The names differ from the members'.
        """
        states = dict(state_dict.get("optimizers", {}))
        if states.keys() != self.members.keys():
            raise ValueError(
                f"The saved optimizers are {sorted(states)} and these are {sorted(self.members)}; build the "
                f"same dict of optimizers. Received: optimizers {sorted(self.members)}"
            )
        for name, optimizer in self.members.items():
            optimizer.load_state_dict(states[name])

    def learning_rates(self) -> dict[str, float]:
        """Each member's learning rate, `lr_<name>` (`lr_<name>_<i>` for a member with several groups)."""
        rates: dict[str, float] = {}
        for name, optimizer in self.members.items():
            lrs = [float(group["lr"]) for group in optimizer.param_groups if "lr" in group]
            rates.update({f"lr_{name}": lrs[0]} if len(lrs) == 1 else {f"lr_{name}_{i}": r for i, r in enumerate(lrs)})
        return rates

    def __repr__(self) -> str:
        return f"Optimizers({', '.join(f'{name}={type(o).__name__}' for name, o in self.members.items())})"
