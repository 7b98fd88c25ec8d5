"""The `Metric` base: the sample-weighted running mean, target keys, reset, merging, state dicts."""

from __future__ import annotations

import pytest
import torch

from torchmanager_metrics import BaseMetric, Metric, batch_size, metric, metric_fn


def abs_error(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (input - target).abs().mean()


def data(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=gen), torch.randn(n, 3, generator=gen)


def test_result_over_uneven_batches_is_the_mean_over_all_samples() -> None:
    x, y = data(10)
    m = Metric(abs_error)
    for lo, hi in ((0, 1), (1, 7), (7, 10)):
        m(x[lo:hi], y[lo:hi])
    expected = (x - y).abs().mean()  # a mean over samples, not over the three batch means
    batch_means = torch.stack([abs_error(x[a:b], y[a:b]) for a, b in ((0, 1), (1, 7), (7, 10))]).mean()
    assert not torch.isclose(expected, batch_means)
    torch.testing.assert_close(m.result, expected)


def test_call_returns_the_batch_value_and_result_is_nan_before_any_batch() -> None:
    x, y = data(4)
    m = Metric(abs_error)
    assert torch.isnan(m.result)
    torch.testing.assert_close(m(x, y), abs_error(x, y))


def test_reset_forgets_every_batch() -> None:
    x, y = data(4)
    m = Metric(abs_error)
    m(x, y)
    m.reset()
    assert torch.isnan(m.result)
    m(x[:2], y[:2])
    torch.testing.assert_close(m.result, abs_error(x[:2], y[:2]))


def test_target_picks_the_key_of_dict_outputs_and_labels() -> None:
    x, y = data(4)
    m = Metric(abs_error, target="out")
    m({"out": x, "aux": torch.zeros(1)}, {"out": y})
    torch.testing.assert_close(m.result, abs_error(x, y))


def test_unknown_target_key_names_the_key_and_the_keys_found() -> None:
    x, y = data(4)
    m = Metric(abs_error, target="missing")
    with pytest.raises(KeyError, match=r"target='missing'.*Expected one of \['aux', 'out'\]"):
        m({"out": x, "aux": x}, {"out": y})


def test_constructor_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match=r"`metric_fn` must be callable.*Received: metric_fn=3"):
        Metric(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`target` must be a key.*Received: target=1"):
        Metric(abs_error, target=1)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match=r"Metric has no `metric_fn`"):
        Metric()(torch.zeros(1), torch.zeros(1))


def test_add_state_checks_its_reduction_and_default() -> None:
    m = Metric(abs_error)
    with pytest.raises(ValueError, match=r"`reduction` must be one of .*Received: reduction='mean'"):
        m.add_state("x", torch.zeros(()), "mean")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"A state's default must be a tensor\. Received: x=0"):
        m.add_state("x", 0, "sum")  # type: ignore[arg-type]


def test_a_value_changing_shape_between_resets_is_refused() -> None:
    m = Metric(lambda a, b: a.mean(0))
    m(torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match=r"returned a value of shape \(4,\) after values of shape \(3,\)"):
        m(torch.zeros(2, 4), None)


def test_an_empty_batch_does_not_poison_the_epoch_value() -> None:
    x, y = data(5)
    m = Metric(abs_error)
    m(x[:3], y[:3])
    m(x[3:3], y[3:3])  # its mean is NaN: skipped, as it holds no sample
    m(x[3:], y[3:])
    torch.testing.assert_close(m.result, (x - y).abs().mean())


def test_vector_values_stream_elementwise() -> None:
    x, y = data(9)
    m = Metric(lambda a, b: (a - b).abs().mean(0))
    m(x[:2], y[:2])
    m(x[2:], y[2:])
    torch.testing.assert_close(m.result, (x - y).abs().mean(0))


def test_state_dict_round_trip_restores_the_result_and_the_streaming() -> None:
    x, y = data(10)
    m = Metric(lambda a, b: (a - b).abs().mean(0))
    m(x[:6], y[:6])
    restored = Metric(lambda a, b: (a - b).abs().mean(0))
    restored.load_state_dict(m.state_dict())
    torch.testing.assert_close(restored.result, m.result)
    restored(x[6:], y[6:])
    torch.testing.assert_close(restored.result, (x - y).abs().mean(0))


def test_merge_state_of_two_halves_equals_the_whole() -> None:
    x, y = data(11)
    whole, first, second = Metric(abs_error), Metric(abs_error), Metric(abs_error)
    whole(x, y)
    first(x[:3], y[:3])
    second(x[3:], y[3:])
    first.merge_state(second)
    torch.testing.assert_close(first.result, whole.result)
    empty = Metric(abs_error)
    empty.merge_state(whole)
    torch.testing.assert_close(empty.result, whole.result)


def test_merge_state_refuses_another_type() -> None:
    class Other(Metric):
        pass

    with pytest.raises(TypeError, match=r"Cannot merge a Other into a Metric"):
        Metric(abs_error).merge_state(Other(abs_error))


def test_decorators_make_streaming_metrics() -> None:
    x, y = data(6)

    @metric
    def mae(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean absolute error."""
        return abs_error(input, target)

    @metric_fn(target="out")
    def mae_out(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return abs_error(input, target)

    mae(x[:1], y[:1])
    mae(x[1:], y[1:])
    mae_out({"out": x}, {"out": y})
    assert isinstance(mae, Metric) and mae.__name__ == "mae" and mae.__doc__ == "Mean absolute error."
    torch.testing.assert_close(mae.result, (x - y).abs().mean())
    torch.testing.assert_close(mae_out.result, (x - y).abs().mean())
    assert mae_out.target == "out"


def test_batch_size_reads_the_label_then_the_input() -> None:
    assert batch_size(torch.zeros(5, 2), torch.zeros(3)) == 3
    assert batch_size({"a": torch.zeros(4, 2)}, None) == 4
    assert batch_size([torch.zeros(2, 1), torch.zeros(7)], None) == 2
    assert batch_size(None, None) == 1
    assert batch_size(torch.zeros(()), None) == 1


def test_base_metric_is_upstreams_name_of_the_base() -> None:
    assert BaseMetric is Metric


def test_reductions_lists_every_declared_state() -> None:
    assert Metric(abs_error).reductions == {"total": "sum", "count": "sum"}
