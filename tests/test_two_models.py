"""Two models, two optimizers (a GAN; issue 23 point 10): `Manager(ModuleDict(gen=..., disc=...),
{"gen": opt_g, "disc": opt_d})` with a `train_step` stepping each, as tests/scripts/gan_train.py does.

References: a hand-written loop of the same steps over the same batches and noise (one process); the
uninterrupted run for a run resumed from a mid-epoch checkpoint by a fresh manager; under torchrun,
the ranks' weights against each other (each draws its own noise and trains its own share, so only
synchronised gradients make them equal).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.test_torchrun import torchrun
from tests.workspace import ROOT

SCRIPT = ROOT / "tests" / "scripts" / "gan_train.py"
spec = importlib.util.spec_from_file_location("gan_train", SCRIPT)
assert spec is not None and spec.loader is not None
gan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gan)


def hand_run(world: int = 1) -> tuple[torch.nn.ModuleDict, dict[str, Any]]:
    torch.manual_seed(100)
    model = gan.models()
    opt_gen = torch.optim.Adam(model["gen"].parameters(), lr=2e-3, betas=(0.5, 0.9))
    opt_disc = torch.optim.SGD(model["disc"].parameters(), lr=5e-2, momentum=0.5)
    for _ in range(gan.EPOCHS):
        for x, _ in gan.data(world):
            fake = model["gen"](torch.randn(len(x), 2))
            logits = model["disc"](torch.cat([x, fake.detach()]))
            real = torch.cat([torch.ones(len(x), 1), torch.zeros(len(x), 1)])
            d_loss = F.binary_cross_entropy_with_logits(logits, real)
            opt_disc.zero_grad()
            d_loss.backward()
            opt_disc.step()
            g_loss = F.binary_cross_entropy_with_logits(model["disc"](fake), torch.ones(len(x), 1))
            opt_gen.zero_grad()
            g_loss.backward()
            opt_gen.step()
    return model, {"gen": opt_gen.state_dict(), "disc": opt_disc.state_dict()}


def assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_gan_trains_as_its_hand_loop_and_resumes_bit_identical(tmp_path: Path) -> None:
    gan.main(tmp_path)
    result = torch.load(tmp_path / "rank0.pt", weights_only=True)
    model, states = hand_run()
    assert_equal(result["model"], model.state_dict())
    saved = result["optimizer"]["optimizers"]
    assert saved.keys() == {"gen", "disc"}  # both optimizers' states, by name
    for name in ("gen", "disc"):
        for key, value in states[name]["state"].items():
            for field, tensor in value.items():
                assert torch.equal(torch.as_tensor(saved[name]["state"][key][field]), torch.as_tensor(tensor)), field
    assert result["global_step"] == gan.EPOCHS * gan.STEPS  # a step is one batch's round of updates
    last = result["history"][-1]
    assert {"d_loss", "g_loss", "lr_gen", "lr_disc"} <= set(last) and last["lr_gen"] == 2e-3
    assert_equal(result["resumed"], result["model"])  # the mid-epoch checkpoint held both optimizers
    assert result["resumed_history"] == result["history"]


@pytest.mark.slow
def test_a_gan_under_torchrun_keeps_both_models_in_step_on_every_rank(tmp_path: Path) -> None:
    done = torchrun(SCRIPT, str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert_equal(ranks[0]["model"], ranks[1]["model"])  # the gradients of both models were averaged
    assert not torch.equal(ranks[0]["model"]["gen.0.weight"], gan.models()["gen"][0].weight)  # it trained
    for result in ranks:
        assert result["global_step"] == gan.EPOCHS * gan.STEPS
        assert_equal(result["resumed"], result["model"])  # resumed bit-identical on every rank
