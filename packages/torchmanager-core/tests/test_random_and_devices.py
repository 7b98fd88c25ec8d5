"""Random seeds (upstream's freeze/unfreeze, checkpointable states) and device selection."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from torchmanager_core import devices
from torchmanager_core.random import freeze_seed, get_rng_state, set_rng_state, unfreeze_seed


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_freeze_seed_repeats_every_generator() -> None:
    freeze_seed(7)
    first = draws()
    freeze_seed(7)
    assert draws() == first
    freeze_seed(8)
    assert draws() != first


def test_rng_state_round_trip_survives_a_weights_only_checkpoint(tmp_path) -> None:
    freeze_seed(3)
    draws()
    torch.save(get_rng_state(), tmp_path / "rng.pt")
    expected = draws()
    unfreeze_seed()
    draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


def test_deterministic_mode_is_undone_by_unfreeze() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    freeze_seed(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    unfreeze_seed()
    assert torch.are_deterministic_algorithms_enabled() == before


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (-1, ValueError, r"Received: seed=-1"),
        (2**32, ValueError, r"\[0, 2\*\*32\)"),
        ("1", TypeError, r"must be an int"),
    ],
)
def test_bad_seeds(seed: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        freeze_seed(seed)  # type: ignore[arg-type]


def test_select_devices() -> None:
    assert devices.select() == (torch.device("cpu"), [torch.device("cpu")])  # no GPU on this machine
    assert devices.select(devices="cpu") == (torch.device("cpu"), [torch.device("cpu")])
    assert devices.select(device=[torch.device("cpu")]) == (torch.device("cpu"), [torch.device("cpu")])
    with pytest.raises(ValueError, match=r"must not be an empty list"):
        devices.select(devices=[])
    with pytest.raises(TypeError, match=r"Received: device=1.5"):
        devices.select(device=1.5)  # type: ignore[arg-type]
    assert not devices.use_data_parallel([torch.device("cpu")], use_multi_gpus=True)


def test_batches_and_optimizer_state_move_without_copies_on_the_same_device() -> None:
    x = {"a": torch.ones(2), "b": [torch.zeros(1), 3]}
    moved = devices.move_to_device(x, torch.device("cpu"))
    assert moved["a"] is x["a"] and moved["b"][0] is x["b"][0] and moved["b"][1] == 3
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    devices.move_optimizer_state(optimizer, torch.device("meta"))
    state = optimizer.state[model.weight]
    assert state["exp_avg"].is_meta and not state["step"].is_meta  # Adam's step counter stays on the CPU
