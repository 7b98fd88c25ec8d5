"""Upstream torchmanager 1.5's module path `torchmanager_core.random.random`."""

from . import rand, rand_like, randbool, randbool_like, randint, randint_like, randn, randn_like, randperm

__all__ = [
    "rand",
    "rand_like",
    "randbool",
    "randbool_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "randperm",
]
