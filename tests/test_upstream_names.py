"""The names and signatures upstream torchmanager 1.5 users call keep working (DESIGN.md section 7).

`tests/data/upstream15_names.txt` lists every public name and module path of upstream 1.5's
`torchmanager` and `torchmanager_core` (written by `scripts/upstream_names.py` from the installed
1.5 wheel). Each must import from our product, as the same object where upstream gave one object
several paths, except the deliberate removals in `REMOVED`, each with its replacement and reason.
Names on the manager classes are checked in `test_upstream_manager_members`.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import logging
import types
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest
import torch

import torchmanager
import torchmanager_core
from tests.workspace import ROOT
from torchmanager_core.protocols import Frequency


@pytest.fixture(autouse=True)
def keep_logger() -> Iterator[None]:
    """Importing upstream's `torchmanager_core.view` gives the "torchmanager" logger INFO; later tests must not inherit it."""
    logger = logging.getLogger("torchmanager")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


class Removal(NamedTuple):
    patterns: tuple[str, ...]
    replacement: str
    reason: str


REMOVED = [
    Removal(
        (
            "torchmanager_core.checkpoint.Checkpoint",
            "torchmanager_core.checkpoint.ckpt",
            "torchmanager_core.checkpoint.ckpt.*",
            "torchmanager_core.protocols.Checkpoint",
        ),
        "`manager.save_checkpoint(path)`, `Manager.from_checkpoint(path, model=...)`, `manager.load_checkpoint(path)`; "
        "upstream's files load with `trusted=True`",
        "`Checkpoint` pickled whole objects (the manager with its model class), so loading one runs code "
        "from the file; our checkpoints are state dicts that load with `weights_only=True`",
    ),
    Removal(
        ("torchmanager_core.errors.TransformError", "torchmanager_core.errors.runtime.TransformError"),
        "`torchmanager.data.TransformError` (`torchmanager_data.TransformError`)",
        "the data distribution raises it, and core does not depend on the data distribution",
    ),
    Removal(
        ("torchmanager_core.protocols.Reduction",),
        "`torchmanager.losses.Reduction` (`torchmanager_losses.Reduction`)",
        "the losses reduce with it, and core does not depend on the losses distribution",
    ),
]
"""Upstream names deliberately absent: a checkpoint format that runs code, and names in the wrong distribution."""


class Listed(NamedTuple):
    kind: str  # "module", "class" (a class upstream defines) or "name"
    path: str
    same_as: str | None  # another listed path of the same upstream object


def _listed() -> list[Listed]:
    lines = (ROOT / "tests" / "data" / "upstream15_names.txt").read_text().splitlines()
    rows = [line.split() for line in lines if line and not line.startswith("#")]
    return [Listed(row[0], row[1], row[2] if len(row) > 2 else None) for row in rows]


LISTED = _listed()


def _removal(path: str) -> Removal | None:
    return next((r for r in REMOVED if any(fnmatch.fnmatchcase(path, p) for p in r.patterns)), None)


def resolve(path: str) -> object:
    """What `path` names in our product: its longest importable module prefix, then attributes."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        try:
            value: object = importlib.import_module(prefix)
        except ModuleNotFoundError as error:
            if error.name is not None and (prefix == error.name or prefix.startswith(f"{error.name}.")):
                continue  # no such module: the rest are attributes
            raise  # the module exists but imports something missing
        for name in parts[end:]:
            value = getattr(value, name)
        return value
    raise ModuleNotFoundError(f"No module named {parts[0]!r}", name=parts[0])


def _problem(entry: Listed) -> str | None:
    try:
        value = resolve(entry.path)
    except (ImportError, AttributeError) as error:
        return f"{entry.path}: {type(error).__name__}: {error}"
    if entry.kind == "module" and not isinstance(value, types.ModuleType):
        return f"{entry.path}: a module upstream, here a {type(value).__name__}"
    if entry.kind == "class" and not isinstance(value, type):
        return f"{entry.path}: a class upstream, here a {type(value).__name__}"
    if entry.same_as is not None and _removal(entry.same_as) is None:
        if value is not resolve(entry.same_as):
            return f"{entry.path}: upstream's {entry.same_as} itself, here another object"
    return None


_CHECKED = [e for e in LISTED if _removal(e.path) is None]
_MODULES = sorted({e.path.rpartition(".")[0] if e.kind != "module" else e.path for e in _CHECKED})


@pytest.mark.parametrize("module", _MODULES)
def test_upstream_names_import_from_the_product(module: str) -> None:
    """Every upstream name of `module` (and the module itself) imports here, as the same kind of object."""
    entries = [e for e in _CHECKED if e.path == module or (e.kind != "module" and e.path.rpartition(".")[0] == module)]
    problems = [p for p in map(_problem, entries) if p is not None]
    assert not problems, "\n".join(problems)


def test_the_removal_table_is_short_and_matches_upstream_names() -> None:
    """Each row names upstream names that exist (no stale rows), and every replacement it gives resolves."""
    listed = {e.path for e in LISTED}
    assert len(REMOVED) <= 5
    for row in REMOVED:
        for pattern in row.patterns:
            assert fnmatch.filter(listed, pattern), pattern
        assert row.replacement and row.reason
    assert resolve("torchmanager.data.TransformError") is resolve("torchmanager_data.TransformError")
    assert resolve("torchmanager.losses.Reduction") is resolve("torchmanager_losses.Reduction")
    assert callable(resolve("torchmanager_core.Manager.save_checkpoint"))
    assert callable(resolve("torchmanager_core.Manager.load_checkpoint"))
    assert len(LISTED) > 400


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
                (
                    "monitor_type",
                    None,
                ),  # inferred from the name: upstream's MAX for a metric, MIN for a loss (issue 23)
            ],
        ),
        (
            torchmanager.callbacks.Experiment.__init__,
            [("experiment", inspect.Parameter.empty), ("manager", None), ("monitors", None)],
        ),
        (
            torchmanager.callbacks.EarlyStop.__init__,
            [("monitor", inspect.Parameter.empty), ("monitor_type", None), ("steps", 10)],  # None: from the name
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


def test_torchmanager_version_compares_with_strings_and_gives_the_version_module_names() -> None:
    """Upstream's `torchmanager.version` was the version (`>= "1.1.0"`); ours was the module (`.VERSION`): both hold."""
    from torchmanager_core import version as module

    v = torchmanager.version
    assert v >= "1.1.0" and v > "1.5" and v < "99" and not v < "1.5"
    assert (
        v == torchmanager.VERSION == torchmanager.__version__
        and f"torchmanager={v}" == f"torchmanager={torchmanager.__version__}"
    )
    assert isinstance(v, module.Version) and hash(v) == hash(torchmanager.VERSION)
    assert (v.VERSION, v.API_VERSION, v.deprecated, v.Version) == (
        module.VERSION,
        module.API_VERSION,
        module.deprecated,
        module.Version,
    )
    assert v.main_version == torchmanager.VERSION.major  # the version's own attributes come first
    with pytest.raises(AttributeError, match="no_such_name"):
        v.no_such_name  # noqa: B018


def test_importing_torchmanager_gives_upstream_top_level_modules() -> None:
    assert torchmanager.training.Manager is torchmanager.Manager
    assert torchmanager.testing.Manager is torchmanager.TestingManager
    assert issubclass(torchmanager.Manager, torchmanager.basic.BaseManager)
    assert torchmanager.VerboseType is torchmanager_core.view.VerboseType


def test_misspelled_upstream_classes_warn_once_and_build_the_right_one() -> None:
    import warnings

    from torchmanager.callbacks.lr import LrSchedueler
    from torchmanager.metrics.conf_mat import BinaryConfusionMetric
    from torchmanager_core import version

    model = torch.nn.Linear(2, 2)
    scheduler = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), lr=0.1), step_size=1)
    cases: list[tuple[Callable[[], object], type, str]] = [
        (lambda: LrSchedueler(scheduler), torchmanager.callbacks.LrScheduler, "torchmanager.callbacks.lr.LrSchedueler"),
        (
            BinaryConfusionMetric,
            torchmanager.metrics.BinaryConfusionMatrix,
            "torchmanager.metrics.conf_mat.BinaryConfusionMetric",
        ),
    ]
    for make, made, name in cases:
        version._warned_names.discard(name)  # another test may have warned already
        with pytest.warns(DeprecationWarning, match=rf"`{name}` is kept .* use `torchmanager\..*{made.__name__}`"):
            assert isinstance(make(), made)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert isinstance(make(), made)


# -- the manager classes: what subclasses written for upstream use (the lead builds these) ---------


def _manager(**kwargs: object) -> torchmanager.Manager:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    options: dict[str, object] = {
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "loss_fn": torchmanager.losses.MSE(),
        "metrics": {"mae": torchmanager.metrics.MAE()},
    }
    return torchmanager.Manager(model, **{**options, **kwargs})  # type: ignore[arg-type]


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(1)
    return [(torch.randn(4, 3), torch.randn(4, 2)) for _ in range(3)]


def _generic() -> None:
    from torchmanager_core.typing import Module

    class Sub(torchmanager.Manager[Module]):  # type: ignore[type-arg, misc]
        pass

    assert issubclass(Sub, torchmanager.Manager)
    assert torchmanager.Manager[torch.nn.Linear] is not None  # type: ignore[misc]


def _compiled_metrics_items() -> None:
    mae = torchmanager.metrics.MAE()
    manager = _manager(metrics={"mae": mae})
    assert dict(manager.compiled_metrics.items()) == {"mae": mae}  # type: ignore[attr-defined]


def test_compiled_losses_give_the_loss_as_upstream_subclasses_call_them() -> None:
    """`SDEManager.forward` (torchmanager-diffusion) calls `self.compiled_losses(y, y_train)` for the loss."""
    manager = _manager()
    y, label = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(manager.compiled_losses(y, label), torch.nn.functional.mse_loss(y, label))  # type: ignore[call-arg, misc]


def _compiled_losses_dict() -> None:
    manager = _manager(loss_fn={"a": torchmanager.losses.MSE(), "b": torchmanager.losses.MAE()})
    assert len(manager.compiled_losses.losses) == 2  # type: ignore[attr-defined]


def _settable_loss_fn() -> None:
    manager = _manager()
    manager.loss_fn = torchmanager.losses.MAE()
    y, label = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(manager.compiled_losses(y, label), (y - label).abs().mean())  # type: ignore[call-arg]


def _settable_metric_fns() -> None:
    """eval.py of torchmanager-diffusion sets `manager.metric_fns = {"FID": fid}` on a loaded manager, then tests."""
    manager = _manager()
    manager.metric_fns = {"mse": torchmanager.metrics.MSE()}
    assert set(manager.test(_data())) == {"loss", "mse"}


def _raw_loss_fn() -> None:
    loss = torchmanager.losses.MSE()
    assert _manager(loss_fn=loss).raw_loss_fn is loss  # type: ignore[attr-defined]


def _compiled_optimizer() -> None:
    manager = _manager()
    assert manager.compiled_optimizer is manager.optimizer  # type: ignore[attr-defined]


def _data_parallel() -> None:
    """`LDMManager.data_parallel(target_devices) -> bool` calls `super().data_parallel(target_devices)`."""
    assert _manager().data_parallel([torch.device("cpu")]) is False  # type: ignore[attr-defined]


def _reset() -> None:
    """eval.py of score-based-bbdm calls `manager.reset()` after `from_checkpoint`; `LDMManager.reset(cpu)` overrides it."""
    manager = _manager()
    manager.reset()  # type: ignore[attr-defined]
    manager.reset(torch.device("cpu"))  # type: ignore[attr-defined]
    assert next(manager.raw_model.parameters()).device == torch.device("cpu")


def _convert() -> None:
    """`Manager.convert` of torchmanager-diffusion sets its own defaults, then calls `super().convert()`."""
    _manager().convert()  # type: ignore[attr-defined]


def _summary() -> None:
    manager = _manager()
    result = manager.test(_data())
    assert manager.summary == pytest.approx(result)  # type: ignore[attr-defined]


def _train_hook() -> None:
    """magnet's targeting manager overrides `_train(dataset, **kwargs)` and `fit` runs each epoch through it."""
    calls: list[int] = []

    class Counting(torchmanager.Manager):  # type: ignore[misc]
        def _train(self, *args: object, **kwargs: object) -> dict[str, float]:
            calls.append(1)
            return super()._train(*args, **kwargs)  # type: ignore[misc, no-any-return]

    model = torch.nn.Linear(3, 2)
    Counting(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torchmanager.losses.MSE()).fit(
        _data(), epochs=2
    )
    assert len(calls) == 2


def _upstream_members() -> None:
    """Upstream's other public members of `Manager`, as its users call them."""
    manager = _manager()
    assert manager.compiled and not torchmanager.Manager(torch.nn.Linear(3, 2)).compiled
    assert manager.loss_dict == {"loss": manager.loss_fn}
    assert manager.version == torchmanager_core.API_VERSION
    other = _manager()
    torch.nn.init.zeros_(other.raw_model.weight)
    other.load_state_dict(manager.state_dict())
    assert torch.equal(other.raw_model.weight, manager.raw_model.weight)
    with manager as entered:  # upstream's training mode, then eval mode
        assert entered is manager and manager.model.training
    assert not manager.model.training
    with pytest.raises(
        NotImplementedError,
        match=r"`to_checkpoint` made upstream's `Checkpoint` object, which pickled the whole manager; save a "
        r"checkpoint with `manager.save_checkpoint\(path\)`",
    ):
        manager.to_checkpoint()


MANAGER_MEMBERS = {
    "Manager[Module]": _generic,
    "compiled_metrics.items()": _compiled_metrics_items,
    "compiled_losses.losses": _compiled_losses_dict,
    "settable loss_fn": _settable_loss_fn,
    "settable metric_fns": _settable_metric_fns,
    "raw_loss_fn": _raw_loss_fn,
    "compiled_optimizer": _compiled_optimizer,
    "data_parallel(target_devices)": _data_parallel,
    "reset(cpu)": _reset,
    "convert()": _convert,
    "summary": _summary,
    "_train per epoch": _train_hook,
    "compiled, loss_dict, state_dict, to_checkpoint, version, with-block": _upstream_members,
}


@pytest.mark.parametrize("check", [pytest.param(check, id=name) for name, check in MANAGER_MEMBERS.items()])
def test_upstream_manager_members(check: Callable[[], None]) -> None:
    check()
