"""`model_summary`: Keras's `model.summary()` table, checked against counts and shapes worked out by hand
(or by calling the submodules one by one), and a model left exactly as it was by the forward pass."""

from __future__ import annotations

import re

import pytest
import torch

from torchmanager_core.model_summary import model_summary


class Net(torch.nn.Module):
    """A conv block, a head, a parameter of its own, and a dict output."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5), torch.nn.Flatten()
        )
        self.head = torch.nn.Linear(144, 10)
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(x)
        return {"logits": self.head(features) * self.scale, "features": features}


def rows(table: str) -> dict[str, list[str]]:
    """Each row's name -> its cells (split on runs of 2+ spaces)."""
    found = {}
    for line in table.splitlines()[2:-1]:
        cells = re.split(r"\s{2,}", line.strip())
        found[cells[0].split(" (")[0]] = cells
    return found


def test_counts_and_parameter_shapes_are_the_hand_computed_ones() -> None:
    net = Net()
    net.encoder[0].weight.requires_grad_(False)
    table = model_summary(net)
    # by hand: conv 4*1*3*3 + 4 = 40, batch norm 4 + 4 = 8, head 144*10 + 10 = 1450, scale 1
    found = rows(table)
    assert found["encoder.0"][-2:] == ["weight [4, 1, 3, 3], bias [4]", "40"]
    assert found["encoder.1"][-1] == "8" and found["encoder"][-1] == "48" and found["head"][-1] == "1,450"
    assert found["encoder.2"][-1] == "0"  # dropout: no parameter
    assert found["(model)"][-2:] == ["scale [1]", "1,499"]
    # frozen: the conv weight, 36 values; size: 1,499 float32 values of 4 bytes = 5,996 B = 5.9 KB
    assert table.splitlines()[-1] == "Total: 1,499 parameters (5.9 KB): 1,463 trainable, 36 frozen"
    assert table.splitlines()[0] == "Model: Net"


def test_a_shared_parameter_is_counted_once() -> None:
    embedding = torch.nn.Embedding(5, 3)
    decoder = torch.nn.Linear(3, 5, bias=False)
    decoder.weight = embedding.weight  # tied weights
    model = torch.nn.Sequential(embedding, decoder)
    assert model_summary(model).splitlines()[-1] == "Total: 15 parameters (60 B): 15 trainable, 0 frozen"


def test_output_shapes_come_from_one_forward_pass_that_leaves_the_model_as_it_was() -> None:
    net = Net()
    net.encoder.train()
    net.head.eval()
    x = torch.randn(2, 1, 8, 8)
    before = {name: value.clone() for name, value in net.state_dict().items()}
    torch.manual_seed(7)
    table = model_summary(net, x)
    after_summary = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after_summary, torch.rand(3))  # the random state is as it was: no dropout draw taken
    assert all(torch.equal(before[name], value) for name, value in net.state_dict().items())  # BN stats kept
    assert net.encoder.training and not net.head.training and net.training  # each module's mode kept
    assert all(p.grad is None for p in net.parameters())
    # the reference: the submodules called one by one on the same input
    conv = net.encoder[0](x)
    found = rows(table)
    assert found["encoder.0"][1] == str(list(conv.shape)) == "[2, 4, 6, 6]"
    assert found["encoder"][1] == str(list(net.encoder(x).shape)) == "[2, 144]"
    assert found["head"][1] == "[2, 10]"
    assert found["(model)"][1] == "{logits: [2, 10], features: [2, 144]}"


def test_depth_limits_the_rows_but_not_the_counts() -> None:
    table = model_summary(Net(), depth=1)
    assert set(rows(table)) == {"(model)", "encoder", "head"}
    assert table.splitlines()[-1].startswith("Total: 1,499 parameters")
    with pytest.raises(ValueError, match=r"`depth` must be a positive int or None \(every module\). Received: depth=0"):
        model_summary(Net(), depth=0)
