"""LPIPS against a hand-written computation of the paper's eq. 1 on a small AlexNet-shaped network."""

from __future__ import annotations

import pytest
import torch

from torchmanager_metrics import LPIPS, LPIPSNetType


def alexnet_shaped() -> torch.nn.Sequential:
    """AlexNet's `features` layout (13 layers: conv/relu pairs and pools at the same indices), small channels."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d
    return torch.nn.Sequential(
        conv(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        conv(4, 5, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        conv(5, 6, 3, padding=1),
        torch.nn.ReLU(),
        conv(6, 6, 3, padding=1),
        torch.nn.ReLU(),
        conv(6, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
    )


def reference(net: torch.nn.Sequential, fake: torch.Tensor, real: torch.Tensor, weights: list[torch.Tensor]) -> float:
    """Eq. 1 written out: per sample, per layer (after relu1..relu5), unit channel vectors, weighted squared difference."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps = [1, 4, 7, 9, 11]  # the ReLU after each of AlexNet's five convolutions
    total = 0.0
    for n in range(fake.shape[0]):
        a, b = (fake[n : n + 1] - shift) / scale, (real[n : n + 1] - shift) / scale
        layer = 0
        for index in range(12):
            a, b = net[index](a), net[index](b)
            if index in taps:
                # the LPIPS code's `normalize_tensor`: x / (||x|| + 1e-10), so an all-zero position stays zero
                unit_a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                unit_b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                weighted = (weights[layer].view(1, -1, 1, 1) * (unit_a - unit_b) ** 2).sum(1)
                total += float(weighted.mean())
                layer += 1
    return total / fake.shape[0]


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def test_lpips_is_eq_1_of_the_paper_with_unit_weights() -> None:
    net = alexnet_shaped()
    fake, real = images(3, 1), images(3, 2)
    metric = LPIPS(net, LPIPSNetType.ALEX)
    value = metric(fake, real)
    expected = reference(net, fake, real, [torch.ones(c) for c in (4, 5, 6, 6, 4)])
    assert float(value) == pytest.approx(expected, rel=1e-5) and float(metric.result) == pytest.approx(
        expected, rel=1e-5
    )
    assert float(LPIPS(net, LPIPSNetType.ALEX)(real, real)) == pytest.approx(0.0, abs=1e-6)


@torch.no_grad()
def test_learned_layers_weight_the_channels() -> None:
    net = alexnet_shaped()
    weights = [torch.rand(c, generator=torch.Generator().manual_seed(c)) for c in (4, 5, 6, 6, 4)]
    lins = torch.nn.ModuleList(torch.nn.Conv2d(len(w), 1, 1, bias=False) for w in weights)
    for lin, w in zip(lins, weights):
        lin.weight.copy_(w.view(1, -1, 1, 1))
    fake, real = images(2, 3), images(2, 4)
    expected = reference(net, fake, real, weights)
    assert float(LPIPS(net, LPIPSNetType.ALEX, lins)(fake, real)) == pytest.approx(expected, rel=1e-5)


@torch.no_grad()
def test_result_is_the_mean_over_samples_of_uneven_batches() -> None:
    net = alexnet_shaped()
    fake, real = images(5, 5), images(5, 6)
    metric = LPIPS(net, LPIPSNetType.ALEX)
    metric(fake[:2], real[:2])
    metric(fake[2:], real[2:])
    per_sample = [
        reference(net, fake[i : i + 1], real[i : i + 1], [torch.ones(c) for c in (4, 5, 6, 6, 4)]) for i in range(5)
    ]
    assert float(metric.result) == pytest.approx(sum(per_sample) / 5, rel=1e-5)


def test_the_network_is_frozen_and_stays_in_eval_mode() -> None:
    metric = LPIPS(alexnet_shaped(), LPIPSNetType.ALEX)
    metric.train()
    assert metric.feature_extractor is not None and not metric.feature_extractor.training
    assert not any(p.requires_grad for p in metric.parameters())


def test_slices_keep_the_network_layer_names_of_each_network() -> None:
    layers = torch.nn.Sequential(*(torch.nn.Identity() for _ in range(30)))
    for net_type, ends in ((LPIPSNetType.VGG16, (4, 9, 16, 23, 30)), (LPIPSNetType.SQUEEZE, (2, 5, 8, 10, 11, 12, 13))):
        slices = net_type.load(layers)
        starts = (0, *ends[:-1])
        assert [list(dict(s.named_children())) for s in slices] == [
            [str(i) for i in range(a, b)] for a, b in zip(starts, ends)
        ]


def test_feature_maps_can_be_given_directly() -> None:
    fake, real = [torch.ones(2, 3, 4, 4), torch.ones(2, 2)], [torch.ones(2, 3, 4, 4), -torch.ones(2, 2)]
    # layer 1 identical (0); layer 2: unit vectors (1,1)/sqrt2 and -(1,1)/sqrt2 differ by 4 in squared norm
    assert float(LPIPS()(fake, real)) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: LPIPS(alexnet_shaped()), TypeError, r"`feature_extractor` and `net_type` go together"),
        (lambda: LPIPS(net_type=LPIPSNetType.ALEX), TypeError, r"Received: feature_extractor=NoneType"),
        (lambda: LPIPS(alexnet_shaped()[:8], LPIPSNetType.ALEX), ValueError, r"at least 12 layers.*Received: 8 layers"),
        (lambda: LPIPS()([torch.ones(1, 2)], []), ValueError, r"Received: 1 input and 0 target feature maps"),
    ],
)
def test_misuse_is_refused(make: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()  # type: ignore[operator]
