"""Upstream torchmanager 1.5's `torchmanager_core.typing`: every `typing` name, plus `Module` and `SizedIterable`.

Code written for upstream imports its annotations from here (`from torchmanager_core.typing import Any,
Module, Self`); our own modules import from `typing`. On Python 3.10, the names `typing` gained in 3.11
(`Self`, `Required`...) come from `typing_extensions`, which torch depends on.
"""

import sys
from enum import Enum as Enum
from typing import *  # noqa: F403

import torch

if sys.version_info < (3, 11):  # what `typing` gained in 3.11, from the backports
    from typing_extensions import (  # noqa: F401
        LiteralString,
        Never,
        NotRequired,
        Required,
        Self,
        TypeVarTuple,
        Unpack,
        assert_never,
        assert_type,
        clear_overloads,
        dataclass_transform,
        get_overloads,
        reveal_type,
    )

Module = TypeVar("Module", bound=torch.nn.Module)  # noqa: F405
"""The model type of a manager, as in `class MyManager(Manager[Module])`."""

SizedIterable = Collection  # noqa: F405
"""Upstream's name for a dataset that has a length and can be iterated."""
