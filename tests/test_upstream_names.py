"""The names and signatures upstream torchmanager 1.5 users call keep working (DESIGN.md section 7)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

import torchmanager
import torchmanager_core
from torchmanager_core.protocols import Frequency, MonitorType


def parameters(fn: Callable[..., object]) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def test_manager_names_of_the_readme_and_of_upstream_are_one_class() -> None:
    assert torchmanager.BasicTrainingManager is torchmanager.BaseTrainingManager
    assert torchmanager.BasicTestingManager is torchmanager.BaseTestingManager
    assert torchmanager.Manager is torchmanager.TrainingManager
    assert issubclass(torchmanager.TrainingManager, torchmanager.TestingManager)
    assert torchmanager_core.Manager is torchmanager.Manager


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (
            torchmanager.callbacks.LastCheckpoint.__init__,
            [("manager", inspect.Parameter.empty), ("ckpt_path", inspect.Parameter.empty), ("freq", 1)],
        ),
        (
            torchmanager.callbacks.BestCheckpoint.__init__,
            [
                ("monitor", inspect.Parameter.empty),
                ("manager", inspect.Parameter.empty),
                ("ckpt_path", inspect.Parameter.empty),
                ("load_best", False),
                ("monitor_type", MonitorType.MAX),
            ],
        ),
        (
            torchmanager.callbacks.Experiment.__init__,
            [("experiment", inspect.Parameter.empty), ("manager", None), ("monitors", None)],
        ),
        (
            torchmanager.callbacks.EarlyStop.__init__,
            [("monitor", inspect.Parameter.empty), ("monitor_type", MonitorType.MAX), ("steps", 10)],
        ),
        (
            torchmanager.callbacks.TensorBoard.__init__,
            [("log_dir", inspect.Parameter.empty), ("freq", Frequency.EPOCH), ("initial_step", 0)],
        ),
        (torchmanager.losses.Loss.__init__, [("loss_fn", None), ("target", None), ("weight", 1)]),
        (torchmanager.metrics.Metric.__init__, [("metric_fn", None), ("target", None)]),
        (torchmanager.metrics.SparseCategoricalAccuracy.__init__, [("dim", -1)]),
        (torchmanager.metrics.ConfusionMatrix.__init__, [("num_classes", inspect.Parameter.empty)]),
        (
            torchmanager.data.Dataset.__init__,
            [
                ("batch_size", inspect.Parameter.empty),
                ("device", ...),
                ("drop_last", False),
                ("num_workers", ...),
                ("sampler", None),
                ("shuffle", False),
            ],
        ),
    ],
    ids=lambda value: getattr(value, "__qualname__", "")[:40] or None,
)
def test_upstream_signatures(fn: Callable[..., object], expected: list[tuple[str, object]]) -> None:
    """Upstream's parameters come first, in order, with upstream's defaults (`...`: any default)."""
    actual = parameters(fn)[: len(expected)]
    assert [name for name, _ in actual] == [name for name, _ in expected]
    for (name, default), (_, wanted) in zip(actual, expected):
        if wanted is not ...:
            assert default == wanted, name


def test_fit_test_and_predict_take_both_device_spellings() -> None:
    for fn in (torchmanager.Manager.fit, torchmanager.Manager.test, torchmanager.Manager.predict):
        names = [name for name, _ in parameters(fn)]
        assert {"device", "devices", "use_multi_gpus", "show_verbose"} <= set(names), fn
    fit = [name for name, _ in parameters(torchmanager.Manager.fit)]
    assert fit[:4] == ["training_dataset", "epochs", "val_dataset", "callbacks_list"]


def test_upstream_module_paths() -> None:
    from torchmanager.callbacks import Checkpoint, LastCheckpoint, MultiCallbacks
    from torchmanager.configs import Configs, JSONConfigs, YAMLConfigs
    from torchmanager.losses import BaseLoss, DiceCE, MultiLosses
    from torchmanager_core.errors import StopTraining
    from torchmanager_core.random import freeze_seed, unfreeze_seed
    from torchmanager_core.version import API_VERSION, Version

    assert Checkpoint is LastCheckpoint and BaseLoss is torchmanager.losses.Loss
    assert all(
        callable(x)
        for x in (MultiCallbacks, Configs, JSONConfigs, YAMLConfigs, DiceCE, MultiLosses, freeze_seed, unfreeze_seed)
    )
    assert issubclass(StopTraining, Exception) and Version("v2.0") == API_VERSION
    assert torchmanager.random.freeze_seed is freeze_seed
