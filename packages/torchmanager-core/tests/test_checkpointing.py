"""Checkpoints: atomic files that load without running code, and an exact resume from any step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from core_testkit import Accuracy, blobs, linear

from torchmanager_core import Callback, Manager, checkpoint
from torchmanager_core.checkpoint import CheckpointError


class MLP(torch.nn.Module):
    """Importable (module-level) so that its structure can be pickled; dropout draws random numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_manager(seed: int = 0) -> Manager:
    torch.manual_seed(seed)
    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return Manager(model, optimizer, loss_fn=torch.nn.CrossEntropyLoss(), metrics={"accuracy": Accuracy()})


def shuffled_loader(seed: int = 0) -> torch.utils.data.DataLoader[Any]:
    x, y = blobs(90, seed=seed)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True)


def test_checkpoint_loads_weights_only_and_restores_a_manager(tmp_path: Path) -> None:
    manager = make_manager()
    manager.fit(shuffled_loader(), epochs=2)
    path = tmp_path / "last.model"
    manager.save_checkpoint(path)

    raw = torch.load(path, weights_only=True)  # no code runs: plain state dicts and values
    assert raw["format"] == checkpoint.FORMAT and raw["epoch"] == 2
    assert raw["optimizer_class"] == "torch.optim.adam.Adam"

    restored = Manager.from_checkpoint(path, model=MLP(), loss_fn=torch.nn.CrossEntropyLoss())
    for a, b in zip(manager.raw_model.state_dict().values(), restored.raw_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert isinstance(restored.optimizer, torch.optim.Adam) and restored.current_epoch == 2
    assert restored.optimizer.state_dict()["state"][0]["exp_avg"].equal(
        manager.optimizer.state_dict()["state"][0]["exp_avg"]
    )  # type: ignore[union-attr]

    trusted = Manager.from_checkpoint(path, trusted=True)  # rebuilds the model object: runs code, opt-in
    assert isinstance(trusted.raw_model, MLP)
    assert all(torch.equal(a, b) for a, b in zip(trusted.raw_model.parameters(), manager.raw_model.parameters()))


def test_without_model_loading_needs_trust(tmp_path: Path) -> None:
    manager = make_manager()
    manager.save_checkpoint(tmp_path / "a.model")
    with pytest.raises(CheckpointError, match=r"without `model=` would run code.*Received: model=None, trusted=False"):
        Manager.from_checkpoint(tmp_path / "a.model")
    local = Manager(torch.nn.Sequential(type("Local", (torch.nn.Module,), {"forward": lambda self, x: x})()))
    local.save_checkpoint(tmp_path / "b.model")
    with pytest.raises(CheckpointError, match=r"does not hold the model's structure"):
        Manager.from_checkpoint(tmp_path / "b.model", trusted=True)


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    make_manager().save_checkpoint(tmp_path / "mlp.model")
    other = Manager(linear())
    with pytest.raises(CheckpointError, match=r"weights of a different model.*Received: model=Linear"):
        other.load_checkpoint(tmp_path / "mlp.model")


class Payload:
    """A pickle whose loading would create a file: what a malicious checkpoint does."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.target, "w"))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.model"
    torch.save({"format": checkpoint.FORMAT, "format_version": 1, "model": Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"contains Python objects.*Pass `trusted=True`"):
        Manager.from_checkpoint(path, model=linear())
    assert not marker.exists()


def test_truncated_foreign_and_newer_files(tmp_path: Path) -> None:
    path = tmp_path / "c.model"
    make_manager().save_checkpoint(path)
    data = path.read_bytes()
    (tmp_path / "cut.model").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt"):
        checkpoint.load(tmp_path / "cut.model")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"not a torchmanager checkpoint"):
        checkpoint.load(tmp_path / "foreign.pt")
    checkpoint.save({"x": 1}, tmp_path / "new.model")
    newer = torch.load(tmp_path / "new.model", weights_only=True) | {"format_version": checkpoint.FORMAT_VERSION + 1}
    torch.save(newer, tmp_path / "new.model")
    with pytest.raises(CheckpointError, match=r"newer than format version.*upgrade torchmanager"):
        checkpoint.load(tmp_path / "new.model")
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        checkpoint.load(tmp_path / "missing.model")


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.model"
    checkpoint.save({"value": torch.tensor(1)}, path)

    def dies_halfway(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        file.write(b"PK\x03\x04 partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save({"value": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert checkpoint.load(path)["value"].item() == 1
    assert os.listdir(tmp_path) == ["last.model"]  # no temporary file left behind


def test_unwritable_folder_and_unpicklable_payload(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"folder .* does not exist"):
        checkpoint.save({}, tmp_path / "missing" / "last.model")
    with pytest.raises(TypeError, match=r"store `module.state_dict\(\)` instead"):
        checkpoint.save({"model": linear()}, tmp_path / "x.model")


class SaveAt(Callback):
    """Saves a checkpoint after batch `step` of epoch `epoch`, as a kill would find it."""

    def __init__(self, manager: Manager, path: Path, epoch: int, step: int) -> None:
        self.manager, self.path, self.epoch, self.step = manager, path, epoch, step

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        if self.manager.current_epoch == self.epoch and batch == self.step:
            self.manager.save_checkpoint(self.path)


@pytest.mark.parametrize(
    ("epoch", "step", "how"), [(1, 4, "fit"), (0, 0, "fit"), (2, 11, "fit"), (1, 4, "load"), (0, 11, "load")]
)
def test_resume_mid_epoch_is_bit_identical(tmp_path: Path, epoch: int, step: int, how: str) -> None:
    """`fit(resume_from=path)`, or `load_checkpoint(path)` then `fit` (as `Experiment(resume=True)` does)."""
    torch.manual_seed(123)
    reference = make_manager()
    path = tmp_path / "mid.model"
    _, expected = reference.fit(
        shuffled_loader(), epochs=3, callbacks_list=[SaveAt(reference, path, epoch, step)], return_summary=True
    )

    torch.manual_seed(999)  # the resumed process starts from other random states
    resumed = make_manager(seed=5)
    if how == "load":
        resumed.load_checkpoint(path)
        torch.rand(5)  # the user's code draws random numbers between loading and fitting
    _, summary = resumed.fit(
        shuffled_loader(), epochs=3, resume_from=path if how == "fit" else None, return_summary=True
    )
    for a, b in zip(reference.raw_model.state_dict().values(), resumed.raw_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert summary == expected  # the interrupted epoch's running values were restored too


def test_leftovers_of_killed_writes_are_cleaned_by_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "last.model"
    leftover = tmp_path / ".last.model.abc123.tmp"
    leftover.write_bytes(b"PK partial")
    os.utime(leftover, (1, 1))  # written long ago by a killed process
    other = tmp_path / ".other.model.abc.tmp"
    other.write_bytes(b"not ours")
    os.utime(other, (1, 1))
    checkpoint.save({"value": torch.tensor(3)}, path)
    assert sorted(os.listdir(tmp_path)) == [".other.model.abc.tmp", "last.model"]


FORMAT1 = Path(__file__).resolve().parents[3] / "tests" / "data"


def test_a_format_1_checkpoint_of_an_earlier_release_still_loads_and_resumes() -> None:
    """tests/data/format1.model was written mid-epoch by the release before format 2 (see its script)."""
    expected = torch.load(FORMAT1 / "format1.expected.pt", weights_only=True)
    torch.manual_seed(5)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    manager = Manager(model, optimizer, loss_fn=torch.nn.CrossEntropyLoss(), metrics={"accuracy": Accuracy()})
    payload = manager.load_checkpoint(FORMAT1 / "format1.model")
    assert payload["format_version"] == 1 and (manager.current_epoch, manager.batch_index) == (1, 3)
    for name, tensor in expected["model"].items():
        assert torch.equal(model.state_dict()[name], tensor)
    assert [torch.equal(s["momentum_buffer"], m) for s, m in zip(optimizer.state.values(), expected["momentum"])] == [
        True,
        True,
    ]
    accuracy = manager.metric_fns["accuracy"]
    assert torch.equal(accuracy.correct, expected["correct"]) and torch.equal(accuracy.seen, expected["seen"])
    torch.manual_seed(0)
    x = torch.randn(48, 4)
    y = (x[:, 0] > 0).long()
    manager.fit([(x[i : i + 8], y[i : i + 8]) for i in range(0, 48, 8)], epochs=2)
    for name, tensor in expected["final"].items():  # it went on exactly as the earlier release did
        assert torch.equal(model.state_dict()[name], tensor)


class OwnInit(Manager):
    """A subclass whose constructor puts its own argument first and does not take the options."""

    def __init__(
        self, model: torch.nn.Module, time_steps: int, optimizer: Any = None, loss_fn: Any = None, metrics: Any = None
    ) -> None:
        super().__init__(model, optimizer, loss_fn, metrics)
        self.time_steps = time_steps


@pytest.mark.parametrize("cls", [Manager, OwnInit])
def test_from_checkpoint_keeps_the_options_and_takes_a_subclass_own_arguments(
    tmp_path: Path, cls: type[Manager]
) -> None:
    model = MLP()
    manager = Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=torch.nn.CrossEntropyLoss(),
        precision="bf16",
        accumulate_grad_batches=3,
        clip_grad_norm=0.5,
        clip_grad_value=2.0,
    )
    manager.fit(shuffled_loader(), epochs=1)
    path = tmp_path / "options.model"
    manager.save_checkpoint(path)
    extra = {"time_steps": 10} if cls is OwnInit else {}
    restored = cls.from_checkpoint(path, model=MLP(), loss_fn=torch.nn.CrossEntropyLoss(), **extra)
    assert type(restored) is cls and getattr(restored, "time_steps", 10) == 10
    assert (
        restored.precision,
        restored.accumulate_grad_batches,
        restored.clip_grad_norm,
        restored.clip_grad_value,
    ) == (
        "bf16",
        3,
        0.5,
        2.0,
    )
    assert restored.global_step == manager.global_step and restored.current_epoch == 1
    overridden = Manager.from_checkpoint(path, model=MLP(), accumulate_grad_batches=1)
    assert overridden.accumulate_grad_batches == 1 and overridden.precision == "bf16"


def test_single_file_checkpoints_never_import_torch_distributed_checkpoint(tmp_path: Path) -> None:
    """DCP (and DTensor, sympy behind it) costs about a second to import: only a sharded checkpoint needs it. A
    fresh process imports the package, saves, resumes and loads single files without it."""
    code = (
        "import sys, torch\n"
        "from torchmanager_core import Manager\n"
        "model = torch.nn.Linear(2, 2)\n"
        "manager = Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss())\n"
        "data = [(torch.randn(4, 2), torch.randint(0, 2, (4,)))]\n"
        f"manager.fit(data, epochs=1, show_verbose=False); manager.save_checkpoint({str(tmp_path / 'a.model')!r})\n"
        f"manager.load_checkpoint({str(tmp_path / 'a.model')!r})\n"
        f"manager.fit(data, epochs=2, show_verbose=False, resume_from={str(tmp_path / 'a.model')!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('torch.distributed.checkpoint')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
