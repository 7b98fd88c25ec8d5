"""What code written for upstream torchmanager 1.5 does with `torchmanager_core` behaves as it did there.

References: the standard library and torch objects upstream re-exported, hand computations, and
fresh processes for what importing does.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from types import ModuleType

import pytest
import torch
import tqdm

import torchmanager_core
from torchmanager_core import devices, errors
from torchmanager_core.backward import add_gard_clip, add_grad_clip, backward_hook
from torchmanager_core.checkpoint import list_checkpoints
from torchmanager_core.protocols import DeviceMovable, ModelContainer, Weighted, WrappedFn
from torchmanager_core.version import PreRelease, Version, warn_upstream_name


@pytest.fixture
def view() -> Iterator[ModuleType]:
    """`torchmanager_core.view`; the "torchmanager" logger's level and handlers are put back afterwards
    (importing `view` gives the logger upstream's INFO level, which other tests must not inherit)."""
    logger = logging.getLogger("torchmanager")
    level, handlers = logger.level, list(logger.handlers)
    from torchmanager_core import view as module

    logger.setLevel(logging.INFO if level == logging.NOTSET else level)  # what the first import of `view` does
    yield module
    logger.setLevel(level)
    logger.handlers[:] = handlers


def run_fresh(code: str) -> str:
    """Run `code` in a new interpreter (nothing imported yet) and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- re-exports -----------------------------------------------------------------------------------


def test_reexports_are_the_modules_upstream_gave(view: ModuleType) -> None:
    from torchmanager_core import abc, data, functional, torch as reexported_torch  # noqa: I001

    import abc as real_abc

    assert (abc, data, functional, reexported_torch) == (real_abc, torch.utils.data, torch.nn.functional, torch)
    assert (torchmanager_core.argparse, torchmanager_core.json, torchmanager_core.math) == (argparse, json, math)
    assert (torchmanager_core.os, torchmanager_core.sys) == (os, sys)
    assert torchmanager_core.view is view and torchmanager_core.Version is Version
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        torchmanager_core.no_such_name  # noqa: B018


def test_importing_core_imports_no_optional_dependency_until_one_is_read() -> None:
    out = run_fresh(
        """
        import sys, torchmanager, torchmanager_core
        optional = ("yaml", "torch.utils.tensorboard", "scipy", "tensorboard")
        print(sorted(m for m in sys.modules if m.split(".")[0] in optional or m.startswith("torch.utils.tensorboard")))
        assert torchmanager_core.yaml is sys.modules["yaml"]
        assert torchmanager_core.tensorboard is sys.modules["torch.utils.tensorboard"]
        print("view" in vars(torchmanager_core), "argparse" in vars(torchmanager_core))
        """
    )
    assert out.split("\n")[:2] == ["[]", "False False"]


def test_a_missing_optional_dependency_reads_as_not_implemented_as_upstream_had_it() -> None:
    out = run_fresh(
        """
        import sys
        sys.modules["yaml"] = None  # what an uninstalled package looks like to `import`
        sys.modules["torch.utils.tensorboard"] = None
        import torchmanager_core
        print(torchmanager_core.yaml is NotImplemented, torchmanager_core.tensorboard is NotImplemented)
        """
    )
    assert out.strip() == "True True"


def test_raise_error_raises_the_error_and_the_old_spelling_warns_once() -> None:
    ready = False
    with pytest.raises(KeyError, match="k"):
        assert ready, torchmanager_core.raise_error(KeyError("k"))  # upstream's idiom
    from torchmanager_core import version

    version._warned_names.discard("torchmanager_core._raise")  # another test may have warned already
    with pytest.warns(DeprecationWarning, match=r"`torchmanager_core._raise` is kept .* use `raise_error`"):
        with pytest.raises(ValueError, match="first"):
            torchmanager_core._raise(ValueError("first"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="second"):
            torchmanager_core._raise(ValueError("second"))


# -- errors -----------------------------------------------------------------------------------------


def test_metric_error_takes_upstream_one_argument_and_our_two() -> None:
    one, two = errors.MetricError("dice"), errors.MetricError("dice", "Metric `dice` failed on shape (2,).")
    assert one.name == two.name == "dice"
    assert "`dice`" in str(one) and "Received: name='dice'" in str(one)
    assert str(two) == "Metric `dice` failed on shape (2,)."


@pytest.mark.parametrize("error", [errors.TestingError, errors.PredictionError])
def test_testing_and_prediction_errors_chain_their_cause(error: type[RuntimeError]) -> None:
    with pytest.raises(error, match="failed; the error chained below says why") as caught:
        try:
            raise ZeroDivisionError
        except ZeroDivisionError as cause:
            raise error() from cause
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    assert str(error("custom")) == "custom"


def test_upstream_error_paths_are_our_errors() -> None:
    from torchmanager_core.configs import ConfigsFormatError
    from torchmanager_core.errors.configs import ConfigsFormatError as FromErrors
    from torchmanager_core.errors.train import StopTraining

    assert ConfigsFormatError is FromErrors is errors.ConfigsFormatError and StopTraining is errors.StopTraining
    assert str(ConfigsFormatError(int)) == "Cannot format configs to type `int`."


# -- devices ----------------------------------------------------------------------------------------


def test_search_and_set_default_follow_select() -> None:
    cpu = torch.device("cpu")
    assert devices.search() == (cpu, *devices.select())
    assert devices.search(cpu) == (cpu, cpu, [cpu])
    assert devices.search([cpu]) == (cpu, cpu, [cpu])
    devices.set_default(cpu)  # nothing to do off CUDA
    with pytest.raises(ValueError, match=r"`device` must not be an empty list"):
        devices.search([])


def test_device_constants_match_torch() -> None:
    cuda = torch.cuda.is_available()
    assert devices.GPU == (torch.device("cuda") if cuda else NotImplemented)
    assert devices.GPUS == [torch.device("cuda", i) for i in range(torch.cuda.device_count() if cuda else 0)]
    assert devices.DEFAULT == (torch.device("cuda", torch.cuda.current_device()) if cuda else devices.CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA answer")
def test_data_parallel_returns_upstream_pair(caplog: pytest.LogCaptureFixture) -> None:
    model = torch.nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING, logger="torchmanager"):
        assert devices.data_parallel(model, [torch.device("cpu")]) == (model, False)
    assert "`data_parallel` needs CUDA" in caplog.text
    wrapped = torch.nn.DataParallel(model)  # without CUDA it holds the module as it is
    assert devices.data_parallel(wrapped) == (wrapped, True)


class Batch:
    """A user batch class with `.to(device)`, as torchmanager-diffusion's `DiffusionData`."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def to(self, device: torch.device) -> Batch:
        return Batch(self.x.to(device))


def test_move_to_device_moves_device_movable_objects_and_can_stop_at_the_top_level() -> None:
    meta = torch.device("meta")
    moved = devices.move_to_device({"batch": Batch(torch.ones(2)), "x": torch.ones(1), "n": 3, "s": "a"}, meta)
    assert moved["batch"].x.device == meta and moved["x"].device == meta and (moved["n"], moved["s"]) == (3, "a")
    nested = [torch.ones(1), [torch.ones(1)]]
    shallow = devices.move_to_device(nested, meta, recursive=False)
    assert shallow[0].device == meta and shallow[1] is nested[1]
    assert devices.move_to_device(nested, meta)[1][0].device == meta
    assert isinstance(Batch(torch.ones(1)), DeviceMovable)


# -- view and typing --------------------------------------------------------------------------------


def test_view_gives_upstream_logging_names(view: ModuleType) -> None:
    assert view.logger is logging.getLogger("torchmanager")
    assert (view.tqdm, view.warnings) == (tqdm.tqdm, warnings)
    assert (view.logging.StreamHandler, view.logging.Formatter, view.logging.INFO) == (
        logging.StreamHandler,
        logging.Formatter,
        logging.INFO,
    )
    assert {t.name: t.value for t in view.VerboseType} == {"ALL": -1, "NONE": 0, "LOSS": 1, "METRICS": 2}


def test_importing_view_gives_the_logger_upstream_info_level_so_added_handlers_print() -> None:
    out = run_fresh(
        """
        import logging, sys
        import torchmanager_core
        print(logging.getLogger("torchmanager").level)
        from torchmanager_core import view
        console = view.logging.StreamHandler(sys.stdout)  # torchmanager-diffusion's configs do this
        console.setLevel(view.logging.INFO)
        view.logger.addHandler(console)
        view.logger.info("epoch summary")
        """
    )
    assert out.split("\n")[:2] == [str(logging.NOTSET), "epoch summary"]


def test_set_log_path_writes_info_records_to_one_file_at_a_time(view: ModuleType, tmp_path: os.PathLike[str]) -> None:
    first, second = os.path.join(tmp_path, "a.log"), os.path.join(tmp_path, "b.log")
    before = list(view.logger.handlers)
    try:
        formatter = view.set_log_path(first)
        view.logger.info("one")
        view.set_log_path(second)
        view.logger.info("two")
    finally:
        for handler in [h for h in view.logger.handlers if h not in before]:
            view.logger.removeHandler(handler)
            handler.close()
    assert formatter.format(logging.makeLogRecord({"msg": "m"})) == "m"
    with open(first) as a, open(second) as b:
        assert (a.read(), b.read()) == ("one\n", "two\n")


def test_add_console_with_upstream_arguments_replaces_a_handler_of_the_same_class(view: ModuleType) -> None:
    class Mine(logging.StreamHandler):  # type: ignore[type-arg]
        pass

    before = list(view.logger.handlers)
    try:
        first, second = Mine(), Mine()
        view.add_console(first)
        view.add_console(second, logging.Formatter("> %(message)s"))
        mine = [h for h in view.logger.handlers if isinstance(h, Mine)]
        assert mine == [second] and second.formatter is not None and second.level == logging.INFO
        assert second.formatter.format(logging.makeLogRecord({"msg": "m"})) == "> m"
    finally:
        for handler in [h for h in view.logger.handlers if h not in before]:
            view.logger.removeHandler(handler)


def test_typing_gives_upstream_annotation_names() -> None:
    import typing
    from collections.abc import Collection
    from enum import Enum

    from torchmanager_core.typing import Any, Module, Self, SizedIterable
    from torchmanager_core.typing import Enum as FromTyping

    assert Any is typing.Any and FromTyping is Enum and SizedIterable is typing.Collection
    assert Module.__bound__ is torch.nn.Module and Self is not None and issubclass(list, Collection)


# -- backward hooks ---------------------------------------------------------------------------------


def gradients(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    (model(x) * 10).sum().backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_add_grad_clip_clamps_every_gradient_until_removed() -> None:
    torch.manual_seed(0)
    model, x = torch.nn.Linear(3, 2), torch.randn(5, 3)
    plain = gradients(model, x)
    handles = add_grad_clip(model, -0.5, 0.5)
    clipped = gradients(model, x)
    for handle in handles:
        handle.remove()
    assert len(handles) == 2 and any((g.abs() > 0.5).any() for g in plain)
    for got, raw in zip(clipped, plain):
        torch.testing.assert_close(got, raw.clamp(-0.5, 0.5))
    for got, raw in zip(gradients(model, x), plain):
        torch.testing.assert_close(got, raw)
    with pytest.raises(ValueError, match=r"Received: min_value=1, max_value=0"):
        add_grad_clip(model, 1, 0)


def test_add_grad_clip_can_replace_nan_gradients() -> None:
    model = torch.nn.Linear(1, 1)
    add_grad_clip(model, -1.0, 1.0, replace_nan=True)
    (model(torch.tensor([[float("nan")]])).sum()).backward()
    assert model.weight.grad is not None and not model.weight.grad.isnan().any()


def test_backward_hook_as_decorator_and_as_call() -> None:
    torch.manual_seed(0)
    model, x = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)), torch.randn(4, 3)
    model[0].weight.requires_grad_(False)  # frozen parameters get no hook
    plain = gradients(model, x)

    @backward_hook(model)
    def double(grad: torch.Tensor) -> torch.Tensor:
        return grad * 2

    for got, raw in zip(gradients(model, x), plain):
        torch.testing.assert_close(got, raw * 2)
    handles = backward_hook(model, double, as_decorator=False)
    assert len(handles) == 3
    for got, raw in zip(gradients(model, x), plain):
        torch.testing.assert_close(got, raw * 4)


def test_misspelled_grad_clip_warns_once_and_clips() -> None:
    model = torch.nn.Linear(2, 1)
    with pytest.warns(DeprecationWarning, match="use `add_grad_clip`"):
        assert len(add_gard_clip(model, -1, 1)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        add_gard_clip(model, -1, 1)


# -- versions and protocols -------------------------------------------------------------------------


def test_version_pre_release_parts() -> None:
    assert Version("2.0a3").pre_release is PreRelease.ALPHA and Version("2.0a3").pre_release_version == 3
    assert Version("1.5").pre_release is None and Version("1.5").pre_release_version == 0
    assert PreRelease.ALPHA < PreRelease.BETA < PreRelease.RELEASE_CANDIDATE and PreRelease("x") is PreRelease.UNKNOWN
    with pytest.raises(TypeError):
        _ = PreRelease.UNKNOWN < PreRelease.ALPHA


def test_warn_upstream_name_warns_once_per_name() -> None:
    def kept() -> None:
        warn_upstream_name("test_warn_upstream_name.kept", "`new`")

    with pytest.warns(
        DeprecationWarning, match=r"`test_warn_upstream_name.kept` is kept .* use `new` instead"
    ) as caught:
        kept()
        kept()
    assert len(caught) == 1 and caught[0].filename == __file__  # it points at the caller of the kept name


def test_upstream_protocols_recognise_our_objects() -> None:
    model = torch.nn.Linear(2, 2)
    manager = torchmanager_core.Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.MSELoss())
    assert isinstance(manager, ModelContainer) and isinstance(model, DeviceMovable)

    class Weight:
        weight = 1.0

    assert isinstance(Weight(), Weighted) and not isinstance(model.forward, WrappedFn)


def test_list_checkpoints_lists_model_files(tmp_path: os.PathLike[str]) -> None:
    folder = os.path.join(tmp_path, "run.exp", "checkpoints")
    os.makedirs(folder)
    for name in ("last.model", "best-acc.model", "notes.txt"):
        open(os.path.join(folder, name), "w").close()
    assert list_checkpoints(os.path.join(tmp_path, "run.exp")) == ["best-acc.model", "last.model"]
