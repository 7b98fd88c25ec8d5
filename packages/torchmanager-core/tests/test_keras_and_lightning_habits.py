"""What a Keras or Lightning user reaches for (issue 23, points 7 and 11): `fit(x, y)`, a misspelt keyword,
NumPy arrays, dict batches, `fast_dev_run`, `limit_train_batches`/`limit_val_batches`, `History.history`,
`model_summary()`. References: hand loops over the same batches, and the error text pinned."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from core_testkit import batches, blobs

from torchmanager_core import Callback, Manager


def linear() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def manager_of(model: torch.nn.Module) -> Manager:
    return Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss())


def hand(model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]], epochs: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(epochs):
        for x, y in data:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()


def test_keras_fit_x_y_gets_a_house_error_with_the_way_to_batches() -> None:
    x, y = blobs(16)
    with pytest.raises(
        TypeError,
        match=r"`fit` takes the training data as batches of `\(x, y\)`.*from_tensor_slices.*"
        r"Received: training_dataset of shape \(16, 4\), epochs of shape \(16,\)",
    ):
        manager_of(linear()).fit(x, y)
    with pytest.raises(TypeError, match=r"not the inputs and labels apart.*Received: .*epochs of shape \(16,\)"):
        manager_of(linear()).fit(x.numpy(), y.numpy())


@pytest.mark.parametrize("as_numpy", [False, True])
def test_keras_fit_x_y_with_epochs_and_test_x_y_get_the_way_to_batches(as_numpy: bool) -> None:
    """Keras's most common lines, `fit(x, y, epochs=3)` and `evaluate(x, y)` as `test(x, y)`: Python cannot bind
    them (the labels and `epochs=` both land in `epochs`), and gets the house's error instead of its own."""
    x, y = blobs(16)
    xs, ys = (x.numpy(), y.numpy()) if as_numpy else (x, y)
    manager = manager_of(linear())
    with pytest.raises(
        TypeError,
        match=r"^`fit` takes the training data as batches of `\(x, y\)`.*from_tensor_slices.*pass `epochs=` by name\. "
        r"Received: training_dataset of shape \(16, 4\), epochs of shape \(16,\)$",
    ):
        manager.fit(xs, ys, epochs=3)
    with pytest.raises(
        TypeError,
        match=r"^`test` takes the data as batches of `\(x, y\)`, not the inputs and labels apart.*DataLoader.*"
        r"Received: dataset of shape \(16, 4\), labels of shape \(16,\)$",
    ):
        manager.test(xs, ys)
    assert manager.current_epoch == 0 and manager.history == []  # nothing ran


def test_lightning_keywords_for_the_data_name_ours() -> None:
    x, y = blobs(16)
    manager = manager_of(linear())
    with pytest.raises(
        TypeError,
        match=r"^`fit` cannot take these arguments \(missing a required argument: 'training_dataset'\): call it as "
        r"fit\(training_dataset, epochs=\.\.\., val_dataset=\.\.\., callbacks_list=\.\.\., other options by name\), "
        r"the data first and by position\. Here `train_dataloaders` is `training_dataset`; `max_epochs` is `epochs`\. "
        r"Received: 0 positional arguments, train_dataloaders=\.\.\., max_epochs=\.\.\.$",
    ):
        manager.fit(train_dataloaders=batches(x, y, 8), max_epochs=2)
    with pytest.raises(TypeError, match=r"^`test` cannot take.*Here `dataloaders` is `dataset`\. Received: 0 posit"):
        manager.test(dataloaders=batches(x, y, 8))
    with pytest.raises(TypeError, match=r"^`predict` cannot take.*\(too many positional arguments\).*Received: 3 pos"):
        manager.predict(batches(x, y, 8), 1, 2)


def test_help_shows_the_real_signatures() -> None:
    assert list(inspect.signature(Manager.fit).parameters)[:5] == [
        "self",
        "training_dataset",
        "epochs",
        "val_dataset",
        "callbacks_list",
    ]
    assert "dataset" in inspect.signature(Manager.test).parameters
    assert "Train the model" in (Manager.fit.__doc__ or "")


@pytest.mark.parametrize(
    ("typo", "meant"), [("epoch", "epochs"), ("val_data", "val_dataset"), ("callbacks", "callbacks_list")]
)
def test_a_misspelt_fit_keyword_names_the_one_meant(typo: str, meant: str) -> None:
    x, y = blobs(16)
    with pytest.raises(
        TypeError, match=rf"`fit` got keyword arguments it does not take: {typo}\. Did you mean `{meant}`\?"
    ):
        manager_of(linear()).fit(batches(x, y, 8), epochs=1, **{typo: 3})


@pytest.mark.parametrize("typo", ["epoch", "max_epochs", "num_epochs", "n_epochs"])
def test_a_misspelt_epochs_given_alone_is_named_not_reported_as_no_epochs(typo: str) -> None:
    """The user's line has no `epochs=` besides the typo (Keras's `epoch=3`, Lightning's `max_epochs=3`): the
    message names the typo, not "give exactly one of `epochs` and `iterations`" with epochs=None."""
    x, y = blobs(16)
    with pytest.raises(
        TypeError,
        match=rf"^`fit` got keyword arguments it does not take: {typo}\. Did you mean `epochs`\? Received: {typo}=3$",
    ):
        manager_of(linear()).fit(batches(x, y, 8), **{typo: 3})


def test_numpy_float64_batches_train_as_float32_tensors() -> None:
    x, y = blobs(32)
    data = batches(x, y, 8)
    arrays = [(xb.double().numpy(), yb.numpy()) for xb, yb in data]  # NumPy's default float64
    model = linear()
    manager_of(model).fit(arrays, epochs=2)
    reference = linear()
    hand(reference, data, 2)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_dict_batches_take_their_first_two_values() -> None:
    x, y = blobs(32)
    data = batches(x, y, 8)
    model = linear()
    manager = manager_of(model)
    manager.fit([{"image": xb, "label": yb} for xb, yb in data], epochs=2)
    reference = linear()
    hand(reference, data, 2)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)


class Count(Callback):
    def __init__(self) -> None:
        self.batches, self.validations, self.epochs = 0, 0, 0

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        self.batches += 1

    def on_validation_end(self, epoch: int, val_summary: Any) -> None:
        self.validations += 1

    def on_epoch_end(self, epoch: int, summary: Any = None, val_summary: Any = None) -> None:
        self.epochs += 1

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        raise AssertionError("fast_dev_run writes no checkpoint")


@pytest.mark.parametrize("n", [True, 2])
def test_fast_dev_run_trains_and_validates_n_batches_once_and_saves_nothing(n: bool | int, tmp_path: Path) -> None:
    x, y = blobs(64)
    data = batches(x, y, 8)
    model = linear()
    manager = manager_of(model)
    count = Count()

    class Save(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            self.manager.save_checkpoint(tmp_path / "never.model")

    _, summary = manager.fit(
        data, epochs=10, val_dataset=data, callbacks_list=[count, Save()], fast_dev_run=n, return_summary=True
    )
    batches_tried = 1 if n is True else int(n)
    assert (count.batches, count.epochs, manager.global_step) == (batches_tried, 1, batches_tried)
    assert not (tmp_path / "never.model").exists()
    reference = linear()
    hand(reference, data[:batches_tried], 1)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    with torch.no_grad():  # validation on its first n batches only
        xs, ys = torch.cat([b[0] for b in data[:batches_tried]]), torch.cat([b[1] for b in data[:batches_tried]])
        assert summary["val_loss"] == pytest.approx(F.cross_entropy(model(xs), ys).item(), rel=1e-5)


def test_limit_train_and_val_batches_end_each_epoch_at_the_limit() -> None:
    x, y = blobs(64)
    data = batches(x, y, 8)  # 8 batches
    model = linear()
    manager = manager_of(model)
    count = Count()
    _, summary = manager.fit(
        data,
        epochs=3,
        val_dataset=data,
        callbacks_list=[count],
        limit_train_batches=3,
        limit_val_batches=2,
        return_summary=True,
    )
    assert (count.batches, count.epochs, count.validations, manager.global_step) == (9, 3, 3, 9)
    reference = linear()
    hand(reference, data[:3], 3)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    with torch.no_grad():
        xs, ys = torch.cat([b[0] for b in data[:2]]), torch.cat([b[1] for b in data[:2]])
        assert summary["val_loss"] == pytest.approx(F.cross_entropy(model(xs), ys).item(), rel=1e-5)
    with pytest.raises(
        ValueError, match=r"`limit_train_batches` must be a positive int\. Received: limit_train_batches=0"
    ):
        manager.fit(data, epochs=4, limit_train_batches=0)


def test_history_reads_as_keras_history() -> None:
    x, y = blobs(32)
    manager = manager_of(linear())
    manager.fit(batches(x, y, 8), epochs=3, val_dataset=batches(x, y, 16))
    lists = manager.history.history
    assert lists["loss"] == [epoch["loss"] for epoch in manager.history] and len(lists["val_loss"]) == 3
    # Keras's `history["loss"]` on the manager's list of epochs: the way to both readings, not list's TypeError
    with pytest.raises(
        TypeError,
        match=r"`manager\.history` is a list of each epoch's summary: `manager\.history\[-1\]\['loss'\]` is the last "
        r"epoch's value, `manager\.history\.history\['loss'\]` the list of every epoch's \(Keras's `History\.history`\)\. "
        r"Received: key='loss'$",
    ):
        manager.history["loss"]  # type: ignore[call-overload]
    assert manager.history[-1] == {name: values[-1] for name, values in lists.items()}  # ints and slices as a list's
    assert manager.history[1:] == list(manager.history)[1:]


def test_model_summary_lists_layers_shapes_and_parameters() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    table = manager_of(model).model_summary(torch.randn(2, 4))
    assert "[2, 8]" in table and "[2, 3]" in table and "67" in table  # 4*8+8 + 8*3+3 parameters


def test_numpy_in_evaluation_too() -> None:
    x, y = blobs(16)
    model = linear()
    result = manager_of(model).test([(x.numpy().astype(np.float64), y.numpy())])
    with torch.no_grad():
        assert result["loss"] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("evaluate", "`test(dataset)` evaluates"),
        ("validate", "`test(val_dataset)` evaluates"),
        ("compile", "`Manager(model, optimizer, loss_fn, metrics)`"),
        ("train_on_batch", "`train_step(x, y)` trains on one batch"),
        ("save_weights", "`save_checkpoint(path)`"),
    ],
)
def test_a_keras_or_lightning_method_says_what_does_its_work_here(name: str, hint: str) -> None:
    """Still Python's AttributeError (`hasattr` stays False), its text naming our counterpart."""
    manager = manager_of(linear())
    with pytest.raises(AttributeError) as raised:
        getattr(manager, name)
    assert str(raised.value).startswith(f"'Manager' object has no attribute '{name}'; ")
    assert hint in str(raised.value)
    assert raised.value.name == name and raised.value.obj is manager
    assert not hasattr(manager, name)


def test_any_other_missing_member_gets_pythons_own_error() -> None:
    manager = manager_of(linear())
    with pytest.raises(AttributeError, match=r"^'Manager' object has no attribute 'evaluat'$"):
        manager.evaluat  # noqa: B018


def test_an_attribute_error_inside_a_property_is_not_hidden() -> None:
    """Python calls `__getattr__` when a property's getter raises AttributeError: the getter's own error comes out."""

    class Broken(Manager):
        @property
        def summary_of_weights(self) -> str:
            return self.raw_model.no_such_layer  # type: ignore[no-any-return]

    model = linear()
    manager = Broken(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(AttributeError, match="'Linear' object has no attribute 'no_such_layer'"):
        manager.summary_of_weights  # noqa: B018
